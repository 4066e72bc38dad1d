"""The run journal: what each run of a runbook did, durably, step by step.

It is the source of truth for resuming: a step recorded as succeeded is never
executed again for the same incident and runbook, whatever process runs next.
Decisions (approvals, rejections, manual completions) are written here first
and only then handed to the waiting flow, so a decision is never lost, and
each is applied at most once (a conditional update claims it).

Its ``events`` table is the audit trail: one hash chain per incident (see
``tocsin.audit`` and docs/audit.md), with signed ``checkpoints``. Each event is
appended in the same transaction as the step change it describes.

SQLite in Tocsin's data folder by default; any SQLAlchemy URL (PostgreSQL for
shared deployments: ``postgresql+psycopg://...``) through the ``journal_url`` setting.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError

from tocsin.audit import (
    FINISHED_KIND,
    GENESIS,
    AuditKey,
    AuditRecord,
    Checkpoint,
    Verification,
    chain_hash,
    plain_data,
    record_body,
    verify_chain,
)
from tocsin.errors import ConfigurationError
from tocsin.private_paths import private_file

_T = TypeVar("_T")
_APPEND_ATTEMPTS = 50

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("incident", String(64), nullable=False, index=True),
    Column("runbook_id", String(64), nullable=False),
    Column("runbook_version", String(32), nullable=False),
    Column("runbook_digest", String(64), nullable=False),
    Column("inputs", JSON, nullable=False),
    Column("requested_by", String(128), nullable=False),
    Column("requested_via", String(32), nullable=False),
    Column("flow_run_id", String(36)),
    Column("status", String(16), nullable=False),
    Column("owner", String(128)),
    Column("heartbeat_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("incident", "runbook_id", name="one_run_per_incident_runbook"),
)

steps = Table(
    "steps",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", ForeignKey("runs.id"), nullable=False),
    Column("step_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("outputs", JSON),
    Column("error", Text),
    Column("request", JSON),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("waiting_since", DateTime(timezone=True)),
    UniqueConstraint("run_id", "step_id", name="one_row_per_step"),
)

decisions = Table(
    "decisions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", ForeignKey("runs.id"), nullable=False),
    Column("step_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("comment", Text, nullable=False, default=""),
    Column("checklist", JSON),
    Column("gate_hash", String(64)),
    Column("status", String(16), nullable=False),
    Column("reason", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("processed_at", DateTime(timezone=True)),
    # Slack user groups the deciding channel checked the person belongs to (the gateway).
    Column("vouched", JSON),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", ForeignKey("runs.id")),
    Column("incident", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("kind", String(48), nullable=False),
    Column("step_id", String(64)),
    Column("actor", String(128)),
    Column("data", JSON, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    # Two writers that read the same head both try the next number: one wins, the other
    # retries on top of it. The chain never forks.
    UniqueConstraint("incident", "seq", name="one_record_per_place_in_chain"),
)

posts = Table(
    # Messages Tocsin posted about an incident elsewhere (Slack thread, gate message, ticket),
    # so that other processes (the gateway) and later runs update them instead of posting anew.
    "posts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("incident", String(64), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("key", String(128), nullable=False, default=""),
    Column("channel", String(64), nullable=False),
    Column("ts", String(64), nullable=False),
    Column("data", JSON),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("incident", "purpose", "key", name="one_post_per_purpose"),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("incident", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("head", String(64), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("key_id", String(16), nullable=False),
    Column("signature", String(128), nullable=False),
    UniqueConstraint("incident", "seq", name="one_checkpoint_per_record"),
)

webhook_deliveries = Table(
    # Webhook deliveries the gateway has handled, by digest (of the signed body, of the
    # delivery id), so that a replay is refused even after the gateway restarts.
    "webhook_deliveries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("digest", String(64), nullable=False, unique=True),
    Column("source", String(16), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, index=True),
)

sealed_inputs = Table(
    # Secret inputs of runs being started, encrypted; the key travels with the flow run's
    # parameters, so neither Prefect nor this database alone can read them (sealed_inputs.py).
    "sealed_inputs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("incident", String(64), nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
)

ACTIVE_RUN = ("running", "waiting")
FINISHED_STEP = ("succeeded", "skipped", "approved", "done", "timed_out")
HEARTBEAT_STALE_AFTER = timedelta(seconds=45)


def now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything here is UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


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
    status: str
    owner: str | None
    heartbeat_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: RowMapping) -> RunRecord:
        values = dict(row)
        for key in ("heartbeat_at", "created_at", "updated_at"):
            values[key] = _aware(values[key])
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
    status: str
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
            values[key] = _aware(values[key])
        return cls(**values)


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
    status: str
    reason: str | None
    created_at: datetime
    vouched: list[str] | None = None

    @classmethod
    def from_row(cls, row: RowMapping) -> DecisionRecord:
        values = {key: row[key] for key in cls.__dataclass_fields__}
        values["created_at"] = _aware(values["created_at"])
        return cls(**values)


@dataclass(frozen=True)
class PostRecord:
    """A message posted about an incident: where it is, so that it can be updated."""

    incident: str
    purpose: str
    key: str
    channel: str
    ts: str
    data: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: RowMapping) -> PostRecord:
        return cls(**{key: row[key] for key in cls.__dataclass_fields__})


def default_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'journal.db'}"


class Journal:
    """Durable record of runs, steps, decisions and events."""

    def __init__(
        self, url: str, *, audit_key: AuditKey | None = None, checkpoint_every: int = 50
    ) -> None:
        self.url = url
        self.audit_key = audit_key
        self.checkpoint_every = checkpoint_every
        try:
            database = url.removeprefix("sqlite:///").split("?")[0]
            if url.startswith("sqlite:///") and database not in ("", ":memory:"):
                # The journal holds the audit trail and the runs' inputs: only Tocsin's
                # user may read it (SQLite gives its -wal and -shm files the same mode).
                _private_database(Path(database))
            self.engine: Engine = create_engine(url, future=True)
            self._sqlite_lock = threading.RLock() if self.engine.dialect.name == "sqlite" else None
            if self.engine.dialect.name == "sqlite":
                event.listen(self.engine, "connect", _sqlite_pragmas)
            _create_tables(self.engine, url)
        except SQLAlchemyError as exc:
            raise ConfigurationError(
                f"cannot open the run journal at {_safe_url(url)}: {exc.__class__.__name__}",
                "check the journal_url setting and that the database is reachable",
            ) from None

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        # SQLite takes one writer at a time and makes the others sleep and retry (up to
        # 100 ms a time); threads of one process queue here instead, in order.
        if self._sqlite_lock is None:
            with self.engine.begin() as connection:
                yield connection
            return
        with self._sqlite_lock, self.engine.begin() as connection:
            yield connection

    # runs

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
                        status="running",
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
                        status="running",
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

    def run(self, run_id: int) -> RunRecord | None:
        with self.transaction() as db:
            row = db.execute(select(runs).where(runs.c.id == run_id)).mappings().first()
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
        with self.transaction() as db:
            db.execute(update(runs).where(runs.c.id == run_id).values(heartbeat_at=now()))

    # steps

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
    ) -> None:
        """Update (or create) a step's row and record its event, in one durable transaction."""

        def write(db: Connection) -> None:
            changed = db.execute(
                update(steps)
                .where(steps.c.run_id == run_id, steps.c.step_id == step_id)
                .values(**step_values)
            ).rowcount
            if changed == 0:
                db.execute(insert(steps).values(run_id=run_id, step_id=step_id, **step_values))
            self._append(db, incident, event, run_id, step_id, None, event_data)

        self._write(write)

    def add_attempt(self, run_id: int, step_id: str) -> int:
        with self.transaction() as db:
            db.execute(
                update(steps)
                .where(steps.c.run_id == run_id, steps.c.step_id == step_id)
                .values(attempts=steps.c.attempts + 1)
            )
            value = db.execute(
                select(steps.c.attempts).where(steps.c.run_id == run_id, steps.c.step_id == step_id)
            ).scalar_one()
        return int(value)

    # decisions

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
        status: str = "pending",
        reason: str | None = None,
        vouched: Sequence[str] | None = None,
        audit: tuple[str, str, dict[str, Any]] | None = None,
    ) -> DecisionRecord:
        """Record a decision; with ``audit`` = (incident, event kind, data), its audit record
        is appended in the same transaction (the decision and its evidence exist together)."""
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
        }

        def write(db: Connection) -> DecisionRecord:
            result = db.execute(
                insert(decisions).values(
                    **fields, processed_at=moment if status != "pending" else None
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            if audit is not None:
                incident, event_kind, data = audit
                self._append(db, incident, event_kind, run_id, step_id, actor, data)
            return DecisionRecord(id=int(key[0]), **fields)

        return self._write(write)

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
                .where(decisions.c.run_id == run_id, decisions.c.status == "pending")
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
                list(db.execute(self._approvers_query(run_id, step_id, gate)).scalars())
                if gate
                else []
            )
        return (
            RunRecord.from_row(run_row) if run_row else None,
            StepRecord.from_row(step_row) if step_row else None,
            approvers,
        )

    def approvers_so_far(self, run_id: int, step_id: str, gate_hash: str) -> list[str]:
        """Who approved this version of the gate, applied or still pending, oldest first."""
        with self.transaction() as db:
            return list(db.execute(self._approvers_query(run_id, step_id, gate_hash)).scalars())

    @staticmethod
    def _approvers_query(run_id: int, step_id: str, gate_hash: str) -> Any:
        return (
            select(decisions.c.actor)
            .where(
                decisions.c.run_id == run_id,
                decisions.c.step_id == step_id,
                decisions.c.kind == "approve",
                decisions.c.status.in_(("applied", "pending")),
                (decisions.c.gate_hash.is_(None)) | (decisions.c.gate_hash == gate_hash),
            )
            .order_by(decisions.c.id)
        )

    def settle_decision(self, decision_id: int, status: str, reason: str | None = None) -> bool:
        """Mark a pending decision applied or refused; False when another process already did."""
        with self.transaction() as db:
            result = db.execute(
                update(decisions)
                .where(decisions.c.id == decision_id, decisions.c.status == "pending")
                .values(status=status, reason=reason, processed_at=now())
            )
        return result.rowcount == 1

    # posts

    def set_post(
        self,
        incident: str,
        purpose: str,
        *,
        channel: str,
        ts: str,
        key: str = "",
        data: Mapping[str, Any] | None = None,
    ) -> None:
        """Remember (or move) the message posted for ``purpose`` (``thread``, ``gate``...)."""
        values = {"channel": channel, "ts": ts, "data": dict(data or {}), "updated_at": now()}
        for _ in range(3):
            with self.transaction() as db:
                changed = db.execute(
                    update(posts)
                    .where(
                        posts.c.incident == incident, posts.c.purpose == purpose, posts.c.key == key
                    )
                    .values(**values)
                ).rowcount
                if changed:
                    return
                try:
                    with db.begin_nested():
                        db.execute(
                            insert(posts).values(
                                incident=incident, purpose=purpose, key=key, **values
                            )
                        )
                    return
                except IntegrityError:
                    continue  # inserted by another process meanwhile: update it

    def post(self, incident: str, purpose: str, key: str = "") -> PostRecord | None:
        with self.transaction() as db:
            row = (
                db.execute(
                    select(posts).where(
                        posts.c.incident == incident, posts.c.purpose == purpose, posts.c.key == key
                    )
                )
                .mappings()
                .first()
            )
        return PostRecord.from_row(row) if row else None

    # events

    def record(
        self,
        incident: str,
        kind: str,
        /,
        *,
        run_id: int | None = None,
        step_id: str | None = None,
        actor: str | None = None,
        **data: Any,
    ) -> AuditRecord:
        """Append an event to the incident's audit chain, durably, before returning."""
        return self._write(
            lambda db: self._append(db, incident, kind, run_id, step_id, actor, data)
        )

    def events_of(self, incident: str) -> list[dict[str, Any]]:
        """The incident's events as plain dicts, in chain order."""
        with self.transaction() as db:
            rows = db.execute(
                select(events).where(events.c.incident == incident).order_by(events.c.seq)
            ).mappings()
            return [dict(row) for row in rows]

    # the audit chain

    def _write(self, write: Callable[[Connection], _T]) -> _T:
        """Run a transaction that appends to a chain, again when another writer took its place."""
        for attempt in range(1, _APPEND_ATTEMPTS + 1):
            try:
                with self.transaction() as db:
                    return write(db)
            except IntegrityError:
                if attempt == _APPEND_ATTEMPTS:
                    raise
                time.sleep(random.uniform(0, 0.002 * attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def _append(
        self,
        db: Connection,
        incident: str,
        kind: str,
        run_id: int | None,
        step_id: str | None,
        actor: str | None,
        data: Mapping[str, Any],
    ) -> AuditRecord:
        if db.dialect.name == "postgresql":
            # Writers of one incident's chain queue here (until commit) instead of colliding
            # on the (incident, seq) key and retrying; other incidents are not held up.
            db.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:chain))"),
                {"chain": f"tocsin-audit-chain:{incident}"},
            )
        head = db.execute(
            select(events.c.seq, events.c.hash)
            .where(events.c.incident == incident)
            .order_by(events.c.seq.desc())
            .limit(1)
        ).first()
        seq, prev_hash = (head[0] + 1, head[1]) if head else (1, GENESIS)
        moment = now()
        body = record_body(
            incident=incident,
            seq=seq,
            at=moment,
            kind=kind,
            run_id=run_id,
            step_id=step_id,
            actor=actor,
            data=plain_data(data),
            prev_hash=prev_hash,
        )
        digest = chain_hash(body)
        db.execute(
            insert(events).values(
                run_id=run_id,
                incident=incident,
                seq=seq,
                at=moment,
                kind=kind,
                step_id=step_id,
                actor=actor,
                data=body["data"],
                prev_hash=prev_hash,
                hash=digest,
            )
        )
        if self.audit_key is not None:
            # The first record and the end of a run are signed in the same transaction as
            # the record itself: a chain is never unsigned, nor a finished run without its
            # end-of-run checkpoint, even for a moment (verify fails on both).
            if kind == FINISHED_KIND:
                self._insert_checkpoint(db, incident, seq, digest, FINISHED_KIND)
            elif seq == 1:
                self._insert_checkpoint(db, incident, seq, digest, "first")
            elif self.checkpoint_every and seq % self.checkpoint_every == 0:
                self._insert_checkpoint(db, incident, seq, digest, "periodic")
        return AuditRecord(
            incident=incident,
            seq=seq,
            at=moment,
            kind=kind,
            run_id=run_id,
            step_id=step_id,
            actor=actor,
            data=body["data"],
            prev_hash=prev_hash,
            hash=digest,
        )

    def _insert_checkpoint(
        self, db: Connection, incident: str, seq: int, head: str, reason: str
    ) -> Checkpoint:
        assert self.audit_key is not None
        checkpoint = self.audit_key.checkpoint(
            incident=incident, seq=seq, head=head, at=now(), reason=reason
        )
        db.execute(
            insert(checkpoints).values(
                incident=incident,
                seq=seq,
                head=head,
                at=checkpoint.at,
                reason=reason,
                key_id=checkpoint.key_id,
                signature=checkpoint.signature,
            )
        )
        return checkpoint

    def checkpoint(self, incident: str, reason: str) -> Checkpoint | None:
        """Sign the head of the incident's chain now (None when there is no key or no record).

        When the head is already signed, that checkpoint is returned.
        """
        if self.audit_key is None:
            return None

        def write(db: Connection) -> Checkpoint | None:
            head = db.execute(
                select(events.c.seq, events.c.hash)
                .where(events.c.incident == incident)
                .order_by(events.c.seq.desc())
                .limit(1)
            ).first()
            if head is None:
                return None
            existing = (
                db.execute(
                    select(checkpoints).where(
                        checkpoints.c.incident == incident, checkpoints.c.seq == head[0]
                    )
                )
                .mappings()
                .first()
            )
            if existing is not None:
                return _checkpoint_from_row(existing)
            return self._insert_checkpoint(db, incident, head[0], head[1], reason)

        return self._write(write)

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read-only transaction whose every select sees the database as of one instant.

        Reading the records and then the checkpoints in two transactions while writers
        append finds checkpoints over records the first read did not see: a truncation
        that did not happen. SQLite's driver runs selects outside any transaction, so a
        ``BEGIN`` is sent first (WAL gives the read transaction its own snapshot, writers
        go on); PostgreSQL reads at REPEATABLE READ (one snapshot per transaction).
        """
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect() as db:
                db.exec_driver_sql("BEGIN")
                try:
                    yield db
                finally:
                    db.rollback()
            return
        with self.engine.connect() as db:
            db = db.execution_options(isolation_level="REPEATABLE READ")
            with db.begin():
                yield db

    def audit_trail(self, incident: str) -> tuple[list[AuditRecord], list[Checkpoint]]:
        """The incident's records and checkpoints, both read in one snapshot."""
        with self.snapshot() as db:
            return _records_in(db, incident), _checkpoints_in(db, incident)

    def audit_records(self, incident: str) -> list[AuditRecord]:
        with self.transaction() as db:
            return _records_in(db, incident)

    def checkpoints_of(self, incident: str) -> list[Checkpoint]:
        with self.transaction() as db:
            return _checkpoints_in(db, incident)

    def has_chain(self, incident: str) -> bool:
        """Whether the incident has at least one audit record."""
        with self.transaction() as db:
            found = db.execute(
                select(events.c.id).where(events.c.incident == incident).limit(1)
            ).first()
        return found is not None

    def incidents(self) -> list[str]:
        """Every incident with at least one audit record."""
        with self.transaction() as db:
            return list(db.execute(select(events.c.incident).distinct()).scalars())

    def verify(
        self,
        incident: str,
        public_key: Ed25519PublicKey | None,
        *,
        anchor: str | None = None,
    ) -> Verification:
        """Verify the incident's chain as it stands at one instant (one snapshot)."""
        records, signed = self.audit_trail(incident)
        return verify_chain(incident, records, signed, public_key, anchor=anchor)

    # webhook deliveries (the gateway's replay protection)

    def claim_delivery(
        self, source: str, digests: Sequence[str], *, keep_for: timedelta
    ) -> str | None:
        """Record a webhook delivery by its ``digests``: the first of them already recorded
        (nothing is recorded then), or None when the delivery is new. Deliveries recorded
        more than ``keep_for`` ago are forgotten."""
        moment = now()
        table = webhook_deliveries
        for _ in range(2):
            try:
                with self.transaction() as db:
                    db.execute(table.delete().where(table.c.received_at < moment - keep_for))
                    found = set(
                        db.execute(
                            select(table.c.digest).where(table.c.digest.in_(list(digests)))
                        ).scalars()
                    )
                    if found:
                        return next(d for d in digests if d in found)
                    db.execute(
                        table.insert(),
                        [{"digest": d, "source": source, "received_at": moment} for d in digests],
                    )
                    return None
            except IntegrityError:  # another process recorded it at the same moment
                continue
        return digests[0]

    def release_delivery(self, digests: Sequence[str]) -> None:
        """Forget a delivery (it could not be handled: its retry will be)."""
        with self.transaction() as db:
            db.execute(
                webhook_deliveries.delete().where(webhook_deliveries.c.digest.in_(list(digests)))
            )


