"""The audit trail as stored: one hash chain of records per incident, and signed checkpoints.

The hashing, signing and verifying rules are in ``tocsin.audit`` (see docs/audit.md); this
module appends records and checkpoints and reads them back. ``_append`` works inside the
caller's transaction, so that the runs and decisions parts write a change and its record
together.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import bindparam, insert, select, text
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

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
from tocsin.journal.database import JournalDatabase, aware, now
from tocsin.journal.schema import checkpoints, events

# Built once: building a statement per record (clauses, coercions, cache keys) cost more
# than the database's own work. Values travel as execution parameters.
_HEAD_OF_CHAIN = (
    select(events.c.seq, events.c.hash)
    .where(events.c.incident == bindparam("chain"))
    .order_by(events.c.seq.desc())
    .limit(1)
)
_INSERT_EVENT = insert(events)
_APPENDED = "tocsin.appended_heads"
"""Where a transaction keeps the heads it appended (``Connection.info``) until it commits."""
_LOCKED = "tocsin.locked_chains"
"""The chains a transaction holds the lock of, with their heads read (``Connection.info``)."""
_HELD_BACK = "tocsin.held_back_records"
"""Records a transaction appending many inserts at once, at the end (``Connection.info``)."""
_HEADS_OF_CHAINS = text(
    "SELECT e.incident, e.seq, e.hash FROM events e JOIN "
    "(SELECT incident, MAX(seq) AS seq FROM events WHERE incident IN :chains GROUP BY incident) h "
    "ON e.incident = h.incident AND e.seq = h.seq"
).bindparams(bindparam("chains", expanding=True))

_T = TypeVar("_T")
_APPEND_ATTEMPTS = 50


class AuditChain(JournalDatabase):
    """Appending to the incidents' audit chains, signing their heads, reading them back."""

    audit_key: AuditKey | None
    """Signs checkpoints; None: the records are chained but nothing is signed."""
    checkpoint_every: int
    """A periodic checkpoint every this many records (0: none)."""
    _heads: dict[str, tuple[int, str]]

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
        return self._chained_write(
            lambda db: self._append(db, incident, kind, run_id, step_id, actor, data)
        )

    def events_of(self, incident: str) -> list[dict[str, Any]]:
        """The incident's events as plain dicts, in chain order."""
        with self.transaction() as db:
            rows = db.execute(
                select(events).where(events.c.incident == incident).order_by(events.c.seq)
            ).mappings()
            return [dict(row) for row in rows]

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

        return self._chained_write(write)

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

    def _chained_write(self, write: Callable[[Connection], _T], *, flushed: bool = True) -> _T:
        """Run a transaction that appends to a chain, again when another writer took its place
        (``flushed``: see ``JournalDatabase.transaction``).

        The head each chain was left at by this object's last commit is remembered, so that
        an append need not read it again. Another writer (the gateway, the CLI) may have
        appended since: then the remembered next number is taken, the insert breaks the
        chain's unique (incident, seq) key, and the transaction runs again, reading the head.
        """
        for attempt in range(1, _APPEND_ATTEMPTS + 1):
            try:
                with self.transaction(flushed=flushed) as db:
                    db.info[_APPENDED] = {}
                    db.info[_LOCKED] = set()  # the info outlives the transaction: reset
                    db.info.pop(_HELD_BACK, None)
                    result = write(db)
                    appended: dict[str, tuple[int, str]] = db.info.pop(_APPENDED)
                    db.info.pop(_LOCKED)
                    assert _HELD_BACK not in db.info, "records appended and not inserted"
            except IntegrityError:
                self._known_heads().clear()
                if attempt == _APPEND_ATTEMPTS:
                    raise
                time.sleep(random.uniform(0, 0.002 * attempt))
            except BaseException:
                self._known_heads().clear()
                raise
            else:
                self._known_heads().update(appended)  # committed: these are the heads now
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _known_heads(self) -> dict[str, tuple[int, str]]:
        """(seq, hash) of each chain's head as this object's last commit left it."""
        if not hasattr(self, "_heads"):
            self._heads = {}
        return self._heads

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
        """Append a record in the transaction ``db`` (run it through ``_chained_write``)."""
        if db.dialect.name == "postgresql" and incident not in db.info.get(_LOCKED, ()):
            # Writers of one incident's chain queue here (until commit) instead of colliding
            # on the (incident, seq) key and retrying; other incidents are not held up.
            db.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:chain))"),
                {"chain": f"tocsin-audit-chain:{incident}"},
            )
        appended: dict[str, tuple[int, str]] = db.info[_APPENDED]
        known = appended.get(incident) or self._known_heads().get(incident)
        if known is None:
            head = db.execute(_HEAD_OF_CHAIN, {"chain": incident}).first()
            known = (head[0], head[1]) if head else (0, GENESIS)
        seq, prev_hash = known[0] + 1, known[1]
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
        record = AuditRecord(
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
        held_back: list[dict[str, Any]] | None = db.info.get(_HELD_BACK)
        if held_back is not None:
            held_back.append(asdict(record))  # inserted with the others (_end_appending)
        else:
            db.execute(_INSERT_EVENT, asdict(record))  # the record's fields are the columns
        appended[incident] = (seq, digest)
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
        return record

    def _begin_appending(self, db: Connection, incidents: list[str]) -> None:
        """Before appending many records to several chains in the transaction ``db`` (run it
        through ``_chained_write``): lock the chains, in one order (PostgreSQL: so that two
        such transactions never wait on each other crosswise), and read their heads at once,
        which are then the heads (every writer of a chain takes its lock first). The records
        appended are then inserted together by ``_end_appending``, in one statement."""
        db.info[_HELD_BACK] = []
        if not incidents:
            return
        chains = sorted(set(incidents))
        if db.dialect.name == "postgresql":
            db.execute(
                text(
                    "SELECT pg_advisory_xact_lock(hashtext(c.chain)) FROM "
                    "unnest(CAST(:chains AS text[])) WITH ORDINALITY AS c(chain, n) ORDER BY c.n"
                ),
                {"chains": [f"tocsin-audit-chain:{chain}" for chain in chains]},
            )
        heads = {
            row[0]: (row[1], row[2]) for row in db.execute(_HEADS_OF_CHAINS, {"chains": chains})
        }
        appended: dict[str, tuple[int, str]] = db.info[_APPENDED]
        for chain in chains:
            if chain not in appended:
                appended[chain] = heads.get(chain, (0, GENESIS))
        db.info.setdefault(_LOCKED, set()).update(chains)

    def _end_appending(self, db: Connection) -> None:
        """Insert the records appended since ``_begin_appending``."""
        rows: list[dict[str, Any]] = db.info.pop(_HELD_BACK, None) or []
        if rows:
            db.execute(_INSERT_EVENT, rows)

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


def _records_in(db: Connection, incident: str) -> list[AuditRecord]:
    rows = db.execute(
        select(events).where(events.c.incident == incident).order_by(events.c.seq)
    ).mappings()
    return [
        AuditRecord(
            incident=row["incident"],
            seq=row["seq"],
            at=aware(row["at"]) or row["at"],
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
        at=aware(row["at"]) or row["at"],
        reason=row["reason"],
        key_id=row["key_id"],
        signature=row["signature"],
    )
