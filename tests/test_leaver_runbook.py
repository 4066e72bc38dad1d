"""The shipped leaver-account runbook run end to end in the sandbox, in this process
(``start_run``), its gates approved and its manual tasks ticked as people would through
``tocsin.decisions``; then the fake tenant's own final state, and the order of the calls it
received. Two departures: one nobody used since (the leaver path), one used afterwards (the
compromise path: contained, then handed over to mailbox-compromise)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.engine_support import settings_journal
from tocsin.actions import ActionRegistry
from tocsin.decisions import submit
from tocsin.gates import WaitRequest
from tocsin.incident import Incident
from tocsin.integrations.microsoft.fake import SANDBOX_TENANT_ID, SANDBOX_USER, FakeMicrosoft
from tocsin.integrations.microsoft.fake_leaver import (
    LEAVER_APP,
    LEAVER_DEPARTED_DAYS_AGO,
    colleague_of,
    leaver_of,
)
from tocsin.running import start_run
from tocsin.settings import load_settings
from tocsin.statuses import ACTIVE_RUN, StepStatus
from tocsin.validation import load_runbook

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = SANDBOX_USER.split("@")[-1]
LEAVER = leaver_of(DOMAIN)
COLLEAGUE = colleague_of(DOMAIN)
GATES = ("approve_closing_account", "approve_device_retirement")
RESPONDER = "U0SUPPORT"  # one of the runbook's operators (responders)
INVOKE = f"/adminapi/beta/{SANDBOX_TENANT_ID}/InvokeCommand"


@dataclass
class People:
    """Who decides each waiting step, from a thread, until the incident's runs end."""

    ticket: str
    fake: FakeMicrosoft | None = None
    decided: list[str] = field(default_factory=list)
    prompts: dict[str, str] = field(default_factory=dict)
    ended: threading.Event = field(default_factory=threading.Event)

    def __call__(self, sandbox: Any) -> None:
        self.fake = sandbox.fake("microsoft", FakeMicrosoft)
        journal = settings_journal()
        deadline = time.monotonic() + 400
        try:
            while time.monotonic() < deadline:
                runs = journal.runs_of(self.ticket)
                if runs and all(run.status not in ACTIVE_RUN for run in runs):
                    return
                for run in runs:
                    for record in journal.steps_of(run.id):
                        if record.status != StepStatus.WAITING or not record.request:
                            continue
                        if record.step_id in self.decided:
                            continue
                        self.decide(journal, record.step_id, WaitRequest.from_data(record.request))
                time.sleep(0.3)  # bounded by the deadline above
        finally:
            journal.close()
            self.ended.set()

    def decide(self, journal: Any, step_id: str, request: WaitRequest) -> None:
        self.prompts[step_id] = request.prompt
        if request.kind == "approval":
            actor = next(p for p in request.approvers if p != request.requester)
            kind, checklist = "approve", None
        else:
            actor, kind = RESPONDER, "done"
            checklist = list(range(1, len(request.checklist) + 1))
        submit(
            journal,
            incident=self.ticket,
            step_id=step_id,
            kind=kind,
            actor=actor,
            channel="cli",
            comment="end-to-end test",
            checklist=checklist,
            wait=False,
        )
        self.decided.append(step_id)


def run_leaver(ticket: str, departed_days_ago: int) -> tuple[dict[str, Any], People]:
    settings = load_settings()
    loaded = load_runbook(ROOT / "runbooks" / "leaver-account.yaml", ActionRegistry.discover())
    departure = (datetime.now(UTC) - timedelta(days=departed_days_ago)).date().isoformat()
    people = People(ticket)
    lines: list[str] = []
    outcome = start_run(
        loaded,
        Incident(ticket=ticket, requested_by="U0REQUESTER"),
        {
            "user": LEAVER,
            "departure_date": departure,
            "colleague": COLLEAGUE,
            "colleague_send_as": "true",
        },
        settings=settings,
        printer=lines.append,
        on_started=people,
    )
    assert people.ended.wait(60), "the deciding thread did not end"
    assert outcome["status"] == "succeeded", (outcome, lines[-20:])
    assert people.fake is not None
    return outcome, people


def step_records(ticket: str) -> dict[str, Any]:
    journal = settings_journal()
    try:
        (run,) = journal.runs_of(ticket)
        return {record.step_id: record for record in journal.steps_of(run.id)}
    finally:
        journal.close()


def calls(fake: FakeMicrosoft) -> list[str]:
    """What the tenant was asked, in order: Graph as METHOD path, Exchange as its cmdlet."""
    seen = []
    for request in fake.requests:
        if request.path == INVOKE:
            seen.append(request.json()["CmdletInput"]["CmdletName"])
        elif request.path.startswith("/v1.0/"):
            seen.append(f"{request.method} {request.path.removeprefix('/v1.0')}")
    return seen


def first(seen: list[str], fragment: str) -> int:
    return next(i for i, call in enumerate(seen) if fragment in call)


def last(seen: list[str], fragment: str) -> int:
    return max(i for i, call in enumerate(seen) if fragment in call)


