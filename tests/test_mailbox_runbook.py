"""The shipped mailbox-compromise runbook run end to end in the sandbox, as a support team
runs it: `tocsin run`, the gates approved and the manual tasks ticked from the CLI, then
what the journal kept of the phished tenant, step by step."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.cli_runner import ROOT, TOCSIN, run_tocsin
from tests.engine_support import settings_journal
from tocsin.integrations.microsoft.fake import (
    ATTACKER_FORWARD,
    ATTACKER_PHONE,
    KNOWN_GOOD_AUTHENTICATOR,
    SANDBOX_USER,
)
from tocsin.integrations.microsoft.fake_entra import ATTACKER_ROLE, GENUINE_ROLE

pytestmark = pytest.mark.slow

TICKET = "MB-1"
GATES = (
    "approve_containment",
    "approve_cleanup",
    "approve_restore_access",
    "approve_client_notice",
)
LEAD = "U0123ABCD1"  # a sandbox member of the runbook's support_leads user group S0123ABCD
RESPONDER = "U0SUPPORT"  # one of the runbook's operators (responders)
ASSISTANT = "bob@broker-office.example"


def waiting_step(ticket: str) -> str | None:
    journal = settings_journal()
    try:
        for run in journal.runs_of(ticket):
            for step_id in STEP_IDS:
                record = journal.step(run.id, step_id)
                if record is not None and record.status == "waiting":
                    return step_id
        return None
    finally:
        journal.close()


def _step_ids() -> list[str]:
    from tocsin.yaml_source import load_yaml_file

    document, _ = load_yaml_file(ROOT / "runbooks" / "mailbox-compromise.yaml")
    return [str(step["id"]) for step in document["steps"]]


STEP_IDS = _step_ids()


def decide_until_done(process: subprocess.Popen[str], timeout: float) -> list[str]:
    """Approve each gate and tick each manual task as it comes, until the run ends."""
    decided: list[str] = []
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        assert time.monotonic() < deadline, f"the run did not end; decided {decided}"
        step = waiting_step(TICKET)
        if step is None or step in decided:
            time.sleep(0.5)  # bounded by the deadline above
            continue
        if step in GATES:
            result = run_tocsin("approve", TICKET, step, "--as", LEAD)
        else:
            result = run_tocsin("done", TICKET, step, "--as", RESPONDER, "--all")
        assert result.returncode == 0, result.stdout + result.stderr
        decided.append(step)
    return decided


def test_the_mailbox_runbook_cleans_the_phished_tenant_in_microsofts_order(
    prefect_server: str, tmp_path: Path
) -> None:
    process = subprocess.Popen(
        [
            str(TOCSIN),
            "run",
            "mailbox-compromise",
            "--ticket",
            TICKET,
            "--as",
            "U0REQUESTER",
            "--set",
            f"user={SANDBOX_USER}",
            "--set",
            "entra_id_p2=true",
            "--set",
            f"keep_auth_methods={KNOWN_GOOD_AUTHENTICATOR}",
            "--set",
            "keep_apps=Zoom",
            "--set",
            f"keep_admin_roles={GENUINE_ROLE}",
            "--set",
            f"keep_delegates={ASSISTANT}",
            "--set",
            "clients_file=clients.csv",  # the notify sandbox's list
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        decided = decide_until_done(process, timeout=400)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output
    assert "run succeeded" in output
    assert set(GATES) <= set(decided)
    assert {"review_sent_items", "call_clients_who_paid", "check_gdpr_notification"} <= set(decided)
    # the client campaign's progress, a line per tenth off a terminal
    assert "warn_clients: [####################] 100% 20/20 sent" in output

    journal = settings_journal()
    try:
        (run,) = journal.runs_of(TICKET)
        steps = {step_id: journal.step(run.id, step_id) for step_id in STEP_IDS}
    finally:
        journal.close()
    for step_id, record in steps.items():
        expected = "approved" if step_id in GATES else "done" if step_id in decided else "succeeded"
        assert record is not None and record.status == expected, (step_id, record)

    def outputs(step_id: str) -> dict[str, object]:
        record = steps[step_id]
        assert record is not None and record.outputs is not None
        return record.outputs

    def finished(step_id: str) -> float:
        record = steps[step_id]
        assert record is not None and record.finished_at is not None
        return record.finished_at.timestamp()

    def started(step_id: str) -> float:
        record = steps[step_id]
        assert record is not None and record.started_at is not None
        return record.started_at.timestamp()

    # Sign-in blocked, then sessions revoked after the block, then let back in at the end.
    assert outputs("block_sign_in")["changed"] is True
    assert outputs("block_sign_in")["account_enabled"] is False
    assert outputs("revoke_sessions")["revoked"] is True
    assert started("revoke_sessions") >= finished("block_sign_in")
    assert outputs("restore_access")["changed"] is True
    assert outputs("restore_access")["account_enabled"] is True
    assert started("restore_access") >= finished("mark_user_compromised")

    # The evidence was read before anything was removed, and names what the attacker added.
    first_removal = min(
        started(s)
        for s in (
            "reset_password",
            "remove_attacker_auth_methods",
            "remove_inbox_rules",
            "remove_hidden_inbox_rules",
            "remove_forwarding",
        )
    )
    evidence = [s for s in STEP_IDS if s.startswith("evidence_")]
    assert len(evidence) == 8
    assert all(finished(s) <= first_removal for s in evidence)
    assert outputs("evidence_forwarding")["forwards"] is True
    assert ATTACKER_FORWARD in repr(outputs("evidence_forwarding"))
    assert ATTACKER_PHONE.replace(" ", "") in repr(outputs("evidence_auth_methods")).replace(
        " ", ""
    )
    assert outputs("evidence_inbox_rules")["flagged"]
    assert outputs("evidence_hidden_inbox_rules")["flagged"]
    assert ATTACKER_ROLE in repr(outputs("evidence_admin_roles"))

    # What the attacker added is gone; what the user confirmed is theirs is kept.
    methods = outputs("remove_attacker_auth_methods")
    assert [m["label"] for m in methods["kept"]] == ["password", KNOWN_GOOD_AUTHENTICATOR]  # type: ignore[index, union-attr]
    assert ATTACKER_PHONE.replace(" ", "") in repr(methods["removed"]).replace(" ", "")
    assert outputs("remove_inbox_rules")["removed"]
    assert outputs("remove_hidden_inbox_rules")["removed"]
    assert outputs("remove_forwarding")["changed"] is True
    unblocked = outputs("unblock_sending")
    assert unblocked["changed"] is True and "Outbound spam" in str(unblocked["reason"])
    assert started("unblock_sending") >= finished("remove_forwarding")
    grants = outputs("revoke_app_consents")
    assert grants["revoked"] and "Zoom" in repr(grants["kept"])
    roles = outputs("remove_admin_roles")
    assert ATTACKER_ROLE in repr(roles["removed"]) and GENUINE_ROLE in repr(roles["kept"])
    delegates = outputs("remove_mailbox_delegates")
    assert "svc-archive" in repr(delegates["removed"]) and ASSISTANT in repr(delegates["kept"])
    assert set(outputs("disable_mail_protocols")["changed"]) >= {"pop", "imap"}  # type: ignore[call-overload]
    assert outputs("mark_user_compromised")["confirmed"] is True
