"""Decisions as journalled: written before the waiting flow hears of them, settled once.

A decision (approve, reject, done) is recorded here first and only then handed to the
flow, so it is never lost; a conditional update settles it, so it is applied at most
once. Judging and delivering one is ``tocsin.decisions``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, insert, select, update
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


class Decisions(AuditChain):
    """The ``decisions`` table: recording decisions, who approved a gate so far, settling."""

    def add_decision(
        self,
        *,
        run_id: int,
        step_id: str,
        kind: str,
        actor: str,
        channel: str,
        comment: str = "",
        checklist: Sequence[int] | None = None,
        gate_hash: str | None = None,
        status: DecisionStatus = DecisionStatus.PENDING,
        reason: str | None = None,
        vouched: Sequence[str] | None = None,
        audit: tuple[str, str, dict[str, Any]] | None = None,
        outputs: dict[str, Any] | None = None,
        flushed: bool = True,
    ) -> DecisionRecord:
        """Record a decision; with ``audit`` = (incident, event kind, data), its audit record
        is appended in the same transaction (the decision and its evidence exist together).
        ``flushed``: see ``JournalDatabase.transaction``."""
        moment = now()
        fields: dict[str, Any] = {
            "run_id": run_id,
            "step_id": step_id,
            "kind": kind,
            "actor": actor,
            "channel": channel,
            "comment": comment,
            "checklist": list(checklist) if checklist is not None else None,
            "gate_hash": gate_hash,
            "status": status,
            "reason": reason,
            "created_at": moment,
            "vouched": list(vouched) if vouched else None,
            "outputs": dict(outputs) if outputs is not None else None,
        }

        def write(db: Connection) -> DecisionRecord:
            result = db.execute(
                insert(decisions).values(
                    **fields, processed_at=moment if status != DecisionStatus.PENDING else None
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            if audit is not None:
                incident, event_kind, data = audit
                self._append(db, incident, event_kind, run_id, step_id, actor, data)
            return DecisionRecord(id=int(key[0]), **fields)

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