def _records_in(db: Connection, incident: str) -> list[AuditRecord]:
    rows = db.execute(
        select(events).where(events.c.incident == incident).order_by(events.c.seq)
    ).mappings()
    return [
        AuditRecord(
            incident=row["incident"],
            seq=row["seq"],
            at=_aware(row["at"]) or row["at"],
            kind=row["kind"],
            run_id=row["run_id"],
            step_id=row["step_id"],
            actor=row["actor"],
            data=row["data"],
            prev_hash=row["prev_hash"],
            hash=row["hash"],
        )
        for row in rows
    ]


def _checkpoints_in(db: Connection, incident: str) -> list[Checkpoint]:
    rows = db.execute(
        select(checkpoints).where(checkpoints.c.incident == incident).order_by(checkpoints.c.seq)
    ).mappings()
    return [_checkpoint_from_row(row) for row in rows]


def _checkpoint_from_row(row: RowMapping) -> Checkpoint:
    return Checkpoint(
        incident=row["incident"],
        seq=row["seq"],
        head=row["head"],
        at=_aware(row["at"]) or row["at"],
        reason=row["reason"],
        key_id=row["key_id"],
        signature=row["signature"],
    )


def _create_tables(engine: Engine, url: str) -> None:
    """Create the journal's tables; processes opening a new journal at once all succeed."""
    for attempt in range(5):
        _refuse_unchained_journal(engine, url)
        try:
            metadata.create_all(engine)
            _add_missing_columns(engine)
            return
        except (OperationalError, IntegrityError, ProgrammingError):
            if attempt == 4:
                raise
            time.sleep(0.05 * (attempt + 1))  # another process created them meanwhile


