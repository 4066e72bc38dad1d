"""Decisions as journalled: written before the waiting flow hears of them, settled once.

A decision (approve, reject, done) is recorded here first and only then handed to the
flow, so it is never lost; a conditional update settles it, so it is applied at most
once. Judging and delivering one is ``tocsin.decisions``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, insert, select, tuple_, update
from sqlalchemy.engine import Connection, RowMapping

from tocsin.journal.chain import AuditChain
from tocsin.journal.database import aware, now
from tocsin.journal.runs import RunRecord, StepRecord
from tocsin.journal.schema import decisions, runs, steps
from tocsin.statuses import DecisionStatus


@dataclass(frozen=True)
class DecisionRecord:
    id: int
    run_id: int
    step_id: str
    kind: str
    actor: str
    channel: str
    comment: str
    checklist: list[int] | None
    gate_hash: str | None
    status: DecisionStatus
    reason: str | None
    created_at: datetime
    vouched: list[str] | None = None
    outputs: dict[str, Any] | None = None
    """What a person said an interrupted step's action returned (``done``)."""

    @classmethod
    def from_row(cls, row: RowMapping) -> DecisionRecord:
        values = {key: row[key] for key in cls.__dataclass_fields__}
        values["created_at"] = aware(values["created_at"])
        values["status"] = DecisionStatus(values["status"])
        return cls(**values)


GateContext = tuple[RunRecord | None, StepRecord | None, list[str]]
"""A run, its step, and who approved the step's current gate so far (``gate_context``)."""


@dataclass(frozen=True)
class NewDecision:
    """A decision to journal, alone (``record_decision``) or with others in one transaction
    (``add_decisions``), its audit record included: (incident, event kind, data)."""

    run_id: int
    step_id: str
    kind: str
    actor: str
    channel: str
    comment: str = ""
    checklist: Sequence[int] | None = None
    gate_hash: str | None = None
    status: DecisionStatus = DecisionStatus.PENDING
    reason: str | None = None
    vouched: Sequence[str] | None = None
    audit: tuple[str, str, dict[str, Any]] | None = None
    outputs: dict[str, Any] | None = None

    def fields(self, moment: datetime) -> dict[str, Any]:
        """The decision's row (without ``id`` and ``processed_at``)."""
        return {
            "run_id": self.run_id,
            "step_id": self.step_id,
            "kind": self.kind,
            "actor": self.actor,
            "channel": self.channel,
            "comment": self.comment,
            "checklist": list(self.checklist) if self.checklist is not None else None,
            "gate_hash": self.gate_hash,
            "status": self.status,
            "reason": self.reason,
            "created_at": moment,
            "vouched": list(self.vouched) if self.vouched else None,
            "outputs": dict(self.outputs) if self.outputs is not None else None,
        }


