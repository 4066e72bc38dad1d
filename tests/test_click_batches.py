"""A claimed batch of clicks is judged together: its gates read at once, its clicks judged in
order, its decisions, audit records and marks journalled in one transaction — all or none.

Clicks are put in the queue directly (as the door does once a click is verified), so that a
batch holds exactly them; real gateways judge them, a real flow applies what they decide.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from tests.engine_support import HEAD, start_flow, wait_until
from tests.gateway_support import (
    environment_variables,
    gateway_from_settings,
    open_journal_gate,
    service_settings,
    settings_journal,
)
from tests.test_audit import postgres_url  # noqa: F401  (a fixture)
from tocsin.audit import AuditKey
from tocsin.integrations.slack.fake import FakeSlack, SlackChannel
from tocsin.journal import Journal
from tocsin.journal.chain import AuditChain
from tocsin.journal.click_queue import ClickOutcome, ClickQueue
from tocsin.journal.schema import queued_clicks
from tocsin.running import audit_key_for
from tocsin.settings import load_settings
from tocsin.statuses import DecisionStatus

SIGNING_SECRET = "5d2e8f1a0b3c4d6e7f8091a2b3c4d5e6"

QUORUM_OF_TWO = (
    HEAD
    + """\
steps:
  - id: approve_cut
    title: Approve cutting the office off
    approval: {{approvers: leads, quorum: 2, prompt: "Cut the office off?", timeout: 1h}}
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


def digest(n: int) -> str:
    """The digest of the n-th click's signed request (each click is a request of its own)."""
    return f"{n:064x}"


def payload(ticket: str, run_id: int, step: str, user: str, gate: str, n: int) -> str:
    """A queued click, as the door queues it (the ``payload`` field of Slack's form)."""
    value = {"ticket": ticket, "run": run_id, "step": step, "hash": gate[:16]}
    return json.dumps(
        {
            "type": "block_actions",
            "user": {"id": user},
            "channel": {"id": "C0INCIDENTS"},
            "trigger_id": f"{n}.batch",
            "actions": [{"action_id": "tocsin_approve", "value": json.dumps(value)}],
        }
    )


def rows(journal: Journal) -> list[dict[str, Any]]:
    with journal.transaction() as db:
        found = db.execute(select(queued_clicks).order_by(queued_clicks.c.id)).mappings()
        return [dict(row) for row in found]


def verified(journal: Journal, ticket: str) -> bool:
    key = audit_key_for(load_settings())
    assert key is not None
    result = journal.verify(ticket, key.public_key)
    assert result.ok, [p.message for p in result.problems]
    return True


# -- duplicates and the quorum within one batch ------------------------------------------------


def test_a_batch_with_more_approvals_than_the_quorum_applies_the_quorum_once_each(
    prefect_server: str, slack: FakeSlack, tmp_path: Path
) -> None:
    values = {
        **service_settings(tmp_path, signing_secret=SIGNING_SECRET, slack=slack),
        "TOCSIN_SLACK__INCIDENT_CHANNEL": "#support-incidents",
    }
    with environment_variables(values), settings_journal() as journal:
        flow = start_flow(
            journal, QUORUM_OF_TWO.format(runbook_id="batch-quorum"), tmp_path, ticket="BQ-1"
        )
        run = flow.run()
        step = wait_until(
            lambda: (s := journal.step(run.id, "approve_cut")) and s.status == "waiting" and s,
            what="the gate waiting",
        )
        gate = step.request["gate_hash"]
        clickers = ["U0LEAD1", "U0LEAD1", "U0LEAD2", "U0LEAD3", "U0STRANGER"]
        ClickQueue(journal).add(
            [
                ("slack", payload("BQ-1", run.id, "approve_cut", user, gate, n), digest(n))
                for n, user in enumerate(clickers)
            ]
        )
        with gateway_from_settings() as gateway:  # its judge claims them all, first thing
            wait_until(lambda: gateway.click_queue.unjudged() == 0, what="the batch judged")
            assert flow.finish()["status"] == "succeeded"
        judged = rows(journal)
        assert len({row["judged_at"] for row in judged}) == 1  # one batch, one transaction
        assert [row["outcome"] for row in judged] == [
            ClickOutcome.ACCEPTED,
            ClickOutcome.REFUSED,  # the same person again, in the same batch
            ClickOutcome.ACCEPTED,
            ClickOutcome.ACCEPTED,  # recorded: the flow finds the gate closed when it applies
            ClickOutcome.REFUSED,  # not an approver
        ]
        assert "already approved" in judged[1]["reason"]
        decisions = journal.decisions_of(run.id, "approve_cut")
        assert [(d.actor, d.status) for d in decisions] == [
            ("U0LEAD1", DecisionStatus.APPLIED),
            ("U0LEAD1", DecisionStatus.REFUSED),
            ("U0LEAD2", DecisionStatus.APPLIED),
            ("U0LEAD3", DecisionStatus.REFUSED),
            ("U0STRANGER", DecisionStatus.REFUSED),
        ]
        assert "too late" in (decisions[3].reason or "")
        kinds = [e["kind"] for e in journal.events_of("BQ-1")]
        # refused: two by the gateway, and the one the flow found too late
        assert kinds.count("decision.received") == 3 and kinds.count("decision.refused") == 3
        assert verified(journal, "BQ-1")


