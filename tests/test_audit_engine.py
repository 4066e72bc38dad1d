"""The audit trail of real runs: secrets redacted, parallel branches chained, signed and anchored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.engine_support import HEAD, settings_journal, start_flow
from tocsin.audit import AuditKey, Redactor
from tocsin.journal import Journal
from tocsin.sandbox import FakeSlack, SlackChannel
from tocsin.sandbox.slack_api import SANDBOX_BOT_TOKEN
from tocsin.settings import load_settings

pytestmark = pytest.mark.slow

PASSWORD = "Winter-2026-Temp!"

RUNBOOK = (
    HEAD.format(runbook_id="audited").replace(
        "inputs:\n",
        "inputs:\n  temporary_password: {type: string, secret: true, description: Given to the user}\n",
    )
    + """\
clocks:
  authority:
    title: Notify the data-protection authority
    deadline: 72h
    stopped_by: notify_authority
    source: GDPR art. 33(1)
steps:
  - id: reset_account
    title: Reset the account
    phase: contain
    action: test.issue_token
    with: {user: anne, password: "{{ inputs.temporary_password }}"}
  - id: tell_the_user
    title: Tell the user
    phase: communicate
    action: test.notify
    with: {recipients: [anne@office.example, it@office.example]}
  - id: paste_it
    title: A careless message
    action: log
    with:
      message: "anne's password is {{ inputs.temporary_password }}, token {{ steps.reset_account.outputs.token }}"
  - id: both_at_once
    title: Two branches
    parallel:
      - id: left
        title: Left branch
        phase: contain
        action: test.sleep
        with: {seconds: 0.3, file: "{{ inputs.state }}/branches"}
      - id: right
        title: Right branch
        phase: eradicate
        action: test.sleep
        with: {seconds: 0.3, file: "{{ inputs.state }}/branches"}
  - id: approve_notification
    title: Approve the notification
    approval:
      approvers: leads
      prompt: Notify the authority?
      timeout: 10m
  - id: notify_authority
    title: Notify the authority
    phase: notify
    manual:
      instructions: File the notification.
      checklist: [Notification filed, Reference kept]