class Decisions(AuditChain):
    """The ``decisions`` table: recording decisions, who approved a gate so far, settling."""

    def record_decision(self, entry: NewDecision, *, flushed: bool = True) -> DecisionRecord:
        """Record ``entry``; its audit record, when it has one, is appended in the same
        transaction (the decision and its evidence exist together). ``flushed``: see
        ``JournalDatabase.transaction``."""
        moment = now()
        fields = entry.fields(moment)
        pending = entry.status == DecisionStatus.PENDING

        def write(db: Connection) -> DecisionRecord:
            result = db.execute(
                insert(decisions).values(**fields, processed_at=None if pending else moment)
            )
            key = result.inserted_primary_key
            assert key is not None
            if entry.audit is not None:
                incident, event_kind, data = entry.audit
                self._append(
                    db, incident, event_kind, entry.run_id, entry.step_id, entry.actor, data
                )
            return DecisionRecord(id=int(key[0]), **fields)

        return self._chained_write(write, flushed=flushed)

    def add_decisions(
        self,
        write_first: Callable[[Connection], Collection[int]],
        entries: Sequence[tuple[int, NewDecision]],
        *,
        flushed: bool = True,
    ) -> dict[int, DecisionRecord]:
        """Record many decisions and their audit records in one transaction, each
        ``(key, decision)`` of ``entries`` only when ``write_first`` — called first in the
        same transaction, with it — returns its key among those it wrote (the gateway: the
        queued clicks it marked judged, each click's decision kept only when this marked it).
        The decisions written, by key. All of it or nothing: a transaction that fails
        leaves no decision, no record and no mark.

        The chains of the incidents are locked first, in one order (PostgreSQL: every
        writer of a chain waits for it), and their heads read at once."""
        incidents = sorted({e.audit[0] for _, e in entries if e.audit is not None})

        def write(db: Connection) -> dict[int, DecisionRecord]:
            if db.dialect.name == "sqlite":
                # The write lock from the start: what is read is what is written, even with
                # another process writing at the same instant.
                db.exec_driver_sql("BEGIN IMMEDIATE")
            kept = set(write_first(db))
            chosen = [(key, entry) for key, entry in entries if key in kept]
            if not chosen:
                return {}
            self._begin_appending(db, incidents)
            moment = now()
            rows = [entry.fields(moment) for _, entry in chosen]
            ids = db.execute(
                insert(decisions).returning(decisions.c.id, sort_by_parameter_order=True),
                [
                    {
                        **row,
                        "processed_at": moment if row["status"] != DecisionStatus.PENDING else None,
                    }
                    for row in rows
                ],
            ).scalars()
            written = {
                key: DecisionRecord(id=int(decision_id), **row)
                for (key, _), row, decision_id in zip(chosen, rows, ids, strict=True)
            }
            for _, entry in chosen:
                if entry.audit is not None:
                    incident, event_kind, data = entry.audit
                    self._append(
                        db, incident, event_kind, entry.run_id, entry.step_id, entry.actor, data
                    )
            self._end_appending(db)
            return written

        return self._chained_write(write, flushed=flushed)

    def decision(self, decision_id: int) -> DecisionRecord | None:
        with self.transaction() as db:
            row = (
                db.execute(select(decisions).where(decisions.c.id == decision_id))
                .mappings()
                .first()
            )
        return DecisionRecord.from_row(row) if row else None

    def pending_decisions(self, run_id: int) -> list[DecisionRecord]:
        with self.transaction() as db:
            rows = db.execute(
                select(decisions)
                .where(decisions.c.run_id == run_id, decisions.c.status == DecisionStatus.PENDING)
                .order_by(decisions.c.id)
            ).mappings()
            return [DecisionRecord.from_row(row) for row in rows]

    def decisions_of(self, run_id: int, step_id: str | None = None) -> list[DecisionRecord]:
        query = select(decisions).where(decisions.c.run_id == run_id).order_by(decisions.c.id)
        if step_id is not None:
            query = query.where(decisions.c.step_id == step_id)
        with self.transaction() as db:
            return [DecisionRecord.from_row(row) for row in db.execute(query).mappings()]

    def gate_context(
        self, run_id: int, step_id: str
    ) -> tuple[RunRecord | None, StepRecord | None, list[str]]:
        """In one read: the run, its step, and who approved the step's current gate so far."""
        with self.transaction() as db:
            run_row = db.execute(select(runs).where(runs.c.id == run_id)).mappings().first()
            step_row = (
                db.execute(
                    select(steps).where(steps.c.run_id == run_id, steps.c.step_id == step_id)
                )
                .mappings()
                .first()
            )
            gate = ((step_row["request"] or {}) if step_row else {}).get("gate_hash")
            approvers = (
                list(db.execute(_approvers_query(run_id, step_id, gate)).scalars()) if gate else []
            )
        return (
            RunRecord.from_row(run_row) if run_row else None,
            StepRecord.from_row(step_row) if step_row else None,
            approvers,
        )

    def gate_contexts(
        self, keys: Collection[tuple[int, str]]
    ) -> dict[tuple[int, str], GateContext]:
        """``gate_context`` of each (run id, step id), all in one read (three queries)."""
        wanted = set(keys)
        if not wanted:
            return {}
        run_ids = sorted({run_id for run_id, _ in wanted})
        with self.transaction() as db:
            found_runs = {
                row["id"]: RunRecord.from_row(row)
                for row in db.execute(select(runs).where(runs.c.id.in_(run_ids))).mappings()
            }
            found_steps = {
                (row["run_id"], row["step_id"]): StepRecord.from_row(row)
                for row in db.execute(
                    select(steps).where(tuple_(steps.c.run_id, steps.c.step_id).in_(sorted(wanted)))
                ).mappings()
            }
            approvals = db.execute(
                select(
                    decisions.c.run_id,
                    decisions.c.step_id,
                    decisions.c.actor,
                    decisions.c.gate_hash,
                )
                .where(
                    tuple_(decisions.c.run_id, decisions.c.step_id).in_(sorted(wanted)),
                    decisions.c.kind == "approve",
                    decisions.c.status.in_((DecisionStatus.APPLIED, DecisionStatus.PENDING)),
                )
                .order_by(decisions.c.id)
            ).all()
        by_gate: dict[tuple[int, str], list[tuple[str, str | None]]] = {}
        for row in approvals:
            by_gate.setdefault((row.run_id, row.step_id), []).append((row.actor, row.gate_hash))
        contexts: dict[tuple[int, str], GateContext] = {}
        for key in wanted:
            step = found_steps.get(key)
            gate = ((step.request or {}) if step is not None else {}).get("gate_hash")
            approvers = [
                actor for actor, hash_ in by_gate.get(key, []) if gate and hash_ in (None, gate)
            ]
            contexts[key] = (found_runs.get(key[0]), step, approvers)
        return contexts

    def approvers_so_far(self, run_id: int, step_id: str, gate_hash: str) -> list[str]:
        """Who approved this version of the gate, applied or still pending, oldest first."""
        with self.transaction() as db:
            return list(db.execute(_approvers_query(run_id, step_id, gate_hash)).scalars())

    def settle_decision(
        self, decision_id: int, status: DecisionStatus, reason: str | None = None
    ) -> bool:
        """Mark a pending decision applied or refused; False when another process already did."""
        with self.transaction() as db:
            result = db.execute(
                update(decisions)
                .where(decisions.c.id == decision_id, decisions.c.status == DecisionStatus.PENDING)
                .values(status=DecisionStatus(status), reason=reason, processed_at=now())
            )
        return result.rowcount == 1


def _approvers_query(run_id: int, step_id: str, gate_hash: str) -> Select[str]:
    return (
        select(decisions.c.actor)
        .where(
            decisions.c.run_id == run_id,
            decisions.c.step_id == step_id,
            decisions.c.kind == "approve",
            decisions.c.status.in_((DecisionStatus.APPLIED, DecisionStatus.PENDING)),
            (decisions.c.gate_hash.is_(None)) | (decisions.c.gate_hash == gate_hash),
        )
        .order_by(decisions.c.id)
    )
