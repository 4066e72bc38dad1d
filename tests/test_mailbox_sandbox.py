"""The mailbox-compromise runbook run in process on the sandbox, decided by the demo's
scripted people (clicks in the fake Slack through the real gateway, tasks ticked as
`tocsin done` would): what the fake Microsoft 365 tenant itself ends up with, the order
in which Microsoft received the calls, and the post-incident report of the run."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest

from tests.cli_runner import ROOT
from tests.sandbox_runs import journal_records, start_in_sandbox
from tocsin.action_registry import ActionRegistry
from tocsin.demo import scripted_approver
from tocsin.evidence import incident_report
from tocsin.incident import Incident
from tocsin.integration import demo_runs
from tocsin.integrations.microsoft.fake import (
    ATTACKER_FORWARD,
    ATTACKER_PHONE,
    KNOWN_GOOD_AUTHENTICATOR,
    SANDBOX_USER,
    FakeMicrosoft,
)
from tocsin.integrations.microsoft.fake_entra import (
    ATTACKER_GROUP,
    ATTACKER_ROLE,
    GENUINE_ROLE,
    ROLE_TEMPLATES,
    STAFF_GROUP,
)
from tocsin.integrations.microsoft.fake_exchange import ATTACKER_DELEGATE, GENUINE_DELEGATE_LOCAL
from tocsin.integrations.microsoft.fake_leaver import leaver_of
from tocsin.sandbox.assembly import Sandbox
from tocsin.sandbox.fake_service import ReceivedRequest
from tocsin.settings import load_settings
from tocsin.statuses import RunStatus, StepStatus
from tocsin.validation import load_runbook

pytestmark = pytest.mark.slow

RUNBOOK = ROOT / "runbooks" / "mailbox-compromise.yaml"
GATES = (
    "approve_containment",
    "approve_cleanup",
    "approve_restore_access",
    "approve_client_notice",
)
ASSISTANT = f"{GENUINE_DELEGATE_LOCAL}@{SANDBOX_USER.split('@')[-1]}"


@dataclass(frozen=True)
class SandboxRun:
    ticket: str
    result: dict[str, Any]
    microsoft: FakeMicrosoft
    """The run's fake tenant, read after the run (its state outlives the sandbox)."""
    steps: dict[str, str]
    """Each step's final status, from the journal."""
    deciders: dict[str, set[str]]
    """Who decided each gate and manual task, from the journal."""

    @property
    def requests(self) -> list[ReceivedRequest]:
        return self.microsoft.requests

    @property
    def user_id(self) -> str:
        return str(self.microsoft.user(SANDBOX_USER)["id"])


def run_mailbox_runbook(ticket: str, **changed_inputs: Any) -> SandboxRun:
    """The demo's mailbox-compromise run, with these inputs changed, until it ends."""
    settings = load_settings()
    loaded = load_runbook(RUNBOOK, ActionRegistry.discover())
    inputs = {**demo_runs()["mailbox-compromise"].inputs, **changed_inputs}
    fakes: list[FakeMicrosoft] = []
    said: list[str] = []

    def people_decide(sandbox: Sandbox | None) -> None:
        assert sandbox is not None  # the tests run in sandbox mode
        fakes.append(sandbox.fake("microsoft", FakeMicrosoft))
        scripted_approver(settings, ticket, said.append, sandbox)

    incident = Incident(ticket=ticket, title="Mailbox phished", requested_by="U0REQUESTER")
    result, _ = start_in_sandbox(loaded, incident, inputs, people_decide, lines=said)
    records, deciders = journal_records(ticket)
    steps = {step_id: str(record.status) for step_id, record in records.items()}
    assert fakes, "\n".join(said)
    return SandboxRun(ticket, result, fakes[0], steps, deciders)


@pytest.fixture(scope="module")
def cleaned(prefect_server: str) -> SandboxRun:
    return run_mailbox_runbook("MBX-1")


