"""Attacks on the gates and on who may start, decide and read a run; each fails and is audited.

The module runs Tocsin in **live** mode (deny by default) against the fake Slack and Jira
on loopback: the gateway over HTTP with requests signed as Slack and Jira sign them, the
Prefect API over HTTP as an attacker reaching it would, and the CLI as a subprocess.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import gateway_support
from tests.cli_runner import run_tocsin
from tests.engine_support import HEAD, FlowInThread, start_flow, wait_until
from tests.gateway_support import (
    environment_variables,
    service_settings,
)
from tocsin.audit import AuditKey
from tocsin.decisions import DecisionRefused, deliver_decision, submit
from tocsin.gateway import GATEWAY_CHAIN, GatewayServer
from tocsin.integrations.jira.fake import SANDBOX_JIRA_WEBHOOK_SECRET, FakeJira
from tocsin.integrations.slack.fake import (
    DEFAULT_SCOPES,
    SANDBOX_BOT_TOKEN,
    FakeSlack,
    SlackChannel,
)
from tocsin.integrations.slack.simulated_user import SimulatedSlack
from tocsin.journal import Journal
from tocsin.settings import load_settings

# The gateway modules' shared fixtures (tests.gateway_support), each started once per module.
gateway = gateway_support.gateway
jira = gateway_support.jira
journal = gateway_support.journal
server = gateway_support.server
slack_user = gateway_support.slack_user

pytestmark = pytest.mark.slow

SIGNING_SECRET = "0f742231b10e8888abcd99yyyzzz85a5"
LEADS = ["U0LEAD1", "U0LEAD2", "U0LEAD3"]

GATED = (
    HEAD
    + """\
steps:
  - id: approve_cut
    title: Approve cutting the office off
    approval:
      approvers: leads
      quorum: {quorum}
      prompt: "Cut office {{{{ incident.ticket }}}} off?"
  - id: cut_off
    title: Cut the office off
    action: test.count
    with: {{file: "{{{{ inputs.state }}}}/cut_off"}}
"""
)

MANUAL = (
    HEAD
    + """\
steps:
  - id: call_office
    title: Call the office
    manual:
      instructions: Call the office manager
      checklist: [Manager reached, Staff told]
      assignee: {assignee}
"""
)

PLAIN = (
    HEAD
    + """\
steps:
  - id: first
    title: First step
    action: test.count_idempotent
    with: {{file: "{{{{ inputs.state }}}}/first"}}
