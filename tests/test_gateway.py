"""The gateway end to end: real runs on Prefect, the fake Slack and Jira, signed requests on loopback.

A simulated Slack user clicks the gate messages the run posted, with requests signed
exactly as Slack signs them; the gateway judges and journals each click, the flow applies
it and updates the message. Forged, replayed and unsigned requests are refused and
audited; Slack down never loses a gate; a Jira webhook starts a run that reports back.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import gateway_support
from tests.engine_support import HEAD, FlowInThread, start_flow, wait_until
from tests.gateway_support import (
    environment_variables,
    gateway_from_settings,
    service_settings,
)
from tocsin.gateway import GATEWAY_CHAIN, Gateway, GatewayServer
from tocsin.integrations.jira.fake import (
    SANDBOX_JIRA_WEBHOOK_SECRET,
    FakeJira,
)
from tocsin.integrations.slack.directory import MIN_REFRESH_SECONDS, UsergroupMembers
from tocsin.integrations.slack.fake import FakeSlack, PostedSlackMessage, SlackChannel
from tocsin.integrations.slack.inbound import SlackInbound
from tocsin.integrations.slack.simulated_user import SimulatedSlack
from tocsin.journal import Journal
from tocsin.settings import load_settings

# The gateway modules' shared fixtures (tests.gateway_support), each started once per module.
jira = gateway_support.jira
journal = gateway_support.journal
server = gateway_support.server
slack_user = gateway_support.slack_user

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
LEADS = ["U0LEAD1", "U0LEAD2", "U0LEAD3", "U0REQUESTER"]

GATED = (
    HEAD.replace(
        "  leads: {{users: [U0LEAD1, U0LEAD2, U0LEAD3]}}",
        "  leads: {{users: [U0LEAD9], usergroup: S0LEADS}}",
    )
    + """\
steps:
  - id: prepare
    title: Prepare the office
    action: test.count_idempotent
    with: {{file: "{{{{ inputs.state }}}}/prepare"}}
  - id: approve_cut
    title: Approve cutting the office off
    approval:
      approvers: leads
      quorum: {quorum}
      prompt: "Cut office {{{{ incident.ticket }}}} off the platform?"
      timeout: {timeout}
      on_timeout: {on_timeout}
  - id: cut_off
    title: Cut the office off
    action: test.count_idempotent
    with: {{file: "{{{{ inputs.state }}}}/cut_off"}}
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
  - id: second
    title: Second step
    action: test.count_idempotent
    with: {{file: "{{{{ inputs.state }}}}/second"}}
"""
)


def gated(runbook_id: str, quorum: int = 2, timeout: str = "1h", on_timeout: str = "abort") -> str:
    text = GATED.format(
        runbook_id=runbook_id, quorum=quorum, timeout=timeout, on_timeout=on_timeout
    )
    if on_timeout == "escalate":
        text = text.replace(
            "      on_timeout: escalate", "      on_timeout: escalate\n      escalate_to: managers"
        )
    return text


@pytest.fixture(scope="module")
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(
        channels=(SlackChannel("C0INCIDENTS", "support-incidents"),),
        usergroups={"S0LEADS": LEADS},
    ) as fake:
        yield fake


@pytest.fixture(scope="module")
def environment(
    prefect_server: str, slack: FakeSlack, jira: FakeJira, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """Settings (environment variables) every run and the gateway of this module read."""
    folder = tmp_path_factory.mktemp("gateway")
    values = {
        **service_settings(folder, signing_secret=SIGNING_SECRET, slack=slack, jira=jira),
        "TOCSIN_SLACK__INCIDENT_CHANNEL": "#support-incidents",
    }
    with environment_variables(values):
        yield folder


class SteppedClock:
    """``time.monotonic`` plus an offset a test moves forward, instead of sleeping."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture(scope="module")
def usergroup_clock() -> SteppedClock:
    """The clock of the gateway's user-group cache (Slack signatures keep the real time)."""
    return SteppedClock()


@pytest.fixture(scope="module")
def gateway(environment: Path, usergroup_clock: SteppedClock) -> Iterator[Gateway]:
    with gateway_from_settings() as service:
        # The Gateway's clock= reaches only the signature check; the cache takes its own.
        slack = service.people
        assert isinstance(slack, SlackInbound)
        cache = slack.members
        slack.members = UsergroupMembers(cache.lookup, cache.ttl_seconds, clock=usergroup_clock)
        yield service


