"""The shipped leaver-account runbook run end to end in the sandbox, in this process
(``tests.sandbox_runs``: gates approved and manual tasks ticked through ``tocsin.decisions``);
then the fake tenant's own final state, and the order of the calls it received. Two
departures: one nobody used since (the leaver path), one used afterwards (the compromise
path: contained, then handed over to mailbox-compromise). And the hand-over's undo when a
later step fails."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.sandbox_runs import People, calls, run_in_sandbox, step_records
from tocsin.action_registry import ActionRegistry
from tocsin.integrations.microsoft.fake import SANDBOX_USER
from tocsin.integrations.microsoft.fake_leaver import (
    LEAVER_APP,
    LEAVER_DEPARTED_DAYS_AGO,
    colleague_of,
    leaver_of,
)
from tocsin.validation import load_runbook, load_runbook_bytes

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = SANDBOX_USER.split("@")[-1]
LEAVER = leaver_of(DOMAIN)
COLLEAGUE = colleague_of(DOMAIN)


def run_leaver(ticket: str, departed_days_ago: int) -> People:
    loaded = load_runbook(ROOT / "runbooks" / "leaver-account.yaml", ActionRegistry.discover())
    departure = (datetime.now(UTC) - timedelta(days=departed_days_ago)).date().isoformat()
    outcome, people, lines = run_in_sandbox(
        loaded,
        ticket,
        {
            "user": LEAVER,
            "departure_date": departure,
            "colleague": COLLEAGUE,
            "colleague_send_as": "true",
        },
    )
    assert outcome["status"] == "succeeded", (outcome, lines[-20:])
    return people


def first(seen: list[str], fragment: str) -> int:
    return next(i for i, call in enumerate(seen) if fragment in call)


def last(seen: list[str], fragment: str) -> int:
    return max(i for i, call in enumerate(seen) if fragment in call)


def test_the_leaver_is_closed_and_the_mailbox_handed_over_inside_the_office(
    prefect_server: str,
) -> None:
    ticket = "LV-1"
    people = run_leaver(ticket, LEAVER_DEPARTED_DAYS_AGO)
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
    people = run_leaver(ticket, 18)
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


UNDO_RUNBOOK = """\
runbook: leaver-undo
version: 1
title: Hand a leaver's mailbox over, then forward it outside
summary: The forwarding outside is refused, so the run aborts and undoes the hand-over
severity: low
sources: [{title: Test, document: test.txt}]
inputs:
  user: {type: email, description: The leaver}
  colleague: {type: email, description: The colleague}
steps:
  - id: convert_to_shared
    title: Convert to shared
    action: microsoft.convert_to_shared_mailbox
    with: {user: "{{ inputs.user }}"}
    undo:
      action: microsoft.convert_to_user_mailbox
      with: {user: "{{ inputs.user }}"}
  - id: grant_colleague_access
    title: Give the colleague access
    action: microsoft.grant_mailbox_access
    with: {user: "{{ inputs.user }}", colleague: "{{ inputs.colleague }}", send_as: true}
    undo:
      action: microsoft.remove_mailbox_access
      with:
        user: "{{ inputs.user }}"
        colleague: "{{ inputs.colleague }}"
        rights: "{{ steps.grant_colleague_access.outputs.granted }}"
  - id: forward_outside
    title: Forward outside the office
    action: microsoft.set_internal_forwarding
    with: {user: "{{ inputs.user }}", forward_to: erik.private@gmail.example}
"""


def test_a_refused_forwarding_outside_undoes_the_hand_over(prefect_server: str) -> None:
    ticket = "LV-3"
    loaded = load_runbook_bytes(
        UNDO_RUNBOOK.encode(), "leaver-undo.yaml", ActionRegistry.discover()
    )
    outcome, people, lines = run_in_sandbox(
        loaded, ticket, {"user": LEAVER, "colleague": COLLEAGUE}
    )
    assert outcome["status"] == "failed", outcome
    assert any("is outside the office" in line for line in lines), lines[-10:]
    fake = people.fake
    assert fake is not None
    with fake.lock:
        erik_id = fake._user(LEAVER)["id"]
        mailbox = fake.tenant.mailboxes[erik_id]
        assert mailbox["RecipientTypeDetails"] == "UserMailbox"
        assert mailbox["ForwardingSmtpAddress"] is None
        exchange = fake.tenant.exchange[erik_id]
        assert COLLEAGUE not in {e["User"] for e in exchange["mailbox_permissions"]}
        assert COLLEAGUE not in {e["Trustee"] for e in exchange["recipient_permissions"]}
    seen = calls(fake)
    assert seen.count("Add-MailboxPermission") == 1 and seen.count("Remove-MailboxPermission") == 1
    assert seen.count("Remove-RecipientPermission") == 1
    assert [c for c in seen if c == "Set-Mailbox"] == [
        "Set-Mailbox",
        "Set-Mailbox",
    ]  # there and back
    steps = step_records(ticket)
    assert steps["convert_to_shared"].status == "undone"
    assert steps["grant_colleague_access"].status == "undone"
    assert steps["forward_outside"].status == "failed"