"""
)

ACCESS = {
    "start": [
        {"runbooks": ["sec-plain"], "users": ["U0STARTER"]},
        {"runbooks": ["*"], "users": ["U0ADMIN"]},
        {"runbooks": ["sec-plain"], "usergroups": ["S0LEADS"], "channels": ["C0INCIDENTS"]},
        {"runbooks": ["*"], "jira_projects": ["SEC"], "jira_issue_types": ["Incident"]},
    ]
}


@pytest.fixture(scope="module")
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(
        channels=(SlackChannel("C0INCIDENTS", "support-incidents"),),
        usergroups={"S0LEADS": LEADS},
        tokens={SANDBOX_BOT_TOKEN: DEFAULT_SCOPES | {"users:read.email"}},
    ) as fake:
        yield fake


@pytest.fixture(scope="module")
def environment(
    prefect_server: str, slack: FakeSlack, jira: FakeJira, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """Live settings (environment variables) read by the runs, the gateway and the CLI."""
    folder = tmp_path_factory.mktemp("security-gates")
    values = {
        **service_settings(folder, signing_secret=SIGNING_SECRET, slack=slack, jira=jira),
        "TOCSIN_MODE": "live",
        "TOCSIN_JIRA__ATTACH_REPORT": "false",
        "TOCSIN_ACCESS__START": json.dumps(ACCESS["start"]),
    }
    runbooks = folder / "runbooks"
    (runbooks / "sec-plain.yaml").write_text(PLAIN.format(runbook_id="sec-plain"))
    (runbooks / "sec-secret-catalogue.yaml").write_text(
        PLAIN.format(runbook_id="sec-secret-catalogue")
    )
    (runbooks / "sec-gated.yaml").write_text(GATED.format(runbook_id="sec-gated", quorum=1))
    with environment_variables(values):
        AuditKey.generate(load_settings().audit_key_path)  # live runs need the signing key
        yield folder


def events(journal: Journal, chain: str) -> list[tuple[str, str | None, dict[str, Any]]]:
    return [(e["kind"], e["actor"], e["data"]) for e in journal.events_of(chain)]


def start(
    environment: Path,
    journal: Journal,
    text: str,
    ticket: str,
    requested_by: str = "U0REQUESTER",
) -> FlowInThread:
    folder = environment / ticket
    folder.mkdir()
    return start_flow(journal, text, folder, ticket=ticket, requested_by=requested_by)


# -- the Prefect API ---------------------------------------------------------------------


def test_forged_resume_through_the_prefect_api_cannot_approve_a_gate(
    environment: Path, journal: Journal, prefect_server: str
) -> None:
    flow = start(environment, journal, GATED.format(runbook_id="sec-forged", quorum=1), "SEC-1")
    flow.request("approve_cut")
    flow_run_id = wait_until(lambda: flow.run().flow_run_id, what="the flow run id")
    api = prefect_server.rstrip("/")

    def forge(run_input: dict[str, Any]) -> bool:
        answer = httpx.post(
            f"{api}/flow_runs/{flow_run_id}/resume", json={"run_input": run_input}, timeout=10
        )
        return answer.status_code == 201 and answer.json().get("status") == "ACCEPT"

    # an approver's name and no journalled decision: the Prefect-UI form path
    wait_until(
        lambda: forge({"step_id": "approve_cut", "decision": "approve", "actor": "U0LEAD1"}),
        what="the paused flow to take the forged input",
    )
    wait_until(
        lambda: any(
            kind == "decision.refused" and data.get("channel") == "prefect-api"
            for kind, _, data in events(journal, "SEC-1")
        ),
        what="the forged resume to be refused and audited",
    )
    # a made-up decision id: no such journalled decision
    wait_until(
        lambda: forge(
            {
                "step_id": "approve_cut",
                "decision": "approve",
                "actor": "U0LEAD2",
                "decision_id": 987654,
            }
        ),
        what="the paused flow to take the second forged input",
    )
    wait_until(
        lambda: (
            sum(
                1
                for kind, _, data in events(journal, "SEC-1")
                if kind == "decision.refused" and data.get("channel") == "prefect-api"
            )
            == 2
        ),
        what="the second forged resume to be refused",
    )
    assert flow.step("approve_cut").status == "waiting"  # type: ignore[union-attr]
    assert journal.decisions_of(flow.run().id, "approve_cut") == []
    assert not (environment / "SEC-1" / "cut_off").exists()
    flow.decide("approve_cut", "approve", "U0LEAD3")  # a real decision still goes through
    assert flow.finish()["status"] == "succeeded"
    applied = [d.actor for d in journal.decisions_of(flow.run().id) if d.status == "applied"]
    assert applied == ["U0LEAD3"]


# -- requesters --------------------------------------------------------------------------


def test_a_live_cli_run_without_a_slack_requester_is_refused(environment: Path) -> None:
    result = run_tocsin("run", "sec-plain", "--ticket", "SEC-2", "--set", "state=/tmp")
    assert result.returncode == 2, result.stderr
    assert "live runs need the requester's Slack user id: --as U" in result.stderr
    assert "Traceback" not in result.stderr
    as_login = run_tocsin("run", "sec-plain", "--ticket", "SEC-2", "--as", "alice")
    assert as_login.returncode == 2 and "Slack user id" in as_login.stderr


def test_a_requester_without_a_slack_identity_needs_one_more_approver(
    environment: Path, journal: Journal
) -> None:
    flow = start(
        environment,
        journal,
        GATED.format(runbook_id="sec-unknown-requester", quorum=1),
        "SEC-3",
        requested_by="jira:Jane Broker",
    )
    request = flow.request("approve_cut")
    assert request.quorum == 2 and request.requester_known is False
    flow.decide("approve_cut", "approve", "U0LEAD1")
    wait_until(
        lambda: any(
            d.status == "applied" for d in journal.decisions_of(flow.run().id, "approve_cut")
        ),
        what="the first approval to be applied",
    )
    assert flow.step("approve_cut").status == "waiting"  # type: ignore[union-attr]
    flow.decide("approve_cut", "approve", "U0LEAD2")
    assert flow.finish()["status"] == "succeeded"


def test_the_gate_message_says_when_the_requester_is_unknown() -> None:
    from tocsin.announce import GateState, RunFacts
    from tocsin.gates import WaitRequest
    from tocsin.integrations.slack.incident_thread import gate_blocks

    request = WaitRequest(
        kind="approval",
        prompt="Cut the office off?",
        deadline="2026-12-01T20:00:00+00:00",
        requester="jira:Jane Broker",
        gate_hash="0" * 64,
        approvers=LEADS,
        group="leads",
        quorum=2,
        requester_known=False,
    )
    run = RunFacts("SEC-3", 1, "sec-gated", "Gated", "1", "low", "jira:Jane Broker", "jira")
    text = json.dumps(gate_blocks(run, GateState("approve_cut", "Approve", request)))
    assert "quorum 2" in text
    assert "has no known Slack identity, so one more approval than usual is needed" in text


def test_a_jira_author_is_found_in_slack_and_cannot_approve_their_own_run(
    environment: Path, journal: Journal, server: GatewayServer, jira: FakeJira
) -> None:
    state = environment / "SEC-4"
    state.mkdir()
    jira.add_issue(
        "SEC-4",
        {
            "summary": "Office hacked",
            "issuetype": {"name": "Incident"},
            "customfield_10100": "sec-gated",
            "customfield_10101": f"state={state}",
        },
    )
    answer = jira.send_webhook(
        f"{server.url}/webhooks/jira",
        SANDBOX_JIRA_WEBHOOK_SECRET,
        "SEC-4",
        triggered_by="Lead One",
        triggered_by_email="u0lead1@sandbox.example.com",
    )
    assert answer.status_code == 202, answer.text
    run = wait_until(lambda: journal.find_run("SEC-4", "sec-gated"), what="the run")
    assert run.requested_by == "U0LEAD1"  # users.lookupByEmail, not the display name
    wait_until(
        lambda: (s := journal.step(run.id, "approve_cut")) is not None and s.status == "waiting",
        what="the gate",
    )
    with pytest.raises(DecisionRefused, match="started this run"):
        submit(
            journal,
            incident="SEC-4",
            step_id="approve_cut",
            kind="approve",
            actor="U0LEAD1",
            channel="test",
        )
    submit(
        journal,
        incident="SEC-4",
        step_id="approve_cut",
        kind="approve",
        actor="U0LEAD2",
        channel="test",
    )
    wait_until(
        lambda: (
            (r := journal.find_run("SEC-4", "sec-gated")) is not None and r.status == "succeeded"
        ),
        timeout=60,
        what="the run to succeed",
    )


# -- in-doubt steps and manual tasks ---------------------------------------------------------


def test_nobody_but_the_gates_approvers_can_rerun_an_interrupted_destructive_step(
    environment: Path, journal: Journal
) -> None:
    from tocsin.validation import load_runbook_bytes

    text = GATED.format(runbook_id="sec-in-doubt", quorum=1).replace(
        '      prompt: "Cut office',
        '      on_timeout: escalate\n      escalate_to: managers\n      prompt: "Cut office',
    )
    ticket = "SEC-5"
    # What a crash in the middle of cut_off leaves in the journal: gate approved, step running.
    from tocsin.action_registry import ActionRegistry

    loaded = load_runbook_bytes(
        text.encode(), "sec-in-doubt.yaml", ActionRegistry.discover(["tests.engine_actions"])
    )
    run, _ = journal.open_run(
        incident=ticket,
        runbook_id="sec-in-doubt",
        runbook_version="1",
        runbook_digest=loaded.digest,
        inputs={},
        requested_by="U0REQUESTER",
        requested_via="test",
    )
    journal.set_step(run.id, "approve_cut", status="approved", outputs={"decision": "approved"})
    journal.set_step(run.id, "cut_off", status="running")
    journal.set_run(run.id, status="running", heartbeat_at=None, owner="gone-host:1")
    flow = start(environment, journal, text, ticket)
    request = flow.request("cut_off")
    # the gate's group and its escalation group (who may have approved it) decide
    assert request.kind == "in_doubt" and request.group == "leads+managers"
    assert {"U0LEAD2", "U0BOSS1"} <= set(request.approvers)
    for actor, kind, reason in (
        ("U0REQUESTER", "approve", "cannot alone run 'cut_off' again"),
        ("U0STRANGER", "approve", "U0STRANGER is not in leads"),
        ("U0STRANGER", "done", "U0STRANGER is not in leads"),
    ):
        with pytest.raises(DecisionRefused, match=reason):
            flow.decide("cut_off", kind, actor)
    assert not (environment / ticket / "cut_off").exists()
    flow.decide("cut_off", "approve", "U0BOSS1")
    assert flow.finish()["status"] == "succeeded"
    refused = [d for k, _, d in events(journal, ticket) if k == "decision.refused"]
    assert len(refused) == 3


def test_a_stranger_cannot_tick_a_manual_task_of_a_group(
    environment: Path, journal: Journal
) -> None:
    flow = start(
        environment, journal, MANUAL.format(runbook_id="sec-manual", assignee="leads"), "SEC-6"
    )
    request = flow.request("call_office")
    assert request.group == "leads" and not request.open_to_anyone
    with pytest.raises(DecisionRefused, match="U0STRANGER is not in leads"):
        flow.decide("call_office", "done", "U0STRANGER", checklist=[1, 2])
    flow.decide("call_office", "done", "U0LEAD1", checklist=[1, 2])
    assert flow.finish()["status"] == "succeeded"


def test_live_a_manual_task_that_names_no_group_is_decided_by_nobody(
    environment: Path, journal: Journal
) -> None:
    nobody = MANUAL.format(runbook_id="sec-manual-nobody", assignee="it_partner").replace(
        "    manual:\n", "    timeout: 4s\n    manual:\n", 1
    )
    flow = start(environment, journal, nobody, "SEC-7")
    request = flow.request("call_office")
    assert not request.open_to_anyone and not request.approvers
    for kind, checklist in (("done", [1, 2]), ("reject", None)):
        with pytest.raises(DecisionRefused, match="nobody may decide 'call_office'"):
            flow.decide("call_office", kind, "U0LEAD1", checklist=checklist)
    assert flow.finish()["status"] == "failed"  # nobody marked it done before its timeout
    # the runbook's operators group decides it
    with_operators = MANUAL.format(runbook_id="sec-manual-ops", assignee="it_partner").replace(
        "steps:\n", "operators: managers\nsteps:\n", 1
    )
    ops = start(environment, journal, with_operators, "SEC-8")
    assert ops.request("call_office").group == "managers"
    ops.decide("call_office", "done", "U0BOSS1", checklist=[1])
    assert ops.finish()["status"] == "succeeded"


def test_a_manual_task_with_a_checklist_can_be_rejected_from_the_cli(
    environment: Path, journal: Journal, prefect_server: str
) -> None:
    flow = start(
        environment,
        journal,
        MANUAL.format(runbook_id="sec-manual-reject", assignee="leads"),
        "SEC-9",
    )
    flow.request("call_office")
    result = run_tocsin(
        "reject",
        "SEC-9",
        "call_office",
        "--as",
        "U0LEAD1",
        "--comment",
        "office unreachable",
        env={"TOCSIN_PREFECT_API_URL": prefect_server},
    )
    assert result.returncode == 0, result.stderr
    outcome = flow.finish()
    assert outcome["status"] == "failed"
    assert flow.step("call_office").status == "failed"  # type: ignore[union-attr]


# -- every decision gets an answer -------------------------------------------------------------


def test_approvals_past_the_quorum_are_refused_as_such_and_none_stays_pending(
    environment: Path, journal: Journal
) -> None:
    flow = start(environment, journal, GATED.format(runbook_id="sec-late", quorum=1), "SEC-10")
    flow.request("approve_cut")
    run = flow.run()
    # Three clicks journalled at once, before the flow applies any: one is the quorum.
    outcomes = [
        submit(
            journal,
            incident="SEC-10",
            step_id="approve_cut",
            kind="approve",
            actor=actor,
            channel="test",
            deliver=False,
        )
        for actor in LEADS
    ]
    for outcome in outcomes:
        deliver_decision(journal, run, outcome.decision, wait=False)
    assert flow.finish()["status"] == "succeeded"
    settled = journal.decisions_of(run.id, "approve_cut")
    assert [d.status for d in settled].count("applied") == 1
    late = [d for d in settled if d.status == "refused"]
    assert len(late) == 2 and all("came too late to count" in (d.reason or "") for d in late)
    assert journal.pending_decisions(run.id) == []
    audited = [d for k, _, d in events(journal, "SEC-10") if k == "decision.refused"]
    assert len(audited) == 2


# -- who may start and read --------------------------------------------------------------------


def test_a_stranger_cannot_start_a_runbook_from_slack_nor_learn_the_catalogue(
    environment: Path, journal: Journal, slack_user: SimulatedSlack
) -> None:
    state = environment / "SEC-11"
    state.mkdir()
    for text in (f"run sec-plain SEC-11 state={state}", "run sec-nope SEC-11"):
        answer = slack_user.slash_command("U0STRANGER", text).json()["text"]
        assert "you may not start" in answer
        assert "sec-secret-catalogue" not in answer and "sec-gated" not in answer
    assert journal.find_run("SEC-11", "sec-plain") is None
    refused = [
        (actor, data["runbook"])
        for kind, actor, data in events(journal, GATEWAY_CHAIN)
        if kind == "run.request_refused" and data.get("ticket") == "SEC-11"
    ]
    assert refused == [("U0STRANGER", "sec-plain"), ("U0STRANGER", "sec-nope")]
    assert not journal.has_chain("SEC-11")  # a stranger writes nothing into the incident
    verified = run_tocsin("audit", "verify", GATEWAY_CHAIN, "--offline")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_start_rules_name_runbooks_people_and_channels(
    environment: Path, journal: Journal, slack_user: SimulatedSlack
) -> None:
    state = environment / "SEC-12"
    state.mkdir()
    other = slack_user.slash_command("U0STARTER", "run sec-gated SEC-12").json()["text"]
    assert "you may not start 'sec-gated'" in other
    unknown = slack_user.slash_command("U0STARTER", "run sec-nope SEC-12").json()["text"]
    assert "you may not start 'sec-nope'" in unknown and "sec-plain" not in unknown
    # someone allowed every runbook hears which exist
    typo = slack_user.slash_command("U0ADMIN", "run sec-plian SEC-12").json()["text"]
    assert "no runbook with id 'sec-plian'" in typo
    assert "did you mean 'sec-plain'? runbooks you may start: " in typo
    assert "sec-gated, sec-plain, sec-secret-catalogue" in typo
    from_dm = slack_user.slash_command(
        "U0LEAD1", f"run sec-plain SEC-12 state={state}", channel_id="D0PRIVATE"
    ).json()["text"]
    assert "you may not start" in from_dm
    started = slack_user.slash_command(
        "U0LEAD1", f"run sec-plain SEC-12 state={state}", channel_id="C0INCIDENTS"
    ).json()["text"]
    assert "started for SEC-12" in started
    wait_until(
        lambda: (
            (r := journal.find_run("SEC-12", "sec-plain")) is not None and r.status == "succeeded"
        ),
        timeout=60,
        what="the run started from Slack",
    )
    hidden = slack_user.slash_command("U0STRANGER", "status SEC-12").json()["text"]
    assert "no incident SEC-12 that you may see" in hidden and "sec-plain" not in hidden
    shown = slack_user.slash_command("U0STARTER", "status SEC-12").json()["text"]
    assert "SEC-12  sec-plain v1  succeeded" in shown


def test_tickets_of_other_projects_or_types_start_nothing(
    environment: Path, journal: Journal, server: GatewayServer, jira: FakeJira
) -> None:
    url = f"{server.url}/webhooks/jira"
    jira.add_issue(
        "OPS-1",
        {"summary": "x", "issuetype": {"name": "Incident"}, "customfield_10100": "sec-plain"},
    )
    jira.add_issue(
        "SEC-13", {"summary": "x", "issuetype": {"name": "Task"}, "customfield_10100": "sec-plain"}
    )
    for key, reason in (
        ("OPS-1", "tickets of project 'OPS'"),
        ("SEC-13", "(type 'Task')"),
    ):
        answer = jira.send_webhook(url, SANDBOX_JIRA_WEBHOOK_SECRET, key)
        assert answer.status_code == 422 and reason in answer.json()["message"]
        assert journal.find_run(key, "sec-plain") is None
    refused = [
        data["ticket"]
        for kind, _, data in events(journal, GATEWAY_CHAIN)
        if kind == "run.request_refused" and data.get("via") == "jira"
    ]
    assert {"OPS-1", "SEC-13"} <= set(refused)