def test_the_leaver_is_closed_and_the_mailbox_handed_over_inside_the_office(
    prefect_server: str,
) -> None:
    ticket = "LV-1"
    _, people = run_leaver(ticket, LEAVER_DEPARTED_DAYS_AGO)
    fake = people.fake
    assert fake is not None
    assert people.decided == [
        "approve_closing_account",
        "approve_device_retirement",
        "close_other_accounts",
        "record_for_office",
    ]
    assert "No sign-in as" in people.prompts["approve_closing_account"]

    with fake.lock:
        erik = fake._user(LEAVER)
        alice = fake._user(SANDBOX_USER)
        erik_id, alice_id = erik["id"], alice["id"]
        # The account: blocked, signed out, only the password left, no consent, no role.
        assert erik["accountEnabled"] is False
        assert erik_id in fake.revocations
        assert [m["@odata.type"] for m in fake.tenant.methods[erik_id]] == [
            "#microsoft.graph.passwordAuthenticationMethod"
        ]
        assert not [g for g in fake.tenant.grants if g.get("principalId") == erik_id]
        assert not [a for a in fake.tenant.role_assignments if a["principalId"] == erik_id]
        # The mailbox: shared, the colleague holds FullAccess and SendAs, forwarding inside.
        mailbox = fake.tenant.mailboxes[erik_id]
        assert mailbox["RecipientTypeDetails"] == "SharedMailbox"
        assert mailbox["ForwardingSmtpAddress"] == f"smtp:{COLLEAGUE}"
        assert mailbox["DeliverToMailboxAndForward"] is True
        exchange = fake.tenant.exchange[erik_id]
        assert COLLEAGUE in {e["User"] for e in exchange["mailbox_permissions"]}
        assert COLLEAGUE in {e["Trustee"] for e in exchange["recipient_permissions"]}
        # The devices: each retired once.
        erik_devices = [d for d in fake.tenant.managed_devices if d["userId"] == erik_id]
        assert {d["managementState"] for d in erik_devices} == {"retirePending"}
        assert [len(d["deviceActionResults"]) for d in erik_devices] == [1, 1]
        # Nobody else was touched: the phished user and the colleague are as seeded.
        assert alice["accountEnabled"] is True and len(fake.tenant.methods[alice_id]) == 4
        assert {
            d["managementState"] for d in fake.tenant.managed_devices if d["userId"] == alice_id
        } == {"managed"}
        assert fake.tenant.mailboxes[fake._user(COLLEAGUE)["id"]]["RecipientTypeDetails"] == (
            "UserMailbox"
        )

    # The order: activity read before anything changed, the block before the sign-out, the
    # sign-out before the clean-up, the devices last.
    seen = calls(fake)
    block = first(seen, f"PATCH /users/{erik_id}")
    revoke = first(seen, "/revokeSignInSessions")
    assert last(seen, "GET /auditLogs/signIns") < block < revoke
    changes = [i for i, c in enumerate(seen) if c.startswith(("DELETE ", "Add-", "Set-"))]
    retires = [i for i, c in enumerate(seen) if c.endswith("/retire")]
    assert changes and min(changes) > revoke
    assert first(seen, "Get-AcceptedDomain") < last(seen, "Set-Mailbox")
    assert max(changes) < min(retires)
    assert len([c for c in seen if c.endswith("/retire")]) == 2

    steps = step_records(ticket)
    assert steps["start_mailbox_compromise"].status == "skipped"
    assert steps["activity_since_departure"].outputs["successes"] == 0
    assert steps["grant_colleague_access"].outputs["granted"] == ["FullAccess", "SendAs"]
    assert steps["approve_closing_account"].status == "approved"
    assert steps["block_sign_in"].started_at >= steps["approve_closing_account"].finished_at
    assert steps["retire_devices"].started_at >= steps["approve_device_retirement"].finished_at
    # What the office keeps: the record names what went and where the mail is.
    record = people.prompts["record_for_office"]
    assert "2 sign-in method(s), 1 app consent(s) and 1 admin role(s) were removed" in record
    assert "SharedMailbox" in record and f"{COLLEAGUE} holds FullAccess and SendAs" in record
    assert f"forwarded to {COLLEAGUE}" in record and "ERIK-LT01, Erik's iPhone" in record
    assert steps["record_for_office"].status == "done"
    assert LEAVER_APP in {g["app"] for g in steps["revoke_app_consents"].outputs["revoked"]}


def test_a_sign_in_after_the_departure_contains_the_account_and_hands_over_to_mailbox_compromise(
    prefect_server: str,
) -> None:
    ticket = "LV-2"
    # The seeded sign-ins were 16 and 15 days ago: after a departure 18 days ago.
    _, people = run_leaver(ticket, 18)
    fake = people.fake
    assert fake is not None
    assert people.decided == ["approve_closing_account", "start_mailbox_compromise"]
    assert "COMPROMISE SIGNAL: 2 successful sign-in(s)" in people.prompts["approve_closing_account"]
    assert "tocsin run mailbox-compromise" in people.prompts["start_mailbox_compromise"]

    with fake.lock:
        erik = fake._user(LEAVER)
        erik_id = erik["id"]
        assert erik["accountEnabled"] is False and erik_id in fake.revocations
        # Nothing else changed: mailbox-compromise reads the evidence before removing it.
        assert len(fake.tenant.methods[erik_id]) == 3
        assert [g for g in fake.tenant.grants if g.get("principalId") == erik_id]
        assert fake.tenant.mailboxes[erik_id]["RecipientTypeDetails"] == "UserMailbox"
        assert fake.tenant.mailboxes[erik_id]["ForwardingSmtpAddress"] is None
        assert {
            d["managementState"] for d in fake.tenant.managed_devices if d["userId"] == erik_id
        } == {"managed"}
    seen = calls(fake)
    assert not [c for c in seen if c.startswith("DELETE ") or c.endswith("/retire")]
    assert not [c for c in seen if c.startswith(("Add-", "Set-"))]

    steps = step_records(ticket)
    assert steps["activity_since_departure"].outputs["successes"] == 2
    for skipped in (
        "remove_auth_methods",
        "revoke_app_consents",
        "remove_admin_roles",
        "convert_to_shared",
        "grant_colleague_access",
        "forward_to_colleague",
        "approve_device_retirement",
        "retire_devices",
        "record_for_office",
    ):
        assert steps[skipped].status == "skipped", skipped
    assert steps["start_mailbox_compromise"].status == "done"