def gate_message(slack: FakeSlack, ticket: str, step_id: str) -> PostedSlackMessage:
    """The gate message the run posted for ``step_id``, as Slack holds it now."""

    def find() -> PostedSlackMessage | None:
        for message in slack.messages:
            for block in message.blocks or []:
                if block.get("type") != "actions":
                    continue
                for element in block.get("elements", []):
                    value = json.loads(element.get("value") or "{}")
                    if value.get("ticket") == ticket and value.get("step") == step_id:
                        return message
        return None

    found = wait_until(find, what=f"the gate message of {ticket} {step_id}")
    assert isinstance(found, PostedSlackMessage)
    return found


def current(slack: FakeSlack, message: PostedSlackMessage) -> PostedSlackMessage:
    return slack.message(message.channel, message.ts)


def text_of(message: PostedSlackMessage) -> str:
    return json.dumps(message.blocks, ensure_ascii=False) + (message.text or "")


def kinds(journal: Journal, ticket: str) -> list[tuple[str, str | None, dict[str, Any]]]:
    return [(e["kind"], e["actor"], e["data"]) for e in journal.events_of(ticket)]


def start(
    environment: Path, journal: Journal, text: str, ticket: str, **inputs: Any
) -> FlowInThread:
    folder = environment / ticket
    folder.mkdir()
    return start_flow(journal, text, folder, ticket=ticket, inputs=inputs)


def test_a_quorum_of_two_approves_through_slack(
    environment: Path, journal: Journal, slack: FakeSlack, slack_user: SimulatedSlack
) -> None:
    flow = start(environment, journal, gated("slack-quorum"), "GW-1")
    message = gate_message(slack, "GW-1", "approve_cut")
    assert message.thread_ts is not None  # in the incident thread...
    header = next(m for m in slack.messages if m.ts == message.thread_ts)
    assert "Incident GW-1" in text_of(header)  # ...under the run's header
    shown = text_of(message)
    assert "Cut office GW-1 off the platform?" in shown
    assert "cut_off" in shown and "test.count_idempotent" in shown  # what the approval covers
    assert "test.count_idempotent(file=" in shown  # in the action's words, as the plan says
    assert "<!subteam^S0LEADS>" in shown and "quorum 2" in shown
    reject = next(
        e
        for b in message.blocks or []
        if b["type"] == "actions"
        for e in b["elements"]
        if e["action_id"] == "tocsin_reject"
    )
    assert reject["confirm"]["confirm"]["text"] == "Reject"  # Slack asks before rejecting

    # Answered at once (Slack's limit is 3 s): bench/gateway_load.py measures how fast.
    answer = slack_user.click("U0LEAD1", message, "tocsin_approve")
    assert answer.status_code == 200
    wait_until(
        lambda: "1 more approval needed" in text_of(current(slack, message)),
        what="the message to show the first approval",
    )
    assert "Approved by <@U0LEAD1>" in text_of(current(slack, message))

    # the same person again, a stranger, and the person who started the run: none count
    for clicker in ("U0LEAD1", "U0STRANGER", "U0REQUESTER"):
        assert slack_user.click(clicker, message, "tocsin_approve").status_code == 200
    wait_until(lambda: len(slack.ephemerals) >= 3, what="three private refusals")
    said = {e.user: e.text or "" for e in slack.ephemerals}
    assert "already approved" in said["U0LEAD1"]
    assert "not listed in approver group leads" in said["U0STRANGER"]
    assert "started this run and cannot decide" in said["U0REQUESTER"]
    assert flow.step("approve_cut") is not None
    assert flow.step("approve_cut").status == "waiting"  # type: ignore[union-attr]

    slack_user.click("U0LEAD2", current(slack, message), "tocsin_approve")
    assert flow.finish()["status"] == "succeeded"
    final = current(slack, message)
    assert "Approved by <@U0LEAD1>, <@U0LEAD2>" in text_of(final)
    assert not any(b["type"] == "actions" for b in final.blocks or [])  # buttons gone
    assert final.edits >= 2

    # a click on the old message after the gate closed is refused too
    slack_user.click("U0LEAD3", message, "tocsin_approve")
    stale = wait_until(
        lambda: [e for e in slack.ephemerals if e.user == "U0LEAD3"], what="a stale refusal"
    )
    assert "not waiting for a decision" in (stale[-1].text or "")

    events = kinds(journal, "GW-1")
    received = [(actor, data) for kind, actor, data in events if kind == "decision.received"]
    assert [actor for actor, _ in received] == ["U0LEAD1", "U0LEAD2"]
    assert all(data["channel"] == "slack" for _, data in received)
    assert received[0][1]["actor_details"]["name"] == "u0lead1"  # as Slack's users.info says
    refused = [
        (actor, data["reason"]) for kind, actor, data in events if kind == "decision.refused"
    ]
    assert [actor for actor, _ in refused] == ["U0LEAD1", "U0STRANGER", "U0REQUESTER", "U0LEAD3"]
    applied = [actor for kind, actor, _ in events if kind == "decision.applied"]
    assert applied == ["U0LEAD1", "U0LEAD2"]  # none applied twice

    thread = [m for m in slack.messages if m.thread_ts == header.ts]
    progress = "\n".join(m.text or "" for m in thread)
    assert "`prepare` Prepare the office: succeeded" in progress
    assert "`cut_off` Cut the office off: succeeded" in progress
    assert "Audit checkpoint for GW-1" in progress  # the head is anchored in the thread
    assert any(
        kind == "audit.checkpoint_anchored" and data["where"].startswith("slack:")
        for kind, _, data in events
    )


