"""The audit trail of real runs: secrets redacted, parallel branches chained, signed and anchored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli_runner import run_tocsin
from tests.engine_support import HEAD, settings_journal, start_flow
from tocsin.audit import AuditKey, Redactor
from tocsin.decisions import DecisionRefused
from tocsin.integrations.slack.fake import SANDBOX_BOT_TOKEN, FakeSlack, SlackChannel
from tocsin.journal import Journal
from tocsin.report import IncidentReport, build_report, render
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
  - id: flaky_lookup
    title: Look the account up
    action: test.flaky
    retry: {attempts: 3, backoff: 1s}
    with: {file: "{{ inputs.state }}/flaky", failures: 1}
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
  - id: record_the_account
    title: Record the account as found
    action: log
    evidence: true
    with: {message: "40 sign-ins seen"}
    outputs:
      sign_ins: "{{ 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN' | list }}"
      token: "{{ steps.reset_account.outputs.token }}"
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
      quorum: 2
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
        patch.setenv("TOCSIN_SLACK__API_URL", f"{fake.url}/api/")
        patch.setenv("TOCSIN_SECRET_SLACK_BOT_TOKEN", SANDBOX_BOT_TOKEN)
        patch.setenv("TOCSIN_SLACK__ANCHOR_CHANNEL", "#incident-audit")
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
    with pytest.raises(DecisionRefused):
        flow.decide("approve_notification", "approve", "U0INTRUDER")
    flow.decide("approve_notification", "approve", "U0LEAD3")
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
    signed = journal.checkpoints_of(ticket)
    reasons = [c.reason for c in signed]
    assert reasons[0] == "first" and "waiting" in reasons and reasons[-1] == "anchored"
    (finished,) = _of(journal, ticket, "run.finished")
    # Every 10th record is signed, unless another reason signed it first.
    periodic = {c.seq for c in signed if c.reason == "periodic"}
    assert periodic <= set(range(10, result.records + 1, 10))
    assert {c.seq for c in signed} >= set(range(10, result.records + 1, 10))
    signed_at_end = [c for c in signed if c.seq == finished["seq"]]
    assert [c.reason for c in signed_at_end] == ["run.finished"]  # with the record itself


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
        ("U0LEAD3", "test"),
        ("U0LEAD2", "test"),
    ]
    (refused,) = _of(journal, ticket, "decision.refused")
    assert refused["actor"] == "U0INTRUDER"
    assert refused["data"]["reason"] == "U0INTRUDER is not in approver group leads"
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


def test_verify_reads_back_the_head_the_run_published_in_slack(
    finished_run: tuple[Journal, str], audit_slack: FakeSlack
) -> None:
    journal, ticket = finished_run
    (anchored,) = _of(journal, ticket, "audit.checkpoint_anchored")
    result = run_tocsin("audit", "verify", ticket)  # the fake Slack's settings are in the env
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        f"published heads in Slack channel #incident-audit (C0AUDIT): 1, in the chain "
        f"(record {anchored['data']['seq']})" in result.stdout
    )
    assert audit_slack.calls_of("conversations.history")


# the post-incident report of this known run -----------------------------------------------------


@pytest.fixture(scope="module")
def report_of_run(finished_run: tuple[Journal, str]) -> IncidentReport:
    journal, ticket = finished_run
    key = AuditKey.load(load_settings().audit_key_path)
    records = journal.audit_records(ticket)
    verification = journal.verify(ticket, key.public_key)
    return build_report(ticket, records, verification)


def test_report_has_every_step_with_status_duration_and_attempts(
    finished_run: tuple[Journal, str], report_of_run: IncidentReport
) -> None:
    journal, ticket = finished_run
    run = journal.find_run(ticket, "audited")
    assert run is not None
    rows = {s.step_id: s for s in journal.steps_of(run.id)}
    by_id = {s.step_id: s for s in report_of_run.steps}
    expected = {
        "reset_account": "succeeded",
        "flaky_lookup": "succeeded",
        "tell_the_user": "succeeded",
        "paste_it": "succeeded",
        "left": "succeeded",
        "right": "succeeded",
        "approve_notification": "approved",
        "notify_authority": "done",
    }
    assert {k: by_id[k].status for k in expected} == expected
    assert by_id["flaky_lookup"].attempts == 2 and by_id["reset_account"].attempts == 1
    for step_id in ("reset_account", "flaky_lookup", "left", "right"):
        row = rows[step_id]
        assert row.started_at is not None and row.finished_at is not None
        journal_seconds = (row.finished_at - row.started_at).total_seconds()
        assert by_id[step_id].duration_seconds == pytest.approx(journal_seconds, abs=0.05)
    assert by_id["flaky_lookup"].duration_seconds >= 1.0  # one retry after a 1 s backoff
    assert by_id["left"].duration_seconds >= 0.3
    assert by_id["reset_account"].title == "Reset the account"
    assert by_id["reset_account"].phase == "contain"


def test_report_has_approvals_manual_tasks_messages_clocks_and_audit(
    finished_run: tuple[Journal, str], report_of_run: IncidentReport
) -> None:
    journal, ticket = finished_run
    report = report_of_run
    (approval,) = report.approvals
    assert approval.quorum == 2 and approval.outcome == "approved"
    assert [(d.actor, d.decision, d.channel) for d in approval.decisions] == [
        ("U0LEAD1", "approve", "test"),
        ("U0LEAD3", "approve", "test"),
    ]
    requested = _of(journal, ticket, "approval.requested")[0]["at"]
    approved = _of(journal, ticket, "step.approved")[0]["at"]
    assert approval.waited_seconds == pytest.approx((approved - requested).total_seconds())
    (refused,) = report.refused_decisions
    assert refused.actor == "U0INTRUDER" and "not in approver group" in refused.reason
    (task,) = report.manual_tasks
    assert task.completed_by == "U0LEAD2"
    assert task.ticked == ["Notification filed", "Reference kept"]
    assert report.communications == {"email": 2}
    (clock,) = report.clocks
    assert clock.status == "met" and clock.source == "GDPR art. 33(1)"
    contained = max(
        e["at"]
        for e in _of(journal, ticket, "step.succeeded")
        if e["step_id"] in ("reset_account", "left")
    )
    assert report.contained_at is not None
    assert report.contained_at.replace(tzinfo=None) == contained.replace(tzinfo=None)
    assert report.outcome == "succeeded" and report.severity == "low"
    assert (
        report.verification.ok
        and report.verification.head == journal.audit_records(ticket)[-1].hash
    )
    assert [a["head"] for a in report.anchors] == [
        _of(journal, ticket, "audit.checkpoint_anchored")[0]["data"]["head"]
    ]


def test_report_formats_say_the_same_in_english_and_french(report_of_run: IncidentReport) -> None:
    markdown = render(report_of_run, "md", "en").decode()
    for text in (
        "# Post-incident report — AUD-1",
        "| Reset the account (reset_account) | action | contain | succeeded |",
        "| Look the account up (flaky_lookup) | action | — | succeeded |",
        "## Lessons learned",
        f"sha256:{report_of_run.verification.head}",
        "| email | 2 |",
    ):
        assert text in markdown, text
    french = render(report_of_run, "md", "fr").decode()
    for text in (
        "# Rapport post-incident — AUD-1",
        "## Étapes",
        "| Reset the account (reset_account) | action | confiner | réussie |",
        "## Approbations",
        "approuvée",
        "## Délais réglementaires",
        "respecté",
        "## Retour d'expérience",
        "Délai de confinement",
    ):
        assert text in french, text
    assert "succeeded" not in french.split("## Chronologie")[0].replace("every step finished", "")
    as_json = json.loads(render(report_of_run, "json"))
    assert as_json["format"] == "tocsin-report/1"
    assert {s["step_id"]: s["attempts"] for s in as_json["steps"]}["flaky_lookup"] == 2
    assert as_json["audit"]["ok"] is True and as_json["lessons_learned"] == ""
    page = render(report_of_run, "html", "fr").decode()
    assert page.startswith("<!DOCTYPE html>") and '<html lang="fr">' in page
    assert "<script" not in page and "http://" not in page and "https://" not in page


def test_report_evidence_is_bounded_says_how_many_more_and_hides_secrets(
    report_of_run: IncidentReport,
) -> None:
    markdown = render(report_of_run, "md", "en").decode()
    start = markdown.index("\n## Evidence captured before any change\n")
    evidence = markdown[start : markdown.index("\n## ", start + 1)]
    assert "### Record the account as found (record_the_account)" in evidence
    assert "sign_ins (40):" in evidence
    listed = [line for line in evidence.splitlines() if line.startswith("- ") and "**" not in line]
    assert listed == [f"- {letter}" for letter in "abcdefghijklmnopqrstuvwxy"]
    assert "15 more not shown (the JSON report and the audit export have them all)." in evidence
    assert "- **token**: secret, not shown" in evidence and "hmac-sha256:" not in evidence
    changes = markdown[markdown.index("\n## What Tocsin changed\n") :]
    row = next(line for line in changes.splitlines() if "(reset_account)" in line)
    assert "token: secret, not shown" in row
    assert "record_the_account" not in changes.split("\n## ", 2)[1]  # evidence is not a change
    french = render(report_of_run, "md", "fr").decode()
    assert "## Preuves relevées avant toute modification" in french
    assert "15 de plus non affichés" in french and "## Ce que Tocsin a modifié" in french
    assert "token: secret, non affiché" in french


def test_report_command_writes_each_format(
    finished_run: tuple[Journal, str], tmp_path: Path
) -> None:
    for name in ("report.md", "report.json", "rapport.html"):
        result = run_tocsin(
            "report", "AUD-1", "-o", str(tmp_path / name), "--lang", "fr", "--offline"
        )
        assert result.returncode == 0, result.stderr
    assert "Rapport post-incident" in (tmp_path / "rapport.html").read_text()
    refused = run_tocsin("report", "AUD-1", "--format", "pdf")
    assert refused.returncode == 2 and "a PDF report needs a file" in refused.stderr
    unknown = run_tocsin("report", "AUD-404")
    assert unknown.returncode == 2 and "no audit records for incident AUD-404" in unknown.stderr


def _share_of_ink(image: Any) -> tuple[float, int]:
    """Share of pixels that are not near-white, and the number of distinct colours."""
    raw = image.convert("RGB").resize((300, 400)).tobytes()
    data = [tuple(raw[i : i + 3]) for i in range(0, len(raw), 3)]
    ink = sum(1 for r, g, b in data if min(r, g, b) < 200)
    return ink / len(data), len(set(data))


def test_html_report_renders_in_headless_chromium(
    report_of_run: IncidentReport, tmp_path: Path
) -> None:
    import shutil
    import subprocess

    from PIL import Image

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "chromium is needed: python3 dev.py test installs it (apt-get install chromium)"
    page = tmp_path / "report.html"
    page.write_bytes(render(report_of_run, "html", "fr"))
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,1600",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    with Image.open(shot) as image:
        assert image.size == (1200, 1600)
        ink, colours = _share_of_ink(image)
    assert ink > 0.03, f"the page looks blank ({ink:.1%} ink)"
    assert colours > 20


def test_pdf_report_converts_to_a_non_blank_page(report_of_run: IncidentReport) -> None:
    import pypdfium2

    document = pypdfium2.PdfDocument(render(report_of_run, "pdf", "en"))
    try:
        assert len(document) >= 1
        page = document[0]
        image = page.render(scale=1).to_pil()
        ink, colours = _share_of_ink(image)
        text = page.get_textpage().get_text_range()
    finally:
        document.close()
    assert ink > 0.03, f"the first page looks blank ({ink:.1%} ink)"
    assert colours > 5
    assert "AUD-1" in text and "Reset the account" in text
