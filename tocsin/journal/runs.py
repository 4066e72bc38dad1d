"""Runs and their steps: what each run of a runbook did, step by step, and who runs it now.

A step recorded as finished is never executed again for the same incident and runbook,
whatever process runs next; the owner and heartbeat of a run tell whether one still does.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.sql.dml import Insert

from tocsin.errors import JournalUnavailable
from tocsin.journal.chain import AuditChain
from tocsin.journal.database import aware, now
from tocsin.journal.schema import runs, steps
from tocsin.statuses import ACTIVE_RUN, RunStatus, StepStatus

_log = logging.getLogger(__name__)

# A step's row is written twice per step: built once, with values as execution parameters
# (the SET clause is the parameters' column names).
_UPDATE_STEP = update(steps).where(
    steps.c.run_id == bindparam("of_run"), steps.c.step_id == bindparam("of_step")
)
_INSERT_STEP = insert(steps)
_UPSERTS: dict[tuple[str, tuple[str, ...]], Insert] = {}


def _upsert_step(dialect: str, columns: tuple[str, ...]) -> Insert | None:
    """``INSERT ... ON CONFLICT (run_id, step_id) DO UPDATE`` setting ``columns``, built once
    per dialect and set of columns (one statement where an update, then an insert, took two);
    None on a database without it."""
    key = (dialect, columns)
    if key not in _UPSERTS:
        statement: sqlite.Insert | postgresql.Insert
        if dialect == "sqlite":
            statement = sqlite.insert(steps)
        elif dialect == "postgresql":
            statement = postgresql.insert(steps)
        else:
            return None
        _UPSERTS[key] = statement.on_conflict_do_update(
            index_elements=[steps.c.run_id, steps.c.step_id],
            set_={column: statement.excluded[column] for column in columns},
        )
    return _UPSERTS[key]


HEARTBEAT_STALE_AFTER = timedelta(seconds=45)


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class RunRecord:
    id: int
    incident: str
    runbook_id: str
    runbook_version: str
    runbook_digest: str
    inputs: dict[str, Any]
    requested_by: str
    requested_via: str
    flow_run_id: str | None
    status: RunStatus
    owner: str | None
    heartbeat_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: RowMapping) -> RunRecord:
        values = dict(row)
        for key in ("heartbeat_at", "created_at", "updated_at"):
            values[key] = aware(values[key])
        values["status"] = RunStatus(values["status"])
        return cls(**values)

    def is_alive(self, at: datetime | None = None) -> bool:
        """Whether a process is still working on this run.

        On this machine the owner's process id tells at once; elsewhere, a recent heartbeat.
        """
        if self.status not in ACTIVE_RUN or self.heartbeat_at is None:
            return False
        host, _, pid = (self.owner or "").rpartition(":")
        if host == socket.gethostname() and pid.isdigit():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
            return True
        return (at or now()) - self.heartbeat_at < HEARTBEAT_STALE_AFTER


@dataclass(frozen=True)
class StepRecord:
    run_id: int
    step_id: str
    status: StepStatus
    attempts: int
    outputs: dict[str, Any] | None
    error: str | None
    request: dict[str, Any] | None
    started_at: datetime | None
    finished_at: datetime | None
    waiting_since: datetime | None

    @classmethod
    def from_row(cls, row: RowMapping) -> StepRecord:
        values = {key: row[key] for key in cls.__dataclass_fields__}
        for key in ("started_at", "finished_at", "waiting_since"):
            values[key] = aware(values[key])
        values["status"] = StepStatus(values["status"])
        return cls(**values)


class RunsAndSteps(AuditChain):
    """The ``runs`` and ``steps`` tables: opening a run, its steps' progress, its heartbeat."""

    def open_run(
        self,
        *,
        incident: str,
        runbook_id: str,
        runbook_version: str,
        runbook_digest: str,
        inputs: dict[str, Any],
        requested_by: str,
        requested_via: str,
    ) -> tuple[RunRecord, bool]:
        """The run of this runbook for this incident, created if new; True when it existed."""
        moment = now()
        with self.transaction() as db:
            row = (
                db.execute(
                    select(runs).where(runs.c.incident == incident, runs.c.runbook_id == runbook_id)
                )
                .mappings()
                .first()
            )
            if row is None:
                db.execute(
                    insert(runs).values(
                        incident=incident,
                        runbook_id=runbook_id,
                        runbook_version=runbook_version,
                        runbook_digest=runbook_digest,
                        inputs=inputs,
                        requested_by=requested_by,
                        requested_via=requested_via,
                        status=RunStatus.RUNNING,
                        owner=this_process(),
                        heartbeat_at=moment,
                        created_at=moment,
                        updated_at=moment,
                    )
                )
                existed = False
            else:
                db.execute(
                    update(runs)
                    .where(runs.c.id == row["id"])
                    .values(
                        runbook_version=runbook_version,
                        runbook_digest=runbook_digest,
                        inputs=inputs,
                        status=RunStatus.RUNNING,
                        owner=this_process(),
                        heartbeat_at=moment,
                        updated_at=moment,
                    )
                )
                existed = True
            fresh = (
                db.execute(
                    select(runs).where(runs.c.incident == incident, runs.c.runbook_id == runbook_id)
                )
                .mappings()
                .one()
            )
        return RunRecord.from_row(fresh), existed

    def find_run(self, incident: str, runbook_id: str) -> RunRecord | None:
        with self.transaction() as db:
            row = (
                db.execute(
                    select(runs).where(runs.c.incident == incident, runs.c.runbook_id == runbook_id)
                )
                .mappings()
                .first()
            )
        return RunRecord.from_row(row) if row else None

    def runs_of(self, incident: str | None = None) -> list[RunRecord]:
        query = select(runs).order_by(runs.c.created_at)
        if incident is not None:
            query = query.where(runs.c.incident == incident)
        with self.transaction() as db:
            return [RunRecord.from_row(row) for row in db.execute(query).mappings()]

    def set_run(self, run_id: int, **values: Any) -> None:
        with self.transaction() as db:
            db.execute(update(runs).where(runs.c.id == run_id).values(updated_at=now(), **values))

    def heartbeat(self, run_id: int) -> None:
        """Say the run's process is alive. A beat missed while the database is away is
        harmless (the next one says it): the heartbeat goes on rather than end its thread."""
        try:
            with self.transaction() as db:
                db.execute(update(runs).where(runs.c.id == run_id).values(heartbeat_at=now()))
        except JournalUnavailable as away:
            _log.warning("heartbeat of run %s missed: %s", run_id, away.message)

    def step(self, run_id: int, step_id: str) -> StepRecord | None:
        with self.transaction() as db:
            row = (
                db.execute(
                    select(steps).where(steps.c.run_id == run_id, steps.c.step_id == step_id)
                )
                .mappings()
                .first()
            )
        return StepRecord.from_row(row) if row else None

    def steps_of(self, run_id: int) -> list[StepRecord]:
        with self.transaction() as db:
            rows = db.execute(
                select(steps).where(steps.c.run_id == run_id).order_by(steps.c.id)
            ).mappings()
            return [StepRecord.from_row(row) for row in rows]

    def set_step(self, run_id: int, step_id: str, **values: Any) -> StepRecord:
        """Create or update a step's row."""
        with self.transaction() as db:
            existing = db.execute(
                select(steps.c.id).where(steps.c.run_id == run_id, steps.c.step_id == step_id)
            ).first()
            if existing is None:
                db.execute(insert(steps).values(run_id=run_id, step_id=step_id, **values))
            else:
                db.execute(update(steps).where(steps.c.id == existing[0]).values(**values))
            row = (
                db.execute(
                    select(steps).where(steps.c.run_id == run_id, steps.c.step_id == step_id)
                )
                .mappings()
                .one()
            )
        return StepRecord.from_row(row)

    def step_event(
        self,
        run_id: int,
        incident: str,
        step_id: str,
        event: str,
        step_values: dict[str, Any],
        event_data: dict[str, Any],
        *,
        flushed: bool = True,
    ) -> None:
        """Update (or create) a step's row and record its event, in one transaction
        (``flushed``: on disk before this returns; see ``JournalDatabase.transaction``)."""

        def write(db: Connection) -> None:
            upsert = _upsert_step(db.dialect.name, tuple(step_values))
            if upsert is not None and "status" in step_values:
                db.execute(upsert, {"run_id": run_id, "step_id": step_id, **step_values})
            else:
                changed = db.execute(
                    _UPDATE_STEP, {"of_run": run_id, "of_step": step_id, **step_values}
                ).rowcount
                if changed == 0:
                    db.execute(_INSERT_STEP, {"run_id": run_id, "step_id": step_id, **step_values})
            self._append(db, incident, event, run_id, step_id, None, event_data)

        self._chained_write(write, flushed=flushed)