def test_a_new_member_of_the_user_group_can_approve_and_reject_stops_the_run(
    environment: Path,
    journal: Journal,
    slack: FakeSlack,
    slack_user: SimulatedSlack,
    usergroup_clock: SteppedClock,
) -> None:
    flow = start(environment, journal, gated("slack-reject", quorum=1), "GW-2")
    message = gate_message(slack, "GW-2", "approve_cut")
    assert "U0NEWLEAD" not in flow.request("approve_cut").approvers
    with slack.lock:
        slack.usergroups["S0LEADS"] = [*LEADS, "U0NEWLEAD"]  # joined after the gate opened
    try:
        # The gateway looks a user group up again at most every MIN_REFRESH_SECONDS (the
        # previous test made it look S0LEADS up a moment ago): let that much time pass.
        usergroup_clock.advance(MIN_REFRESH_SECONDS)
        slack_user.click("U0NEWLEAD", message, "tocsin_reject")
        result = flow.finish()
    finally:
        with slack.lock:
            slack.usergroups["S0LEADS"] = list(LEADS)
    assert result["status"] == "rejected"
    assert "Rejected by <@U0NEWLEAD>" in text_of(current(slack, message))
    received = [d for k, a, d in kinds(journal, "GW-2") if k == "decision.received"]
    assert received[0]["vouched_groups"] == ["S0LEADS"]  # Slack said so at the click