"""
)


@pytest.fixture(scope="module")
def audit_slack(prefect_server: str) -> Iterator[FakeSlack]:
    fake = FakeSlack(channels=[SlackChannel("C0AUDIT", "incident-audit")])
    with fake, pytest.MonkeyPatch.context() as patch:
        patch.setenv("TOCSIN_SLACK_API_URL", f"{fake.url}/api/")
        patch.setenv("TOCSIN_SECRET_SLACK_BOT_TOKEN", SANDBOX_BOT_TOKEN)
        patch.setenv("TOCSIN_AUDIT__ANCHOR_CHANNEL", "#incident-audit")
        patch.setenv("TOCSIN_AUDIT__CHECKPOINT_EVERY", "10")
        yield fake


@pytest.fixture(scope="module")
def finished_run(
    audit_slack: FakeSlack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Journal, str]]:
    journal = settings_journal()
    folder = tmp_path_factory.mktemp("audited")
    flow = start_flow(
        journal,
        RUNBOOK,
        folder,
        ticket="AUD-1",
        inputs={"temporary_password": PASSWORD},
    )
    flow.request("approve_notification")
    flow.decide("approve_notification", "approve", "U0LEAD1", comment="go ahead")
    flow.request("notify_authority")
    flow.decide("notify_authority", "done", "U0LEAD2", checklist=[1, 2])
    result = flow.finish()
    assert result["status"] == "succeeded", result
    yield journal, "AUD-1"
    journal.close()


def _of(journal: Journal, ticket: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in journal.events_of(ticket) if e["kind"] == kind]


def test_the_run_is_chained_signed_at_the_end_and_verifies(
    finished_run: tuple[Journal, str],
) -> None:
    journal, ticket = finished_run
    key = AuditKey.load(load_settings().audit_key_path)
    result = journal.verify(ticket, key.public_key)
    assert result.ok, result.problems
    assert result.unsigned_tail == 0  # end-of-run checkpoint, then one after the anchor
    reasons = [c.reason for c in journal.checkpoints_of(ticket)]
    assert "waiting" in reasons and "run.finished" in reasons and "anchored" in reasons
    assert reasons.count("periodic") == result.records // 10


def test_parallel_branches_write_to_one_unforked_chain(finished_run: tuple[Journal, str]) -> None:
    journal, ticket = finished_run
    records = journal.audit_records(ticket)
    branch_events = [r for r in records if r.step_id in ("left", "right")]
    assert {(r.kind, r.step_id) for r in branch_events} >= {
        ("step.started", "left"),
        ("step.started", "right"),
        ("step.succeeded", "left"),
        ("step.succeeded", "right"),
    }
    assert [r.seq for r in records] == list(range(1, len(records) + 1))


def test_no_secret_is_stored_in_clear_anywhere(finished_run: tuple[Journal, str]) -> None:
    journal, ticket = finished_run
    data_dir = load_settings().data_dir
    for path in data_dir.glob("journal.db*"):
        content = path.read_bytes()
        assert PASSWORD.encode() not in content, path
        assert b"SECRETTOKEN" not in content, path
    exported = json.dumps([r.export() for r in journal.audit_records(ticket)])
    assert PASSWORD not in exported and "SECRETTOKEN" not in exported

    token = Redactor(AuditKey.load(load_settings().audit_key_path)).fields({"p": PASSWORD}, ["p"])[
        "p"
    ]
    (started,) = [e for e in _of(journal, ticket, "run.started")]
    assert started["data"]["inputs"]["temporary_password"] == token
    reset = [e for e in _of(journal, ticket, "step.started") if e["step_id"] == "reset_account"]
    assert reset[0]["data"]["parameters"]["password"] == token  # equal secrets, equal tokens
    succeeded = [
        e for e in _of(journal, ticket, "step.succeeded") if e["step_id"] == "reset_account"
    ]
    assert succeeded[0]["data"]["outputs"]["token"].startswith("hmac-sha256:")
    pasted = [e for e in _of(journal, ticket, "step.started") if e["step_id"] == "paste_it"]
    assert (
        f"anne's password is {token}, token hmac-sha256:"
        in pasted[0]["data"]["parameters"]["message"]
    )
    run = journal.find_run(ticket, "audited")
    assert run is not None and run.inputs["temporary_password"] == token


def test_steps_decisions_messages_and_clocks_are_recorded(
    finished_run: tuple[Journal, str],
) -> None:
    journal, ticket = finished_run
    (started,) = _of(journal, ticket, "run.started")
    assert started["actor"] == "U0REQUESTER"
    assert started["data"]["via"] == "test" and started["data"]["title"] == "Engine test"
    facts = {e["step_id"]: e["data"] for e in _of(journal, ticket, "step.started")}
    assert facts["reset_account"]["phase"] == "contain"
    assert facts["reset_account"]["title"] == "Reset the account"
    (sent,) = _of(journal, ticket, "message.sent")
    assert sent["data"] == {"channel": "email", "action": "test.notify", "count": 2}
    received = _of(journal, ticket, "decision.received")
    assert [(e["actor"], e["data"]["channel"]) for e in received] == [
        ("U0LEAD1", "test"),
        ("U0LEAD2", "test"),
    ]
    assert received[0]["data"]["comment"] == "go ahead"
    (clock_started,) = _of(journal, ticket, "clock.started")
    assert clock_started["data"]["clock"] == "authority"
    assert clock_started["data"]["source"] == "GDPR art. 33(1)"
    (clock_stopped,) = _of(journal, ticket, "clock.stopped")
    assert clock_stopped["step_id"] == "notify_authority"
    assert clock_stopped["data"]["met"] is True


def test_the_end_of_run_head_is_published_to_slack(
    finished_run: tuple[Journal, str], audit_slack: FakeSlack
) -> None:
    journal, ticket = finished_run
    (anchored,) = _of(journal, ticket, "audit.checkpoint_anchored")
    head = anchored["data"]["head"]
    posted = [m for m in audit_slack.messages if head in (m.text or "")]
    assert len(posted) == 1 and posted[0].channel == "C0AUDIT"
    assert f"tocsin audit verify {ticket} --anchor sha256:{head}" in (posted[0].text or "")
    key = AuditKey.load(load_settings().audit_key_path)
    assert journal.verify(ticket, key.public_key, anchor=f"sha256:{head}").ok
