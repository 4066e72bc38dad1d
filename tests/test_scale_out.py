"""Prefect's distributed setup for real: two API servers on PostgreSQL and Redis, two
workers, two gateways on one PostgreSQL journal; 50 incidents started from Slack and
decided through both gateways at once."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.cli_runner import run_tocsin
from tests.engine_support import wait_until
from tocsin.integrations.slack.fake import FakeSlack, PostedSlackMessage
from tocsin.integrations.slack.simulated_user import SimulatedSlack
from tocsin.journal import Journal
from tocsin.sandbox.assembly import Sandbox
from tocsin.scale_out import LocalScaleOut, ScaleOutDatabases, trial_databases
from tocsin.settings import load_settings

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.alone]

INCIDENTS = 50
RAN = re.compile(r"Flow run '(SCALE-\d+)-scaled' - ")

RUNBOOK = """\
runbook: scaled
version: 1
title: Scaled out
summary: One message, a gate, one message
severity: low
sources: [{title: Test, document: test.txt}]
approver_groups:
  leads: {users: [U0LEAD1, U0LEAD2]}
steps:
  - id: first
    title: First
    action: slack.post_message
    with: {channel: "#support-incidents", text: "first of {{ incident.ticket }}"}
  - id: gate
    title: Gate
    approval: {approvers: leads, prompt: "Go on with {{ incident.ticket }}?", timeout: 30m}
  - id: last
    title: Last
    action: slack.post_message
    with: {channel: "#support-incidents", text: "last of {{ incident.ticket }}"}
"""


@pytest.fixture(scope="module")
def databases() -> Iterator[ScaleOutDatabases]:
    """A Prefect database and a journal database of their own in the local PostgreSQL, and
    Redis databases of their own: nothing of another test's touched."""
    with trial_databases() as created:
        yield created


@pytest.fixture(scope="module")
def setup(
    databases: ScaleOutDatabases, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LocalScaleOut, Sandbox]]:
    """The fakes in this process (one Slack for every worker and gateway), and the setup."""
    folder = tmp_path_factory.mktemp("scale-out")
    runbooks = folder / "runbooks"
    runbooks.mkdir()
    (runbooks / "scaled.yaml").write_text(RUNBOOK)
    settings = load_settings(data_dir=folder / "data", journal_url=databases.journal_url)
    common = {
        "TOCSIN_DATA_DIR": str(folder / "data"),
        "TOCSIN_RUNBOOK_PATHS": json.dumps([str(runbooks)]),
        "TOCSIN_ANNOUNCE__PROGRESS_EVERY_SECONDS": "0",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }
    with Sandbox(settings) as sandbox:
        environment = {**sandbox.environment(), **common}
        keygen = run_tocsin("audit", "keygen", env={**environment})
        assert keygen.returncode == 0, keygen.stderr
        with LocalScaleOut(folder / "processes", databases, environment=environment) as cluster:
            yield cluster, sandbox


def _response_url(slack: FakeSlack, ticket: str) -> str:
    return f"{slack.url}/commands/T0SCALE/{ticket}/answer"


def _late_answers(slack: FakeSlack, tickets: list[str]) -> dict[str, str] | None:
    """The answers sent to each ticket's response_url, once every one has one."""
    paths = {urlsplit(_response_url(slack, ticket)).path: ticket for ticket in tickets}
    found = {paths[p.path]: p.payload["text"] for p in slack.responses if p.path in paths}
    return found if len(found) == len(tickets) else None


def _gate_messages(slack: FakeSlack) -> dict[str, PostedSlackMessage]:
    found: dict[str, PostedSlackMessage] = {}
    for message in slack.messages:
        for block in message.blocks or []:
            for element in block.get("elements", []) if block.get("type") == "actions" else []:
                value = json.loads(element.get("value") or "{}")
                if value.get("step") == "gate":
                    found[value["ticket"]] = message
    return found