def test_forged_replayed_and_unsigned_requests_are_refused_and_audited(
    environment: Path, journal: Journal, slack: FakeSlack, slack_user: SimulatedSlack
) -> None:
    flow = start(environment, journal, gated("slack-forged", quorum=1), "GW-3")
    message = gate_message(slack, "GW-3", "approve_cut")
    forged = slack_user.click("U0LEAD1", message, "tocsin_approve", signing_secret="not-the-secret")
    old = slack_user.click(
        "U0LEAD1", message, "tocsin_approve", timestamp=int(time.time()) - 6 * 60
    )
    unsigned = slack_user.click("U0LEAD1", message, "tocsin_approve", signed=False)
    command = slack_user.slash_command("U0LEAD1", "status GW-3", signing_secret="nope")
    assert [r.status_code for r in (forged, old, unsigned, command)] == [401] * 4
    assert "bad signature" in forged.json()["error"]
    assert "stale request" in old.json()["error"]
    assert "unsigned request" in unsigned.json()["error"]

    # a genuine request sent twice: the copy is a replay
    body = b"command=%2Ftocsin&text=status+GW-3&user_id=U0LEAD1&channel_id=C0INCIDENTS"
    from tocsin.integrations.slack.simulated_user import sign_slack_request

    headers = {
        **sign_slack_request(SIGNING_SECRET, body),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    first = slack_user.post_raw("/slack/commands", body, headers)
    again = slack_user.post_raw("/slack/commands", body, headers)
    assert first.status_code == 200 and "approve_cut" in first.json()["text"]
    assert again.status_code == 401 and "replayed" in again.json()["error"]

    # refusals at the door are in the gateway's own chain, never in the incident's
    assert "gateway.request_refused" not in [k for k, _, _ in kinds(journal, "GW-3")]
    at_the_door = [e["data"] for e in journal.events_of(GATEWAY_CHAIN)]
    refused = [d for d in at_the_door if d["claimed"].get("ticket") == "GW-3"]
    reasons = [d["reason"].split(":")[0] for d in refused]
    assert reasons == ["bad signature", "stale request", "unsigned request"]
    assert refused[0]["claimed"] == {
        "user": "U0LEAD1",
        "decision": "approve",
        "ticket": "GW-3",
        "step_id": "approve_cut",
    }
    assert refused[0]["status"] == 401 and refused[0]["peer"] == "127.0.0.1"
    assert any(d["reason"].startswith("replayed request") for d in at_the_door)
    assert any(  # the slash command
        d["reason"].startswith("bad signature") and d["claimed"].get("command") for d in at_the_door
    )
    assert journal.decisions_of(flow.run().id) == []  # nothing was decided
    assert flow.step("approve_cut").status == "waiting"  # type: ignore[union-attr]
    slack_user.click("U0LEAD1", current(slack, message), "tocsin_approve")
    assert flow.finish()["status"] == "succeeded"

    from tocsin.evidence import incident_report

    report = json.loads(
        incident_report(load_settings(), "GW-3", fmt="json", lang="en", with_prefect=False)
    )
    shown = [(r["channel"], r["actor"], r["reason"][:13]) for r in report["refused_decisions"]]
    assert ("slack", "U0LEAD1", "bad signature") not in shown  # unauthenticated: not the report's


def test_slack_down_during_a_gate_loses_nothing(
    environment: Path, journal: Journal, slack: FakeSlack
) -> None:
    from tocsin.decisions import submit

    slack.fail_next(1000, 503)
    try:
        flow = start(environment, journal, gated("slack-down", quorum=1), "GW-4")
        request = flow.request("approve_cut")
        outcome = submit(  # Slack cannot list the user group: people listed by id decide
            journal,
            incident="GW-4",
            step_id="approve_cut",
            kind="approve",
            actor="U0LEAD9",
            channel="cli",
        )
        assert outcome.decision.status == "applied"
        assert flow.finish()["status"] == "succeeded"
    finally:
        slack.reset()
    assert request.approvers == ["U0LEAD9"]  # Slack was down when the gate opened
    failures = [
        d
        for k, _, d in kinds(journal, "GW-4")
        if k == "announce.failed" and d["announcer"] == "slack"
    ]
    assert {d["doing"] for d in failures} >= {"run_started", "gate_changed", "run_finished"}
    assert "Service Unavailable" in failures[0]["error"]


def test_a_decision_from_the_cli_also_updates_the_slack_message(
    environment: Path, journal: Journal, slack: FakeSlack
) -> None:
    flow = start(environment, journal, gated("slack-cli", quorum=1), "GW-10")
    message = gate_message(slack, "GW-10", "approve_cut")
    flow.decide("approve_cut", "approve", "U0LEAD9", comment="checked by phone")
    assert flow.finish()["status"] == "succeeded"
    final = text_of(current(slack, message))
    assert "Approved by <@U0LEAD9>" in final and "checked by phone" in final
    assert not any(b["type"] == "actions" for b in current(slack, message).blocks or [])


def test_slack_rate_limits_are_waited_out(
    environment: Path, journal: Journal, slack: FakeSlack, slack_user: SimulatedSlack
) -> None:
    slack.rate_limit_next(2)  # the thread's first message waits Retry-After, twice
    flow = start(environment, journal, gated("slack-429", quorum=1), "GW-5")
    message = gate_message(slack, "GW-5", "approve_cut")
    slack_user.click("U0LEAD3", message, "tocsin_approve")
    assert flow.finish()["status"] == "succeeded"
    events = kinds(journal, "GW-5")
    assert not [d for k, _, d in events if k == "announce.failed" and d["announcer"] == "slack"]
    assert len([r for r in slack.calls_of("chat.postMessage")]) >= 3


def test_a_gate_reminds_then_escalates(
    environment: Path, journal: Journal, slack: FakeSlack, slack_user: SimulatedSlack
) -> None:
    os.environ["TOCSIN_ANNOUNCE__REMIND_BEFORE"] = "0.5"
    try:
        flow = start(
            environment,
            journal,
            gated("slack-escalate", quorum=1, timeout="4s", on_timeout="escalate"),
            "GW-6",
        )
        message = gate_message(slack, "GW-6", "approve_cut")
        wait_until(
            lambda: any("still needs 1 decision" in (m.text or "") for m in slack.messages),
            what="a reminder in the thread",
        )
        wait_until(
            lambda: "managers" in text_of(current(slack, message)), what="the escalation shown"
        )
        assert "<@U0BOSS1>" in text_of(current(slack, message))
        assert any("is escalated" in (m.text or "") for m in slack.messages)
        slack_user.click("U0BOSS1", current(slack, message), "tocsin_approve")
        assert flow.finish()["status"] == "succeeded"
    finally:
        del os.environ["TOCSIN_ANNOUNCE__REMIND_BEFORE"]
    events = [k for k, _, _ in kinds(journal, "GW-6")]
    assert "approval.reminded" in events and "approval.escalated" in events


def test_slash_commands_start_and_query_runs_with_the_cli_errors(
    environment: Path, journal: Journal, slack: FakeSlack, slack_user: SimulatedSlack
) -> None:
    (environment / "runbooks" / "plain.yaml").write_text(PLAIN.format(runbook_id="plain"))
    state = environment / "GW-7"
    state.mkdir()
    unknown = slack_user.slash_command("U0SUPPORT", "run plian GW-7")
    assert "no runbook with id 'plian'" in unknown.json()["text"]
    assert "did you mean 'plain'?" in unknown.json()["text"]
    wrong = slack_user.slash_command("U0SUPPORT", f"run plain GW-7 stat={state}")
    assert "unknown input 'stat' (did you mean 'state'?)" in wrong.json()["text"]
    bad_ticket = slack_user.slash_command("U0SUPPORT", "run plain not-a-ticket")
    assert "is not a ticket key" in bad_ticket.json()["text"]
    assert "Usage" in slack_user.slash_command("U0SUPPORT", "").json()["text"]

    started = slack_user.slash_command("U0SUPPORT", f"run plain GW-7 state={state}")
    assert started.status_code == 200
    assert "started for GW-7" in started.json()["text"]
    assert started.json()["response_type"] == "ephemeral"
    wait_until(
        lambda: (
            (run := journal.find_run("GW-7", "plain")) is not None and run.status == "succeeded"
        ),
        what="the run started from Slack to succeed",
    )
    run = journal.find_run("GW-7", "plain")
    assert run is not None and run.requested_by == "U0SUPPORT" and run.requested_via == "slack"
    status = slack_user.slash_command("U0SUPPORT", "status GW-7")
    assert "GW-7  plain v1  succeeded" in status.json()["text"]
    refused = [d for k, _, d in kinds(journal, "GW-7") if k == "run.request_refused"]
    assert [d["runbook"] for d in refused] == ["plian", "plain"]


def test_a_jira_webhook_starts_a_run_that_reports_back_on_the_ticket(
    environment: Path, journal: Journal, server: GatewayServer, jira: FakeJira
) -> None:
    (environment / "runbooks" / "plain-jira.yaml").write_text(PLAIN.format(runbook_id="plain-jira"))
    state = environment / "GW-8"
    state.mkdir()
    jira.add_issue(
        "GW-8",
        {
            "summary": "Phished mailbox at Courtage Dupont",
            "customfield_10100": {"value": "plain-jira"},
            "customfield_10101": f"state={state}",
        },
    )
    answer = jira.send_webhook(f"{server.url}/webhooks/jira", SANDBOX_JIRA_WEBHOOK_SECRET, "GW-8")
    assert answer.status_code == 202, answer.text
    wait_until(
        lambda: any("Audit checkpoint: record" in c.body for c in jira.comments("GW-8")),
        timeout=60,
        what="the audit head, last comment on the ticket",
    )
    said = "\n".join(c.body for c in jira.comments("GW-8"))
    assert 'Tocsin started runbook "Engine test" (plain-jira v1)' in said
    assert "first (First step): succeeded" in said
    assert "Post-incident report attached: GW-8-report.html" in said  # named, not wiki-linked
    report = jira.attachments("GW-8")
    assert [a.filename for a in report] == ["GW-8-report.html"]
    assert b"Post-incident report" in report[0].content
    run = journal.find_run("GW-8", "plain-jira")
    assert run is not None and run.requested_via == "jira"

    # an edit of the ticket sends the webhook again: a run that succeeded is left alone
    comments = len(jira.comments("GW-8"))
    again = jira.send_webhook(
        f"{server.url}/webhooks/jira", SANDBOX_JIRA_WEBHOOK_SECRET, "GW-8", "jira:issue_updated"
    )
    assert again.status_code == 200 and "already succeeded" in again.json()["message"]
    assert len(jira.comments("GW-8")) == comments


def test_a_jira_webhook_with_bad_input_or_signature_is_refused_with_a_comment(
    environment: Path, journal: Journal, server: GatewayServer, jira: FakeJira
) -> None:
    jira.add_issue("GW-9", {"summary": "x", "customfield_10100": "nope", "customfield_10101": ""})
    url = f"{server.url}/webhooks/jira"
    unknown = jira.send_webhook(url, SANDBOX_JIRA_WEBHOOK_SECRET, "GW-9", delivery_id="d-9")
    assert unknown.status_code == 422
    assert "no runbook with id 'nope'" in jira.comments("GW-9")[-1].body
    # Jira retries a delivery it thinks failed: the same delivery is handled once
    again = jira.send_webhook(url, SANDBOX_JIRA_WEBHOOK_SECRET, "GW-9", delivery_id="d-9")
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert len(jira.comments("GW-9")) == 1
    forged = jira.send_webhook(f"{server.url}/webhooks/jira", "wrong-secret", "GW-9")
    assert forged.status_code == 401
    unsigned = httpx.post(f"{server.url}/webhooks/jira", json={"issue": {"key": "GW-9"}})
    assert unsigned.status_code == 401
    events = kinds(journal, "GW-9")
    assert [k for k, _, _ in events].count("gateway.request_refused") == 0
    assert [k for k, _, _ in events].count("run.request_refused") == 1
    at_the_door = [
        e["data"]
        for e in journal.events_of(GATEWAY_CHAIN)
        if e["data"]["source"] == "jira" and e["data"]["claimed"].get("ticket") == "GW-9"
    ]
    assert [d["reason"].split(":")[0] for d in at_the_door] == [
        "bad or missing X-Hub-Signature"
    ] * 2


def test_a_stranger_clicking_again_is_told_once_why_it_does_not_count(
    environment: Path, journal: Journal, slack: FakeSlack, slack_user: SimulatedSlack
) -> None:
    flow = start(environment, journal, gated("slack-told-once"), "GW-9")
    message = gate_message(slack, "GW-9", "approve_cut")
    for _ in range(3):
        assert slack_user.click("U0STRANGER9", message, "tocsin_approve").status_code == 200

    def refusals() -> int:
        events = kinds(journal, "GW-9")
        return sum(
            1 for kind, actor, _ in events if (kind, actor) == ("decision.refused", "U0STRANGER9")
        )

    wait_until(lambda: refusals() == 3, what="three refusals in the trail")
    told = wait_until(
        lambda: [e for e in slack.ephemerals if e.user == "U0STRANGER9"], what="the notice"
    )
    time.sleep(0.5)  # a second notice would have gone out by now (its own thread)
    told = [e for e in slack.ephemerals if e.user == "U0STRANGER9"]
    assert len(told) == 1 and "not listed in approver group leads" in (told[0].text or "")
    for lead in ("U0LEAD1", "U0LEAD2"):
        slack_user.click(lead, current(slack, message), "tocsin_approve")
    assert flow.finish()["status"] == "succeeded"