@pytest.fixture(scope="module")
def not_blocked(prefect_server: str) -> SandboxRun:
    return run_mailbox_runbook("MBX-2", disable_account=False)


# what Microsoft received, in order -----------------------------------------------------------


def _cmdlet(request: ReceivedRequest) -> str | None:
    if not request.path.endswith("/InvokeCommand"):
        return None
    return str(request.json()["CmdletInput"]["CmdletName"])


def _is_change(request: ReceivedRequest) -> bool:
    """A request that changes the tenant (a read never does)."""
    cmdlet = _cmdlet(request)
    if cmdlet is not None:
        return not cmdlet.startswith("Get-")
    if request.path.endswith("/token") or request.method == "GET":
        return False
    if request.path.endswith("/$batch"):
        return any(inner["method"] != "GET" for inner in request.json()["requests"])
    return True


def _index(requests: list[ReceivedRequest], wanted: str) -> int:
    """Where the first request whose method, path or cmdlet matches ``wanted`` is."""
    for number, request in enumerate(requests):
        said = f"{request.method} {request.path} {_cmdlet(request) or ''}"
        if re.search(wanted, said):
            return number
    raise AssertionError(f"Microsoft never received {wanted}")


def _account_patches(run: SandboxRun) -> list[tuple[int, bool]]:
    return [
        (number, request.json()["accountEnabled"])
        for number, request in enumerate(run.requests)
        if request.method == "PATCH" and "accountEnabled" in request.json()
    ]


def _roles_held(run: SandboxRun) -> list[str]:
    """The roles the user holds directly: active assignments and PIM eligibilities."""
    tenant = run.microsoft.tenant
    return [
        held["roleDefinitionId"]
        for held in (*tenant.role_assignments, *tenant.role_eligibilities)
        if held["principalId"] == run.user_id
    ]


EVIDENCE_READS = (
    r"^GET .*/messageRules ",
    r"Get-InboxRule$",
    r"Get-Mailbox$",
    r"^GET .*/authentication/methods ",
    r"^GET /v1.0/oauth2PermissionGrants ",
    r"^GET /v1.0/auditLogs/signIns ",
    r"^GET /v1.0/roleManagement/directory/roleAssignments ",
    r"Get-MailboxPermission$",
)


def test_the_scripted_people_decide_every_gate_and_task_and_the_run_succeeds(
    cleaned: SandboxRun,
) -> None:
    assert cleaned.result["status"] == RunStatus.SUCCEEDED, cleaned.result
    assert {step: cleaned.steps[step] for step in GATES} == dict.fromkeys(
        GATES, StepStatus.APPROVED
    )
    tasks = [step for step, status in cleaned.steps.items() if status == StepStatus.DONE]
    assert set(tasks) == {
        "review_sent_items",
        "contain_devices",
        "close_the_doors",
        "call_clients_who_paid",
        "check_gdpr_notification",
    }
    # warned by Tocsin itself: the colleagues (notify.staff), the clients (notify.clients)
    assert cleaned.steps["warn_colleagues"] == StepStatus.SUCCEEDED
    assert cleaned.steps["warn_clients"] == StepStatus.SUCCEEDED
    assert cleaned.steps["draft_gdpr_notification"] == StepStatus.SUCCEEDED
    assert all(cleaned.deciders[gate] == {"U0123ABCD1"} for gate in GATES)  # clicked in Slack
    assert all(cleaned.deciders[task] == {"U0ITPARTNER"} for task in tasks)
    others = {s for s, status in cleaned.steps.items() if s not in GATES and s not in tasks}
    assert {cleaned.steps[s] for s in others} == {StepStatus.SUCCEEDED}


