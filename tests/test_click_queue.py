"""The click queue: Slack gets its answer once a click is queued in the journal; the click is
judged after, by any gateway process on that journal, exactly once.

Real runs waiting at real gates on the session's Prefect server, the fake Slack, clicks
signed as Slack signs them, sent over loopback to real gateways (in this process, and
``tocsin gateway`` as a subprocess for the crash).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import func, select

from tests import gateway_support
from tests.engine_support import HEAD, FlowInThread, start_flow, wait_until
from tests.gateway_support import (
    environment_variables,
    gateway_from_settings,
    open_journal_gate,
    running_gateway,
    service_settings,
    settings_journal,
)
from tests.test_audit import postgres_url  # noqa: F401  (a fixture)
from tocsin.gateway import GATEWAY_CHAIN, Gateway, GatewayServer
from tocsin.integrations.slack.fake import FakeSlack, PostedSlackMessage, SlackChannel
from tocsin.integrations.slack.simulated_user import SimulatedSlack, sign_slack_request
from tocsin.journal import Journal
from tocsin.journal.click_queue import ClickOutcome
from tocsin.journal.schema import queued_clicks

# The gateway modules' shared fixtures (tests.gateway_support), each started once per module.
gateway = gateway_support.gateway
journal = gateway_support.journal
server = gateway_support.server
slack_user = gateway_support.slack_user

SIGNING_SECRET = "3c1b7e0d9a2f44c6b8e5d7a1f0c9b2e4"

GATED = (
    HEAD
    + """\
steps:
  - id: approve_cut
    title: Approve cutting the office off
    approval:
      approvers: leads
      quorum: 1
      prompt: "Cut office {{{{ incident.ticket }}}} off?"
      timeout: 1h
  - id: cut_off
    title: Cut the office off
    action: test.count_idempotent
    with: {{file: "{{{{ inputs.state }}}}/cut_off"}}