# About four minutes on two quiet cores (Prefect starts one process per run); more when the
# other test process is busy.
@pytest.mark.timeout(1200)
def test_fifty_incidents_on_two_servers_two_workers_and_two_gateways_lose_nothing(
    setup: tuple[LocalScaleOut, Sandbox], databases: ScaleOutDatabases
) -> None:
    cluster, sandbox = setup
    slack = sandbox.fake("slack", FakeSlack)
    secret = sandbox.environment()["TOCSIN_SECRET_SLACK_SIGNING_SECRET"]
    users = [SimulatedSlack(url, secret, fake_slack=slack) for url in cluster.gateway_urls]
    tickets = [f"SCALE-{number}" for number in range(1, INCIDENTS + 1)]
    started = time.monotonic()
    try:
        answers: dict[str, str] = {}
        for number, ticket in enumerate(tickets):
            answer = users[number % 2].slash_command(
                "U0REQUESTER", f"run scaled {ticket}", response_url=_response_url(slack, ticket)
            )
            assert answer.status_code == 200, answer.text
            answers[ticket] = answer.json()["text"]
        # A start slower than Slack allows (Prefect busy) is answered "On it", then for real.
        late = [ticket for ticket, text in answers.items() if "On it" in text]
        print(f"\n{len(late)} of {INCIDENTS} starts answered later through their response_url")
        if late:
            answers.update(wait_until(lambda: _late_answers(slack, late), 120, "late answers"))
        for ticket, text in answers.items():
            assert "queued on deployment run-runbook/tocsin" in text, (ticket, text)

        clicked: dict[str, httpx.Response] = {}

        def every_gate_clicked() -> bool:
            for ticket, message in _gate_messages(slack).items():
                if ticket not in clicked:
                    # Alternately through each gateway, as a load balancer spreads them.
                    gateway = users[len(clicked) % 2]
                    clicked[ticket] = gateway.click("U0LEAD1", message, "tocsin_approve")
            return len(clicked) == INCIDENTS

        try:
            wait_until(every_gate_clicked, timeout=700, what="50 runs at their gate")
        except AssertionError as late:
            waiting = set(tickets) - set(clicked)
            raise AssertionError(f"{late}\n{_diagnosis(cluster, databases, waiting)}") from None
        print(f"\n{INCIDENTS} runs at their gate after {time.monotonic() - started:.0f} s")
        assert all(answer.status_code == 200 for answer in clicked.values())

        journal = Journal(databases.journal_url)
        try:

            def every_run_ended() -> bool:
                runs = [journal.find_run(ticket, "scaled") for ticket in tickets]
                return all(run is not None and run.status == "succeeded" for run in runs)

            wait_until(every_run_ended, timeout=400, what="50 runs to succeed")
            elapsed = time.monotonic() - started
            print(f"\n{INCIDENTS} incidents started, decided and finished in {elapsed:.0f} s")
            events = {ticket: journal.events_of(ticket) for ticket in tickets}
        finally:
            journal.close()
    finally:
        for user in users:
            user.close()

    texts = [message.text or "" for message in slack.messages]
    for ticket in tickets:
        # No step executed twice: each message posted once, each step started once.
        assert texts.count(f"first of {ticket}") == 1, ticket
        assert texts.count(f"last of {ticket}") == 1, ticket
        kinds = [(event["kind"], event["step_id"]) for event in events[ticket]]
        assert kinds.count(("step.started", "first")) == 1
        assert kinds.count(("step.started", "last")) == 1
        # No decision lost, none applied twice.
        assert kinds.count(("decision.applied", "gate")) == 1, ticket
        assert ("run.finished", None) in kinds
    # The runs were spread over both workers (each polls its own API server).
    ran = {
        number: set(RAN.findall((cluster.folder / f"worker-{number}.log").read_text()))
        for number in (1, 2)
    }
    print(f"worker 1 ran {len(ran[1])} runs, worker 2 ran {len(ran[2])}")
    assert ran[1] and ran[2] and ran[1] | ran[2] == set(tickets) and not ran[1] & ran[2]

    # Prefect's view, through the other API server: every flow run completes (a run's
    # journal says succeeded a moment before its flow returns and Prefect records it).
    def prefect_states() -> dict[str, str]:
        answer = httpx.post(
            f"{cluster.api_urls[1]}/flow_runs/filter",
            json={"flow_runs": {"tags": {"all_": ["runbook:scaled"]}}, "limit": 200},
            timeout=30,
        )
        return {run["name"]: run["state"]["type"] for run in answer.json()}

    completed = {f"{ticket}-scaled": "COMPLETED" for ticket in tickets}
    wait_until(lambda: prefect_states() == completed, timeout=120, what="50 flow runs completed")
    verified = _verify_all(databases, tickets, cluster)
    assert verified == {ticket: True for ticket in tickets}


def _diagnosis(cluster: LocalScaleOut, databases: ScaleOutDatabases, tickets: set[str]) -> str:
    """Where each run not yet at its gate is, as Prefect and the journal say, and the end of
    each process's log: what a failure in CI needs to be understood."""
    lines = [f"{len(tickets)} runs not at their gate: {sorted(tickets)}"]
    try:
        answer = httpx.post(
            f"{cluster.api_urls[0]}/flow_runs/filter",
            json={"flow_runs": {"tags": {"all_": ["runbook:scaled"]}}, "limit": 200},
            timeout=30,
        )
        states = {run["name"]: run["state"] for run in answer.json()}
        for ticket in sorted(tickets):
            state = states.get(f"{ticket}-scaled")
            lines.append(
                f"  {ticket}: Prefect "
                + (
                    f"{state['type']} {state['name']} {state.get('message') or ''}"
                    if state
                    else "-"
                )
            )
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        lines.append(f"  Prefect's flow runs unreadable: {exc}")
    journal = Journal(databases.journal_url)
    try:
        for ticket in sorted(tickets):
            run = journal.find_run(ticket, "scaled")
            last = [event["kind"] for event in journal.events_of(ticket)][-3:]
            lines.append(f"  {ticket}: journal {run.status if run else '-'}, last {last}")
    finally:
        journal.close()
    for log in sorted(cluster.folder.glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-15:]
        lines += [f"--- {log.name} (last lines)", *tail]
    return "\n".join(lines)


def _verify_all(
    databases: ScaleOutDatabases, tickets: list[str], cluster: LocalScaleOut
) -> dict[str, Any]:
    """Every incident's chain and checkpoint signatures, as `tocsin audit verify` checks them."""
    from tocsin.evidence import verify_incident

    settings = load_settings(
        data_dir=Path(cluster.environment["TOCSIN_DATA_DIR"]), journal_url=databases.journal_url
    )
    results: dict[str, Any] = {}
    for ticket in tickets:
        verification, _ = verify_incident(settings, ticket, public_key_file=None, anchor=None)
        results[ticket] = verification.ok or [str(p) for p in verification.problems]
    return results


def test_two_trial_setups_at_once_share_no_database() -> None:
    """A test and a benchmark may run trials side by side: neither empties the other's."""
    with trial_databases() as first, trial_databases() as second:
        assert {first.redis_url, first.docket_url}.isdisjoint({second.redis_url, second.docket_url})
        assert first.journal_url != second.journal_url
        assert first.prefect_url != second.prefect_url
