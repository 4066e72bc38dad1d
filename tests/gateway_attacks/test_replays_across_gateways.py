"""Replays across gateway processes: several gateways behind one URL, on one journal.

An attacker who captured one signed click or ``/tocsin`` command sends it again, within
Slack's 5-minute window, to another gateway than the one that took it (a load balancer
sends any request to any gateway). Each gateway remembers what it accepted only in its own
memory; the journal is what refuses the replay there: the click's request digest is
unique in the click queue, the command's is claimed as a delivery. Two real gateways on
loopback over one journal, SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import create_engine, select

from tests.engine_support import wait_until
from tests.gateway_attacks.support import click_body, gateway_records, signed_slack
from tests.gateway_support import (
    environment_variables,
    gateway_from_settings,
    open_journal_gate,
    settings_journal,
)
from tests.test_audit import postgres_url  # noqa: F401  (a fixture)
from tocsin import preflight
from tocsin.gateway import Gateway, GatewayServer
from tocsin.integrations.slack.signature import REMEMBERED_FOR
from tocsin.journal import Journal, now, webhook_deliveries
from tocsin.journal.click_queue import ClickQueue, ClickWriter
from tocsin.journal.schema import queued_clicks
from tocsin.settings import load_settings

REPLAYED = "replayed request: this signed request was already received"
APPROVERS = [f"U0REPLAY{n:02d}" for n in range(40)]

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKENDS)
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new journal of its own for each test, on each database."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'shared-journal.db'}"


@dataclass
class TwoGateways:
    """Two gateway processes' apps on one journal, each served on loopback."""

    first: Gateway
    second: Gateway
    urls: tuple[str, str]
    journal: Journal

    def post(self, to: int, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(f"{self.urls[to]}{path}", content=body, headers=headers, timeout=30)

    def all_judged(self) -> None:
        wait_until(lambda: self.first.click_queue.unjudged() == 0, what="every click judged")


@pytest.fixture
def gateways(environment: Path, journal_url: str) -> Iterator[TwoGateways]:
    with (
        environment_variables({"TOCSIN_JOURNAL_URL": journal_url}),
        settings_journal() as journal,
        gateway_from_settings() as first,
        gateway_from_settings() as second,
        GatewayServer(first.app, settings=first.settings.gateway) as one,
        GatewayServer(second.app, settings=second.settings.gateway) as two,
    ):
        yield TwoGateways(first, second, (one.url, two.url), journal)


def open_gate(journal: Journal, ticket: str) -> dict[str, Any]:
    """A run waiting at gate ``approve`` (journal only, no flow: every approval stays
    pending, the quorum being all of ``APPROVERS``); the value of its buttons."""
    run_id, gate = open_journal_gate(journal, ticket, "replay", APPROVERS)
    return {"ticket": ticket, "run": run_id, "step": "approve", "hash": gate[:16]}


def signed_click(gate: dict[str, Any], user: str) -> tuple[bytes, dict[str, str]]:
    """A click on the gate's Approve button, signed as Slack signs it (body, headers)."""
    body = click_body(gate, user={"id": user})
    return body, signed_slack(body)


def queued_of(journal: Journal, ticket: str) -> list[dict[str, Any]]:
    """The queue's rows of clicks on ``ticket``'s gate buttons."""
    with journal.transaction() as db:
        rows = db.execute(select(queued_clicks).order_by(queued_clicks.c.id)).mappings().all()
    return [
        dict(row)
        for row in rows
        if json.loads(json.loads(row["payload"])["actions"][0]["value"])["ticket"] == ticket
    ]


def refused_replays(journal: Journal, since: int) -> list[tuple[str, int, str]]:
    """(source, status, reason) of the requests refused at the door since record ``since``."""
    return [
        (r["data"]["source"], r["data"]["status"], r["data"]["reason"])
        for r in gateway_records(journal)[since:]
        if r["kind"] == "gateway.request_refused"
    ]


def at_once(calls: Sequence[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    """Make the calls from threads of their own, released together."""
    barrier = threading.Barrier(len(calls))

    def released(call: Callable[[], httpx.Response]) -> httpx.Response:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures: list[Future[httpx.Response]] = [pool.submit(released, c) for c in calls]
        return [f.result() for f in futures]


# -- clicks -------------------------------------------------------------------------------


def test_a_click_replayed_to_another_gateway_is_refused_and_never_queued(
    gateways: TwoGateways,
) -> None:
    journal = gateways.journal
    gate = open_gate(journal, "SEC-70")
    body, headers = signed_click(gate, APPROVERS[0])
    since = len(gateway_records(journal))

    taken = gateways.post(0, "/slack/interactions", body, headers)
    assert taken.status_code == 200, taken.text
    replayed = gateways.post(1, "/slack/interactions", body, headers)
    assert replayed.status_code == 401, replayed.text
    assert replayed.json()["error"] == REPLAYED  # the same words as a replay to the first

    gateways.all_judged()
    assert len(queued_of(journal, "SEC-70")) == 1
    decisions = journal.decisions_of(gate["run"], "approve")
    assert [(d.actor, d.status) for d in decisions] == [(APPROVERS[0], "pending")]
    assert refused_replays(journal, since) == [("slack", 401, REPLAYED)]
    # and back to the first: refused there too (its memory, before the journal is asked)
    assert gateways.post(0, "/slack/interactions", body, headers).status_code == 401
    assert len(queued_of(journal, "SEC-70")) == 1


def test_the_same_click_sent_to_both_gateways_at_once_is_accepted_once(
    gateways: TwoGateways,
) -> None:
    journal = gateways.journal
    gate = open_gate(journal, "SEC-71")
    clicks = [signed_click(gate, user) for user in APPROVERS[:12]]
    for body, headers in clicks:
        answers = at_once(
            [
                lambda b=body, h=headers, to=to: gateways.post(to, "/slack/interactions", b, h)
                for to in (0, 1)
            ]
        )
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200, 401], [a.text for a in answers]
        assert [a.json()["error"] for a in answers if a.status_code == 401] == [REPLAYED]
    gateways.all_judged()
    rows = queued_of(journal, "SEC-71")
    assert len(rows) == len(clicks)
    assert len({row["request_digest"] for row in rows}) == len(clicks)
    decisions = journal.decisions_of(gate["run"], "approve")
    assert sorted(d.actor for d in decisions) == sorted(APPROVERS[:12])
    assert all(d.status == "pending" for d in decisions)


def test_a_replay_in_a_group_commit_fails_none_of_the_other_clicks_of_its_batch(
    gateways: TwoGateways,
) -> None:
    journal = gateways.journal
    gate = open_gate(journal, "SEC-72")
    replay = signed_click(gate, APPROVERS[0])
    assert gateways.post(0, "/slack/interactions", *replay).status_code == 200
    fresh = [signed_click(gate, user) for user in APPROVERS[1:4]]

    second = gateways.second
    batches: list[tuple[int, list[int | None]]] = []
    add = second.click_queue.add

    def recorded(clicks: Sequence[tuple[str, str, str]], **options: Any) -> list[int | None]:
        ids = add(clicks, **options)
        batches.append((len(clicks), ids))
        return ids

    second.click_queue.add = recorded  # type: ignore[method-assign]
    second.click_writer.gather_seconds = 0.5  # long enough for the four to meet in one batch
    answers = at_once(
        [
            lambda b=body, h=headers: gateways.post(1, "/slack/interactions", b, h)
            for body, headers in [replay, *fresh]
        ]
    )
    assert [a.status_code for a in answers] == [401, 200, 200, 200], [a.text for a in answers]
    assert answers[0].json()["error"] == REPLAYED
    assert len(batches) == 1 and batches[0][0] == 4  # one transaction: the replay and three
    assert sum(click_id is None for click_id in batches[0][1]) == 1

    gateways.all_judged()
    assert len(queued_of(journal, "SEC-72")) == 4
    decisions = journal.decisions_of(gate["run"], "approve")
    assert sorted(d.actor for d in decisions) == sorted(APPROVERS[:4])


def test_the_same_signed_request_twice_in_one_batch_is_queued_once(journal_url: str) -> None:
    """Not from the door (a gateway's memory refuses the second first): the writer itself."""
    journal = Journal(journal_url)
    writer = ClickWriter(ClickQueue(journal), gather_seconds=0.3)
    try:
        futures = [
            writer.submit("slack", payload, digest)
            for payload, digest in [("one", "a" * 64), ("one again", "a" * 64), ("two", "b" * 64)]
        ]
        ids = [future.result(timeout=10) for future in futures]
        assert ids[0] is not None and ids[1] is None and ids[2] is not None
        with journal.transaction() as db:
            rows = db.execute(select(queued_clicks.c.id, queued_clicks.c.payload)).all()
        assert sorted(rows) == sorted([(ids[0], "one"), (ids[2], "two")])
        # and in a later batch, still refused: the journal remembers, not the writer
        assert writer.submit("slack", "one later", "a" * 64).result(timeout=10) is None
    finally:
        writer.close()
        journal.close()


# -- slash commands -----------------------------------------------------------------------


def test_a_run_command_replayed_to_another_gateway_starts_nothing(
    gateways: TwoGateways, tmp_path: Path
) -> None:
    journal = gateways.journal
    state = tmp_path / "state"
    state.mkdir()
    form = {
        "command": "/tocsin",
        "text": f"run plain SEC-73 state={state}",
        "user_id": "U0LEAD1",
        "channel_id": "C0INCIDENTS",
    }
    body = urlencode(form).encode()
    headers = signed_slack(body)
    started = gateways.post(0, "/slack/commands", body, headers)
    assert started.status_code == 200 and ":rocket:" in started.json()["text"], started.text
    wait_until(  # the run, started on a thread of the first gateway, is over
        lambda: not any(thread.is_alive() for thread in gateways.first.launcher.threads),
        timeout=60,
        what="the run the command started, finished",
    )
    run = journal.find_run("SEC-73", "plain")
    assert run is not None and run.status == "succeeded"
    events = [e["kind"] for e in journal.events_of("SEC-73")]
    launched = list(gateways.second.launcher.threads)
    since = len(gateway_records(journal))

    replayed = gateways.post(1, "/slack/commands", body, headers)
    assert replayed.status_code == 401, replayed.text
    assert replayed.json()["error"] == REPLAYED

    assert gateways.second.launcher.threads == launched  # nothing started there
    assert [e["kind"] for e in journal.events_of("SEC-73")] == events  # nor resumed
    assert len(journal.runs_of("SEC-73")) == 1
    assert len((state / "first").read_text().splitlines()) == 1  # its one step ran once
    assert refused_replays(journal, since) == [("slack", 401, REPLAYED)]


def test_the_same_status_command_sent_to_both_gateways_at_once_is_answered_once(
    gateways: TwoGateways,
) -> None:
    body = urlencode(
        {"command": "/tocsin", "text": "status SEC-74", "user_id": "U0LEAD1", "channel_id": ""}
    ).encode()
    headers = signed_slack(body)
    answers = at_once(
        [lambda to=to: gateways.post(to, "/slack/commands", body, headers) for to in (0, 1)]
    )
    assert sorted(a.status_code for a in answers) == [200, 401], [a.text for a in answers]


def test_slack_requests_remembered_do_not_make_jira_deliveries_forgotten(
    journal_url: str,
) -> None:
    """Each source forgets its own deliveries: Slack's after minutes, Jira's after an hour."""
    journal = Journal(journal_url)
    try:
        with journal.transaction() as db:
            db.execute(
                webhook_deliveries.insert().values(
                    digest="j" * 64, source="jira", received_at=now() - timedelta(minutes=30)
                )
            )
        assert journal.claim_delivery("slack", ["s" * 64], keep_for=REMEMBERED_FOR) is None
        hour = timedelta(hours=1)
        assert journal.claim_delivery("jira", ["j" * 64], keep_for=hour) == "j" * 64
        assert journal.claim_delivery("slack", ["s" * 64], keep_for=REMEMBERED_FOR) == "s" * 64
    finally:
        journal.close()


# -- an existing journal ------------------------------------------------------------------


def test_a_journal_from_before_request_digests_is_upgraded_and_then_refuses_replays(
    journal_url: str, tmp_path: Path
) -> None:
    Journal(journal_url).close()
    engine = create_engine(journal_url)
    with engine.begin() as db:  # as written by a Tocsin that queued clicks without digests
        db.exec_driver_sql("DROP INDEX one_click_per_signed_request")
        db.exec_driver_sql("ALTER TABLE queued_clicks DROP COLUMN request_digest")
        db.exec_driver_sql(
            "INSERT INTO queued_clicks (source, payload, received_at, attempts) "
            "VALUES ('slack', 'queued before', CURRENT_TIMESTAMP, 0)"
        )
    engine.dispose()
    values = {"TOCSIN_JOURNAL_URL": journal_url, "TOCSIN_DATA_DIR": str(tmp_path / "data")}
    with environment_variables(values):
        found = preflight.journal(load_settings())
        assert not found.ok
        assert "out of date: missing queued_clicks.request_digest, index " in found.message

        journal = Journal(journal_url)  # what any command opening it does
        try:
            assert "schema current" in preflight.journal(load_settings()).message
            queue = ClickQueue(journal)
            assert queue.unjudged() == 1  # the click queued before is still there
            assert None not in queue.add([("slack", "p", "c" * 64), ("slack", "p", "d" * 64)])
            assert queue.add([("slack", "p", "c" * 64)]) == [None]
        finally:
            journal.close()
        # an index lost on its own (the column there) is named too
        engine = create_engine(journal_url)
        with engine.begin() as db:
            db.exec_driver_sql("DROP INDEX one_click_per_signed_request")
        engine.dispose()
        found = preflight.journal(load_settings())
        assert not found.ok and found.message.endswith("missing index one_click_per_signed_request")
