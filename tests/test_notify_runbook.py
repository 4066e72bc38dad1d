"""The third-party-breach runbook run in process on the sandbox, decided by scripted people:
the authority's draft is written from the run, the two-person gate shows the campaign's
preview, each person on the list receives one notice by the sandbox SMTP server's own count,
the staff is briefed in Slack and by e-mail, and no address or name reaches the audit
trail or the report."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest

from tests.cli_runner import ROOT
from tests.sandbox_runs import People, start_in_sandbox, step_records
from tocsin.action_registry import ActionRegistry
from tocsin.evidence import incident_report
from tocsin.incident import Incident
from tocsin.integrations.notify.fake_smtp import FakeSmtpServer, ReceivedMail
from tocsin.integrations.notify.sandbox import CLIENTS
from tocsin.integrations.slack.fake import FakeSlack
from tocsin.running import journal_for
from tocsin.sandbox.assembly import Sandbox
from tocsin.settings import load_settings
from tocsin.statuses import RunStatus, StepStatus
from tocsin.validation import load_runbook

pytestmark = pytest.mark.slow

TICKET = "TPB-1"
REFUSED_DOMAIN = "example.com"  # the sandbox list's English-speaking clients
REFUSED = [address for address, _, _ in CLIENTS if address.endswith("@" + REFUSED_DOMAIN)]
INPUTS: dict[str, Any] = {
    "third_party": "TiersPay",
    "what_happened": "On 1 December, attackers entered TiersPay's platform with a phished account.",
    "data_concerned": ["surname", "first name", "date of birth", "social security number"],
    "data_not_concerned": ["bank details", "passwords", "health data"],
    "people_count": 20,
    "people_file": "clients.csv",
    "country": "be",
}


@dataclass
class Run:
    result: dict[str, Any]
    smtp: FakeSmtpServer
    slack: FakeSlack
    people: People
    lines: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def run(prefect_server: str) -> Run:
    loaded = load_runbook(ROOT / "runbooks" / "third-party-breach.yaml", ActionRegistry.discover())
    people = People(TICKET)
    fakes: dict[str, Any] = {}
    lines: list[str] = []

    def decide(sandbox: Sandbox | None) -> None:
        assert sandbox is not None
        fakes["smtp"] = sandbox.fake("notify", FakeSmtpServer)
        fakes["slack"] = sandbox.fake("slack", FakeSlack)
        # The relay refuses one domain for good: its recipients are failures, by row.
        fakes["smtp"].refused_domains = frozenset({REFUSED_DOMAIN})
        # The fakes stop with the sandbox: keep what they received for the tests.
        people(sandbox)
        fakes["received"] = fakes["smtp"].messages()
        fakes["posts"] = list(fakes["slack"].messages)

    finished = threading.Event()

    def on_started(sandbox: Sandbox | None) -> None:
        try:
            decide(sandbox)
        finally:
            finished.set()

    incident = Incident(ticket=TICKET, title="Partner breach", requested_by="U0REQUESTER")
    result, _ = start_in_sandbox(loaded, incident, INPUTS, on_started, lines=lines)
    assert finished.wait(60), "\n".join(lines)
    outcome = Run(result, fakes["smtp"], fakes["slack"], people, lines)
    outcome.received = fakes["received"]  # type: ignore[attr-defined]
    outcome.posts = fakes["posts"]  # type: ignore[attr-defined]
    return outcome


def parsed(mail: ReceivedMail) -> tuple[str, str]:
    """(subject, plain-text part) of a received message."""
    message = message_from_bytes(mail.data, policy=policy.default)
    body = message.get_body(preferencelist=("plain",))
    assert isinstance(message, EmailMessage) and body is not None
    return str(message["subject"]), str(body.get_content())


def test_the_run_succeeds_with_every_step_done(run: Run) -> None:
    assert run.result["status"] == RunStatus.SUCCEEDED, "\n".join(run.lines)
    records = step_records(TICKET)
    for step in ("draft_authority_notification", "notify_people_concerned", "brief_staff"):
        assert records[step].status == StepStatus.SUCCEEDED


def test_each_person_on_the_list_received_one_notice_in_their_language(run: Run) -> None:
    received = run.received  # type: ignore[attr-defined]
    to_people = [m for m in received if m.recipients != ("staff@broker-office.example",)]
    counts: dict[str, int] = {}
    for message in to_people:
        for address in message.recipients:
            counts[address] = counts.get(address, 0) + 1
    assert counts == {address: 1 for address, _, _ in CLIENTS if address not in REFUSED}
    by_address = {m.recipients[0]: parsed(m) for m in to_people}
    subject, text = by_address["jan.peeters@example.be"]
    assert "persoonsgegevens" in subject.lower()
    assert "NIET betrokken" in text and "Let op voor valse berichten" in text
    assert "Beste Jan Peeters" in text
    assert by_address["marie.lambert@example.be"][0].startswith("Information importante")


def test_the_staff_was_briefed_in_slack_and_by_e_mail(run: Run) -> None:
    received = run.received  # type: ignore[attr-defined]
    briefings = [m for m in received if m.recipients == ("staff@broker-office.example",)]
    assert len(briefings) == 1
    assert "TiersPay" in parsed(briefings[0])[1]
    posts = [p for p in run.posts if p.channel == "C0STAFF"]  # type: ignore[attr-defined]
    assert len(posts) == 1 and "TiersPay" in (posts[0].text or "")


def test_the_gate_showed_the_count_and_a_sample_of_the_notice(run: Run) -> None:
    journal = journal_for(load_settings())
    try:
        (record,) = [
            r
            for r in journal.audit_records(TICKET)
            if r.kind == "approval.requested" and r.step_id == "approve_notifications"
        ]
    finally:
        journal.close()
    preview = record.data["guarded"]["notify_people_concerned"]["preview"]
    assert "20 recipient(s) (en 4 · fr 8 · nl 8)" in preview
    assert "--- fr ---" in preview and "Information importante" in preview
    assert "[nom du destinataire]" in preview
    assert "marie.lambert" not in preview and "Marie" not in preview


def test_no_address_or_name_of_a_person_reaches_the_trail_or_the_report(run: Run) -> None:
    journal = journal_for(load_settings())
    try:
        trail = json.dumps([r.export() for r in journal.audit_records(TICKET)], ensure_ascii=False)
    finally:
        journal.close()
    report = incident_report(load_settings(), TICKET, fmt="json", lang="en", with_prefect=False)
    for address, name, _ in CLIENTS:
        assert address not in trail and name not in trail
        assert address not in report.decode() and name not in report.decode()
    assert '"template": "breach-notice"' in trail
    assert '"template_version": "1"' in trail
    assert trail.count('"message": "sha256:') >= 20
    assert '"recipient": "hmac-sha256:' in trail


def test_refused_recipients_are_failures_by_row_in_the_outputs_and_the_report(run: Run) -> None:
    outputs = step_records(TICKET)["notify_people_concerned"].outputs
    rows = sorted(n for n, (address, _, _) in enumerate(CLIENTS, start=1) if address in REFUSED)
    assert outputs["sent"] == len(CLIENTS) - len(REFUSED) and outputs["failed"] == len(REFUSED)
    assert [failure["row"] for failure in outputs["failures"]] == rows
    assert all(f["reason"].startswith(f"row {f['row']}: 550") for f in outputs["failures"])
    assert all(f["recipient"].startswith("hmac-sha256:") for f in outputs["failures"])
    report = incident_report(load_settings(), TICKET, fmt="md", lang="en", with_prefect=False)
    text = report.decode()
    assert f"failures: {len(REFUSED)} (row {rows[0]}: 550" in text
    assert "deliveries:" not in text


def test_the_draft_for_the_authority_is_an_annex_of_the_report(run: Run) -> None:
    report = incident_report(
        load_settings(), TICKET, fmt="md", lang="en", with_prefect=False
    ).decode()
    assert "Annex" in report
    assert "social security number" in report
    assert "APD" in report or "GBA" in report