def test_microsoft_saw_the_block_then_the_revoke_then_every_evidence_read_then_the_removals(
    cleaned: SandboxRun,
) -> None:
    requests = cleaned.requests
    (block, blocked), (restore, restored) = _account_patches(cleaned)
    assert (blocked, restored) == (False, True)
    revoke = _index(requests, r"^POST .*/revokeSignInSessions")
    changes = [n for n, request in enumerate(requests) if _is_change(request)]
    assert changes[:2] == [block, revoke]  # nothing changed before the block, then the revoke
    first_removal = changes[2]
    reads = [_index(requests, wanted) for wanted in EVIDENCE_READS]
    assert revoke < min(reads) and max(reads) < first_removal
    assert requests[first_removal].json()["passwordProfile"]["forceChangePasswordNextSignIn"]
    assert changes[-1] == restore  # let back in last, once everything else was done
    revokes = [n for n, r in enumerate(requests) if r.path.endswith("/revokeSignInSessions")]
    assert len(revokes) == 2 and block < revokes[1] < restore


def test_the_tenant_ends_clean_with_the_users_own_things_kept_and_sign_in_restored(
    cleaned: SandboxRun,
) -> None:
    fake, user_id = cleaned.microsoft, cleaned.user_id
    assert fake.user(SANDBOX_USER)["accountEnabled"] is True
    assert fake.revocations == [user_id, user_id]
    assert fake.confirmed_compromised == [user_id]
    methods = fake.methods_of(SANDBOX_USER)
    assert ATTACKER_PHONE not in repr(methods)
    assert [m.get("displayName") for m in methods] == [None, KNOWN_GOOD_AUTHENTICATOR]  # + password
    assert [rule["displayName"] for rule in fake.rules_of(SANDBOX_USER)] == ["Clients"]
    exchange = fake.tenant.exchange[user_id]
    assert [rule["Name"] for rule in exchange["hidden_rules"]] == ["Junk E-mail Rule"]
    assert fake.tenant.mailboxes[user_id]["ForwardingSmtpAddress"] is None
    assert ATTACKER_FORWARD not in repr(fake.tenant.mailboxes[user_id])
    apps = {g["clientId"] for g in fake.grants_of(SANDBOX_USER)}
    names = {sp["id"]: sp["displayName"] for sp in fake.tenant.service_principals}
    assert {names[app] for app in apps} == {"Zoom"}
    assert _roles_held(cleaned) == [ROLE_TEMPLATES[GENUINE_ROLE]]
    groups = {g["displayName"]: g["members"] for g in fake.tenant.groups}
    assert user_id not in groups[ATTACKER_GROUP] and user_id in groups[STAFF_GROUP]
    delegates = {p["User"] for p in exchange["mailbox_permissions"]}
    assert ASSISTANT in delegates and ATTACKER_DELEGATE not in delegates
    assert ATTACKER_DELEGATE not in {p["Trustee"] for p in exchange["recipient_permissions"]}
    assert (exchange["cas"]["PopEnabled"], exchange["cas"]["ImapEnabled"]) == (False, False)
    assert fake.tenant.mailboxes[user_id]["GrantSendOnBehalfTo"] == []
    inbox = exchange["folder_permissions"]["Inbox"]
    assert ATTACKER_DELEGATE not in {e["User"] for e in inbox}
    assert exchange["blocked_sender"] is None  # Exchange's spam restriction lifted
    # The colleague who left the office (also in the sandbox's tenant) was not touched.
    erik = fake.user(leaver_of(SANDBOX_USER.split("@")[-1]))
    assert erik["accountEnabled"] is True and len(fake.methods_of(erik["userPrincipalName"])) == 3