# Columns added after a journal may have been created: (table, column, SQL type).
_ADDED_COLUMNS = (("decisions", "vouched", "JSON"),)


def _add_missing_columns(engine: Engine) -> None:
    """Bring a journal written by an earlier Tocsin up to date (added columns are nullable)."""
    inspector = inspect(engine)
    for table, column, sql_type in _ADDED_COLUMNS:
        present = {c["name"] for c in inspector.get_columns(table)}
        if column not in present:
            with engine.begin() as db:
                db.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")


def _refuse_unchained_journal(engine: Engine, url: str) -> None:
    """A journal written before the audit chain existed cannot be chained after the fact."""
    inspector = inspect(engine)
    if inspector.has_table("events"):
        columns = {column["name"] for column in inspector.get_columns("events")}
        if "hash" not in columns:
            raise ConfigurationError(
                f"the run journal at {_safe_url(url)} was written by an older Tocsin, "
                "before events were hash-chained",
                "move that database aside (keep it as evidence) and start again; "
                "Tocsin will create a new one",
            )


def _private_database(path: Path) -> None:
    try:
        private_file(path)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create the run journal {path}: {exc.strerror}",
            "the data folder (TOCSIN_DATA_DIR) must be writable by the user Tocsin runs as, "
            "and the journal a regular file, not a symbolic link",
        ) from None


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    # WAL lets the CLI read while a flow writes; busy_timeout waits instead of failing.
    cursor.execute("PRAGMA busy_timeout=10000")  # first: switching to WAL may have to wait
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def _safe_url(url: str) -> str:
    """The URL without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