"""
)


@pytest.fixture(scope="module")
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(channels=(SlackChannel("C0INCIDENTS", "support-incidents"),)) as fake:
        yield fake


@pytest.fixture(scope="module")
def environment(
    prefect_server: str, slack: FakeSlack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("click-queue")
    values = {
        **service_settings(folder, signing_secret=SIGNING_SECRET, slack=slack),
        "TOCSIN_SLACK__INCIDENT_CHANNEL": "#support-incidents",
    }
    with environment_variables(values):
        yield folder


def start(environment: Path, journal: Journal, ticket: str) -> FlowInThread:
    folder = environment / ticket
    folder.mkdir()
    runbook = GATED.format(runbook_id=f"queue-{ticket.lower()}")
    return start_flow(journal, runbook, folder, ticket=ticket)


def gate_message(slack: FakeSlack, ticket: str) -> PostedSlackMessage:
    def find() -> PostedSlackMessage | None:
        for message in slack.messages:
            for block in message.blocks or []:
                for element in block.get("elements", []) if block.get("type") == "actions" else []:
                    if json.loads(element.get("value") or "{}").get("ticket") == ticket:
                        return message
        return None

    found = wait_until(find, what=f"the gate message of {ticket}")
    assert isinstance(found, PostedSlackMessage)
    return found


def queued_rows(journal: Journal) -> list[dict[str, Any]]:
    with journal.transaction() as db:
        rows = db.execute(select(queued_clicks).order_by(queued_clicks.c.id)).mappings()
        return [dict(row) for row in rows]


def clicks_of(journal: Journal, ticket: str) -> list[dict[str, Any]]:
    """The queue's rows of clicks on ``ticket``'s gate buttons, oldest first."""
    return [
        row
        for row in queued_rows(journal)
        if json.loads(json.loads(row["payload"])["actions"][0]["value"])["ticket"] == ticket
    ]


def received(journal: Journal, ticket: str) -> list[str]:
    return [e["actor"] for e in journal.events_of(ticket) if e["kind"] == "decision.received"]


# -- the answer does not wait ---------------------------------------------------------------


def test_a_click_is_answered_before_slack_is_asked_who_clicked(
    environment: Path, journal: Journal, slack: FakeSlack, slack_user: SimulatedSlack
) -> None:
    flow = start(environment, journal, "CQ-1")
    message = gate_message(slack, "CQ-1")
    slack.stall_next(1, 3.0)  # the judge's users.info hangs for 3 s
    looked_up = len(slack.calls_of("users.info"))
    started = time.monotonic()
    answer = slack_user.click("U0LEAD1", message, "tocsin_approve")
    answered_in = time.monotonic() - started
    assert answer.status_code == 200
    assert answered_in < 1.0, f"answered in {answered_in:.2f} s: the answer waited on Slack"
    assert received(journal, "CQ-1") == []  # not judged yet: Slack still has not said who
    wait_until(lambda: received(journal, "CQ-1") == ["U0LEAD1"], what="the decision")
    assert flow.finish()["status"] == "succeeded"
    # asked after the answer; it did not answer within the gateway's 2 s: decided all the same
    assert len(slack.calls_of("users.info")) > looked_up
    row = clicks_of(journal, "CQ-1")[-1]
    assert row["outcome"] == ClickOutcome.ACCEPTED and row["judged_at"] is not None


def test_a_queued_click_for_a_gate_already_decided_is_refused_to_the_clicker(
    environment: Path, journal: Journal, slack: FakeSlack, slack_user: SimulatedSlack
) -> None:
    flow = start(environment, journal, "CQ-2")
    message = gate_message(slack, "CQ-2")
    assert slack_user.click("U0LEAD1", message, "tocsin_approve").status_code == 200
    assert flow.finish()["status"] == "succeeded"
    late = slack_user.click("U0LEAD2", message, "tocsin_approve")  # on the old message
    assert late.status_code == 200
    told = wait_until(
        lambda: [e for e in slack.ephemerals if e.user == "U0LEAD2"],
        what="the private refusal",
    )
    assert "not counted" in (told[-1].text or "")
    assert "not waiting for a decision" in (told[-1].text or "")
    refused = [
        e["data"]["reason"] for e in journal.events_of("CQ-2") if e["kind"] == "decision.refused"
    ]
    assert len(refused) == 1 and "not waiting for a decision" in refused[0]
    row = clicks_of(journal, "CQ-2")[-1]
    assert row["outcome"] == ClickOutcome.REFUSED and "not waiting" in row["reason"]


def test_forged_stale_and_malformed_clicks_are_refused_at_once_and_never_queued(
    environment: Path, journal: Journal, slack: FakeSlack, slack_user: SimulatedSlack
) -> None:
    flow = start(environment, journal, "CQ-3")
    message = gate_message(slack, "CQ-3")
    before = len(queued_rows(journal))
    forged = slack_user.click("U0LEAD1", message, "tocsin_approve", signing_secret="nope")
    stale = slack_user.click(
        "U0LEAD1", message, "tocsin_approve", timestamp=int(time.time()) - 6 * 60
    )
    unsigned = slack_user.click("U0LEAD1", message, "tocsin_approve", signed=False)
    value = {"ticket": "CQ-3", "run": flow.run().id, "step": "approve_cut", "hash": "zz"}
    body = urlencode(
        {
            "payload": json.dumps(
                {
                    "type": "block_actions",
                    "user": {"id": "U0LEAD1"},
                    "actions": [{"action_id": "tocsin_approve", "value": json.dumps(value)}],
                }
            )
        }
    ).encode()
    headers = {
        **sign_slack_request(SIGNING_SECRET, body),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    malformed = slack_user.post_raw("/slack/interactions", body, headers)
    replayed = slack_user.post_raw("/slack/interactions", body, headers)
    statuses = [r.status_code for r in (forged, stale, unsigned, malformed, replayed)]
    assert statuses == [401, 401, 401, 400, 401]
    assert "gate hash" in malformed.json()["error"]
    assert "replayed" in replayed.json()["error"]
    assert len(queued_rows(journal)) == before  # none of them reached the queue
    door = [e["data"]["reason"] for e in journal.events_of(GATEWAY_CHAIN)][-5:]
    assert [reason.split(":")[0] for reason in door] == [
        "bad signature",
        "stale request",
        "unsigned request",
        "malformed Slack interaction",
        "replayed request",
    ]
    assert journal.decisions_of(flow.run().id) == []
    slack_user.click("U0LEAD1", message, "tocsin_approve")
    assert flow.finish()["status"] == "succeeded"


# -- a gateway that dies ----------------------------------------------------------------------


@pytest.mark.slow
def test_a_click_left_by_a_killed_gateway_is_judged_by_the_next_one(
    prefect_server: str, environment: Path, journal: Journal, slack: FakeSlack
) -> None:
    flow = start(environment, journal, "CQ-4")
    message = gate_message(slack, "CQ-4")
    # Its judge (a process of its own) is ready before the stall below is set.
    with running_gateway(prefect_server) as gateway:
        slack.stall_next(1, 20.0)  # its judge hangs in users.info...
        with SimulatedSlack(gateway.url, SIGNING_SECRET, fake_slack=slack) as clicker:
            assert clicker.click("U0LEAD1", message, "tocsin_approve").status_code == 200
        wait_until(
            lambda: clicks_of(journal, "CQ-4")[-1]["attempts"],
            what="the dead-to-be gateway's claim",
        )
        os.killpg(gateway.process.pid, signal.SIGKILL)  # ...and dies there, with its judge
    assert "Traceback" not in gateway.output
    row = clicks_of(journal, "CQ-4")[-1]
    assert row["judged_at"] is None and received(journal, "CQ-4") == []
    with gateway_from_settings():  # the next gateway to start takes it once the claim lapses
        wait_until(
            lambda: received(journal, "CQ-4") == ["U0LEAD1"], timeout=40, what="the decision"
        )
        assert flow.finish()["status"] == "succeeded"
    row = [r for r in queued_rows(journal) if r["id"] == row["id"]][0]
    assert row["attempts"] == 2 and row["outcome"] == ClickOutcome.ACCEPTED


# -- two gateways on one queue ----------------------------------------------------------------

APPROVERS = [f"U0RACE{n:03d}" for n in range(120)]


def open_gate(journal: Journal, ticket: str) -> tuple[int, str]:
    """A run waiting at gate ``approve`` (journal only: its approvals stay pending)."""
    return open_journal_gate(journal, ticket, "race", APPROVERS)


def click(ticket: str, run_id: int, user: str, gate: str, n: int) -> bytes:
    value = {"ticket": ticket, "run": run_id, "step": "approve", "hash": gate[:16]}
    payload = {
        "type": "block_actions",
        "user": {"id": user},
        "channel": {"id": "C0INCIDENTS"},
        "trigger_id": f"{n}.race",
        "actions": [{"action_id": "tocsin_approve", "value": json.dumps(value)}],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def race(journal_url: str, folder: Path, slack: FakeSlack) -> None:
    values = {
        **service_settings(folder, signing_secret=SIGNING_SECRET, slack=slack),
        "TOCSIN_JOURNAL_URL": journal_url,
    }
    tickets = [f"RACE-{n}" for n in range(3)]
    with environment_variables(values), settings_journal() as journal:
        gates = {ticket: open_gate(journal, ticket) for ticket in tickets}
        clicks = [
            (ticket, user, n)
            for n, (ticket, user) in enumerate(
                (ticket, user) for user in APPROVERS[:60] for ticket in tickets
            )
        ]
        # the same people again, once their first clicks are judged (two gateways judging
        # one person's two clicks at the same instant may both record them: the flow then
        # applies one, judging them again, tocsin.gates.apply_decisions)
        again = [(t, u, len(clicks) + n) for n, (t, u, _) in enumerate(clicks[:30])]
        with gateway_from_settings() as first, gateway_from_settings() as second:
            race_through(first, second, gates, clicks)
            race_through(first, second, gates, again)
        clicks += again
        check_race(journal, gates, clicks, {first.click_judge.owner, second.click_judge.owner})


def race_through(
    first: Gateway,
    second: Gateway,
    gates: dict[str, tuple[int, str]],
    clicks: list[tuple[str, str, int]],
) -> None:
    with (
        GatewayServer(first.app) as one,
        GatewayServer(second.app) as two,
        httpx.Client() as client,
    ):
        for index, (ticket, user, n) in enumerate(clicks):
            run_id, gate = gates[ticket]
            body = click(ticket, run_id, user, gate, n)
            headers = {
                **sign_slack_request(SIGNING_SECRET, body),
                "Content-Type": "application/x-www-form-urlencoded",
            }
            to = (one, two)[index % 2]
            answer = client.post(f"{to.url}/slack/interactions", content=body, headers=headers)
            assert answer.status_code == 200, answer.text
        wait_until(lambda: first.click_queue.unjudged() == 0, what="every click judged")


def check_race(
    journal: Journal,
    gates: dict[str, tuple[int, str]],
    clicks: list[tuple[str, str, int]],
    owners: set[str],
) -> None:
    rows = queued_rows(journal)
    assert len(rows) == len(clicks) and all(r["attempts"] == 1 for r in rows)
    assert {r["claimed_by"] for r in rows} == owners  # both took clicks
    for ticket, (run_id, _) in gates.items():
        decisions = journal.decisions_of(run_id, "approve")
        # one decision per click: none judged twice; each first click counts, each second not
        per_ticket = [c for c in clicks if c[0] == ticket]
        assert len(decisions) == len(per_ticket)
        pending = [d.actor for d in decisions if d.status == "pending"]
        assert sorted(pending) == sorted(set(u for t, u, _ in per_ticket))
        refused = [d for d in decisions if d.status == "refused"]
        assert len(refused) == len(per_ticket) - len(pending)
        assert all("already approved" in (d.reason or "") for d in refused)
    with journal.transaction() as db:
        outcomes = dict(
            db.execute(
                select(queued_clicks.c.outcome, func.count()).group_by(queued_clicks.c.outcome)
            ).all()
        )
    assert outcomes == {ClickOutcome.ACCEPTED: 180, ClickOutcome.REFUSED: 30}


def test_two_gateways_on_one_sqlite_queue_never_judge_a_click_twice(
    slack: FakeSlack, tmp_path: Path
) -> None:
    race(f"sqlite:///{tmp_path / 'journal.db'}", tmp_path, slack)


@pytest.mark.postgres
def test_two_gateways_on_one_postgresql_queue_never_judge_a_click_twice(
    slack: FakeSlack,
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
) -> None:
    race(postgres_url, tmp_path, slack)