def test_without_disable_account_the_user_is_never_blocked_and_the_rest_is_done(
    not_blocked: SandboxRun,
) -> None:
    assert not_blocked.result["status"] == RunStatus.SUCCEEDED, not_blocked.result
    steps = not_blocked.steps
    assert (steps["block_sign_in"], steps["restore_access"]) == (StepStatus.SKIPPED,) * 2
    assert _account_patches(not_blocked) == []  # Microsoft was never asked to block or unblock
    fake, user_id = not_blocked.microsoft, not_blocked.user_id
    assert fake.user(SANDBOX_USER)["accountEnabled"] is True
    assert fake.revocations == [user_id, user_id]
    assert [rule["displayName"] for rule in fake.rules_of(SANDBOX_USER)] == ["Clients"]
    assert fake.tenant.mailboxes[user_id]["ForwardingSmtpAddress"] is None
    assert ATTACKER_PHONE not in repr(fake.methods_of(SANDBOX_USER))
    assert _roles_held(not_blocked) == [ROLE_TEMPLATES[GENUINE_ROLE]]
    first_change = next(n for n, r in enumerate(not_blocked.requests) if _is_change(r))
    assert not_blocked.requests[first_change].path.endswith("/revokeSignInSessions")


# the post-incident report -------------------------------------------------------------------


@pytest.fixture(scope="module")
def reports(cleaned: SandboxRun) -> dict[str, str]:
    settings = load_settings()
    return {
        fmt: incident_report(
            settings, cleaned.ticket, fmt=fmt, lang="en", with_prefect=False
        ).decode()
        for fmt in ("md", "html", "json")
    }


def _section(markdown: str, title: str) -> str:
    start = markdown.index(f"\n## {title}\n")
    end = markdown.find("\n## ", start + 1)
    return markdown[start:end]


def test_the_report_shows_the_evidence_read_before_the_clean_up(
    reports: dict[str, str],
) -> None:
    evidence = _section(reports["md"], "Evidence captured before any change")
    assert evidence.count("\n### Evidence: ") == 8
    assert f"- **forwarding_smtp_address**: {ATTACKER_FORWARD}" in evidence
    phone_row = next(line for line in evidence.splitlines() if ATTACKER_PHONE in line)
    assert phone_row.startswith("| ") and "| phone |" in phone_row  # a table row, not a dump
    assert ATTACKER_ROLE in evidence and "svc-archive@" in evidence
    assert "{" not in evidence and "}" not in evidence  # laid out, not a dict's repr
    assert "Evidence captured before any change" in reports["html"]
    assert f"<td>{ATTACKER_PHONE}</td>" in reports["html"]
    steps = {s["step_id"]: s for s in json.loads(reports["json"])["steps"]}
    assert steps["evidence_forwarding"]["evidence"] is True
    assert steps["remove_forwarding"]["evidence"] is False


def test_the_report_lists_what_tocsin_changed_step_by_step(reports: dict[str, str]) -> None:
    changes = _section(reports["md"], "What Tocsin changed")
    rows = {
        line.split(" | ")[0].rsplit("(", 1)[-1].rstrip(")"): line
        for line in changes.splitlines()
        if line.startswith("| ") and "(" in line
    }
    assert "evidence_forwarding" not in rows  # evidence steps are in their own section
    assert "changed: yes" in rows["remove_forwarding"]
    assert "revoked: 1 (Mail Backup Pro); kept: 1 (Zoom)" in rows["revoke_app_consents"]
    removed, kept = rows["remove_admin_roles"].split(" | ")[-1].split("; kept: ")
    assert removed.startswith("removed: ") and ATTACKER_ROLE in removed
    assert kept.startswith(f"1 ({GENUINE_ROLE})")
    assert ATTACKER_PHONE in rows["remove_attacker_auth_methods"]
    assert "account_enabled: no" in rows["block_sign_in"]
    assert "account_enabled: yes" in rows["restore_access"]


def test_the_temporary_password_is_in_no_report(
    cleaned: SandboxRun, reports: dict[str, str]
) -> None:
    (password,) = [
        request.json()["passwordProfile"]["password"]
        for request in cleaned.requests
        if request.method == "PATCH" and "passwordProfile" in request.json()
    ]
    assert len(password) >= 12
    for document in reports.values():
        assert password not in document