# -- the journal drops in the middle of a batch's transaction -----------------------------------

APPROVERS = [f"U0DROP{n:02d}" for n in range(10)]


def open_gate(journal: Journal, ticket: str) -> tuple[int, str]:
    """A run waiting at gate ``approve`` (journal only: its approvals stay pending)."""
    return open_journal_gate(journal, ticket, "drop", APPROVERS)


def drop_once(monkeypatch: pytest.MonkeyPatch, drop: Callable[[Connection], None]) -> list[int]:
    """The first batch's transaction fails after its marks and decisions are written and its
    audit records made, before they are inserted: ``drop`` breaks it there."""
    dropped: list[int] = []
    original = AuditChain._end_appending

    def failing(self: AuditChain, db: Connection) -> None:
        if not dropped:
            dropped.append(1)
            drop(db)
        original(self, db)

    monkeypatch.setattr(AuditChain, "_end_appending", failing)
    return dropped


def kill_own_backend(db: Connection) -> None:
    """PostgreSQL ends this very connection, as a server restart would."""
    db.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))


def sqlite_fails(db: Connection) -> None:
    raise OperationalError("INSERT INTO events", {}, Exception("disk I/O error"))


def a_batch_survives_a_drop(
    url: str, folder: Path, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch, drop: Any
) -> None:
    values = {
        **service_settings(folder, signing_secret=SIGNING_SECRET, slack=slack),
        "TOCSIN_JOURNAL_URL": url,
    }
    AuditKey.generate(folder / "data" / "audit" / "signing.key")
    with environment_variables(values), settings_journal() as journal:
        gates = {ticket: open_gate(journal, ticket) for ticket in ("DROP-1", "DROP-2")}
        clicks = [
            ("slack", payload(ticket, run_id, "approve", user, gate, n), digest(n))
            for n, (ticket, (run_id, gate), user) in enumerate(
                (t, g, u) for u in APPROVERS[:4] for t, g in gates.items()
            )
        ]
        # The same person again, in the same batch (another signed request of theirs).
        clicks.append((*clicks[0][:2], digest(len(clicks))))
        dropped = drop_once(monkeypatch, drop)
        with gateway_from_settings() as gateway:
            gateway.click_judge.lease_seconds = 1.0  # judged again soon after the failure
            gateway.click_queue.add(clicks)
            gateway.click_judge.wake()
            wait_until(lambda: dropped, what="the failing transaction")
            # nothing of the failed batch was kept: no mark, no decision, no record
            for run_id, _ in gates.values():
                assert journal.decisions_of(run_id) == []
            assert all(
                "decision.received" not in {e["kind"] for e in journal.events_of(t)} for t in gates
            )
            assert all(row["judged_at"] is None for row in rows(journal))
            wait_until(lambda: gateway.click_queue.unjudged() == 0, what="the clicks judged again")
        judged = rows(journal)
        assert len(judged) == len(clicks) and all(row["attempts"] == 2 for row in judged)
        assert [row["outcome"] for row in judged].count(ClickOutcome.REFUSED) == 1
        for ticket, (run_id, _) in gates.items():
            decisions = journal.decisions_of(run_id)
            pending = [d.actor for d in decisions if d.status == DecisionStatus.PENDING]
            assert sorted(pending) == APPROVERS[:4]  # each click decided once
            kinds = [e["kind"] for e in journal.events_of(ticket)]
            assert kinds.count("decision.received") == 4
            assert verified(journal, ticket)


def test_a_batch_whose_sqlite_transaction_fails_loses_nothing(
    slack: FakeSlack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a_batch_survives_a_drop(
        f"sqlite:///{tmp_path / 'journal.db'}", tmp_path, slack, monkeypatch, sqlite_fails
    )


@pytest.mark.postgres
def test_a_batch_whose_postgresql_connection_drops_mid_transaction_loses_nothing(
    slack: FakeSlack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    postgres_url: str,  # noqa: F811
) -> None:
    a_batch_survives_a_drop(postgres_url, tmp_path, slack, monkeypatch, kill_own_backend)
