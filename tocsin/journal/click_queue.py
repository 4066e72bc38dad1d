"""Clicks acknowledged and not yet judged: a durable queue in the journal's database.

The gateway answers a chat service (Slack allows 3 seconds) once the click is committed
here, and judges it afterwards: whatever the load, an acknowledged click is never lost,
and the answer never waits on a user look-up or on the decisions being written.

- ``ClickWriter``: the gateway's requests hand it their verified payloads; one thread
  writes what has gathered in one transaction (a group commit), every few milliseconds,
  and each request waits for the commit of its own batch.
- ``ClickQueue``: the table (``queued_clicks``): adding a batch, claiming clicks to judge,
  marking them judged. Each click carries the digest of the signed request that brought
  it, unique in the table: the same signed request sent to two gateways (a replay) is
  queued once, in the insert that queues it (no extra round trip), and refused the second
  time; a replay in a batch leaves the batch's other clicks queued. A claim is atomic —
  PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so two gateways take different clicks without
  waiting on each other; SQLite: one writer at a time (``BEGIN IMMEDIATE``) — and lapses
  at ``claimed_until``: a click claimed by a gateway that died is claimed again by the
  next one looking (at its start, or later).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from tocsin.journal.database import JournalDatabase, aware, now
from tocsin.journal.schema import queued_clicks

_log = logging.getLogger("tocsin.gateway")

GROUP_COMMIT_SECONDS = 0.003
"""How long the writer lets clicks gather after the first before it commits them."""
MAX_BATCH = 500
"""Clicks written in one transaction at most."""
PING_AFTER_IDLE_SECONDS = 1.0
"""PostgreSQL: the writer's connection is checked before a batch when idle this long."""
KEPT_JUDGED_FOR = timedelta(days=1)
"""Judged clicks are deleted after this (their decisions and audit records stay)."""


class ClickOutcome(StrEnum):
    """What judging a queued click came to."""

    ACCEPTED = "accepted"
    """It counts: a decision is journalled for the flow to apply."""
    REFUSED = "refused"
    """It does not count; the clicker is told why."""
    UNREADABLE = "unreadable"
    """Nothing could judge it (no integration for its source, a payload no longer read)."""


@dataclass(frozen=True)
class QueuedClick:
    """A click waiting to be judged, as claimed: ``attempts`` counts the claims, this one
    included (more than 1: a gateway claimed it before and may have judged it already)."""

    id: int
    source: str
    payload: str
    received_at: datetime
    attempts: int


_MARK_JUDGED = (
    update(queued_clicks)
    .where(queued_clicks.c.id == bindparam("click_id"), queued_clicks.c.judged_at.is_(None))
    .values(judged_at=bindparam("moment"), outcome=bindparam("verdict"), reason=bindparam("why"))
)


class ClickQueue:
    """The ``queued_clicks`` table over the journal's database; see the module docstring."""

    def __init__(self, database: JournalDatabase) -> None:
        self.database = database

    def add(
        self, clicks: Sequence[tuple[str, str, str]], *, connection: Connection | None = None
    ) -> list[int | None]:
        """Queue (source, payload, request digest) clicks in one flushed transaction; their
        ids, in order. None for a click whose request digest is queued already (by this
        gateway or another, or earlier in the batch): a replayed request, not queued, and
        the rest of the batch is.

        ``connection``: a PostgreSQL connection in autocommit kept by the caller (the
        writer): the batch's one statement is its own transaction, committed and flushed
        when it returns: one round trip, instead of four from the pool (ping, begin,
        insert, commit)."""
        if not clicks:
            return []
        moment = now()
        rows: dict[str, dict[str, Any]] = {}
        for source, payload, digest in clicks:
            rows.setdefault(
                digest,
                {
                    "source": source,
                    "payload": payload,
                    "received_at": moment,
                    "attempts": 0,
                    "request_digest": digest,
                },
            )
        if connection is not None:
            queued = _insert(connection, list(rows.values()))
        else:
            with self.database.transaction() as db:
                queued = _insert(db, list(rows.values()))
        ids: list[int | None] = []
        for _, _, digest in clicks:
            ids.append(queued.pop(digest, None))  # the first click of a digest gets its id
        return ids

    def claim(self, owner: str, limit: int, lease_seconds: float) -> list[QueuedClick]:
        """Claim up to ``limit`` clicks nobody is judging (never judged, and unclaimed or
        their claim lapsed), oldest first, for ``lease_seconds``."""
        moment = now()
        free = (
            select(queued_clicks.c.id)
            .where(
                queued_clicks.c.judged_at.is_(None),
                queued_clicks.c.claimed_until.is_(None) | (queued_clicks.c.claimed_until < moment),
            )
            .order_by(queued_clicks.c.id)
            .limit(limit)
        )
        with self.database.transaction(flushed=False) as db:
            if db.dialect.name == "postgresql":
                free = free.with_for_update(skip_locked=True)
            elif db.dialect.name == "sqlite":
                # The write lock from the start: the rows read are the rows updated, even
                # with another gateway process claiming at the same instant.
                db.exec_driver_sql("BEGIN IMMEDIATE")
            rows = db.execute(
                update(queued_clicks)
                .where(queued_clicks.c.id.in_(free.scalar_subquery()))
                .values(
                    claimed_by=owner,
                    claimed_until=moment + timedelta(seconds=lease_seconds),
                    attempts=queued_clicks.c.attempts + 1,
                )
                .returning(
                    queued_clicks.c.id,
                    queued_clicks.c.source,
                    queued_clicks.c.payload,
                    queued_clicks.c.received_at,
                    queued_clicks.c.attempts,
                )
            ).all()
        claimed = [
            QueuedClick(
                id=row.id,
                source=row.source,
                payload=row.payload,
                received_at=aware(row.received_at) or row.received_at,
                attempts=row.attempts,
            )
            for row in rows
        ]
        return sorted(claimed, key=lambda click: click.id)

    def extend(self, owner: str, ids: Sequence[int], lease_seconds: float) -> None:
        """Keep the claim on clicks still being judged for ``lease_seconds`` more."""
        if not ids:
            return
        with self.database.transaction(flushed=False) as db:
            db.execute(
                update(queued_clicks)
                .where(
                    queued_clicks.c.id.in_(list(ids)),
                    queued_clicks.c.claimed_by == owner,
                    queued_clicks.c.judged_at.is_(None),
                )
                .values(claimed_until=now() + timedelta(seconds=lease_seconds))
            )

    def judged(self, verdicts: Sequence[tuple[int, ClickOutcome, str]]) -> None:
        """Mark clicks judged, (id, outcome, reason) each, in one transaction; a click
        already marked (by a gateway whose claim lapsed) is left as it was.

        Not flushed: lost with the machine's power, the clicks are judged again, and
        judging one again finds the decision it led to (``attempts`` > 1)."""
        if not verdicts:
            return
        moment = now()
        with self.database.transaction(flushed=False) as db:
            db.execute(
                update(queued_clicks)
                .where(
                    queued_clicks.c.id == bindparam("click_id"),
                    queued_clicks.c.judged_at.is_(None),
                )
                .values(judged_at=moment, outcome=bindparam("verdict"), reason=bindparam("why")),
                [
                    {"click_id": click_id, "verdict": ClickOutcome(outcome), "why": reason[:2000]}
                    for click_id, outcome, reason in verdicts
                ],
            )

    def mark_judged(
        self, db: Connection, verdicts: Sequence[tuple[int, ClickOutcome, str]]
    ) -> set[int]:
        """In the caller's transaction ``db``: mark clicks judged, (id, outcome, reason) each;
        the ids marked. A click already marked (by a gateway whose claim lapsed) is left as
        it was, and its id is not among them: what this judge decided of it is not kept.
        The rows are locked until the transaction ends (PostgreSQL ``FOR UPDATE``; SQLite:
        the caller's transaction holds the write lock), so two judges never both mark one."""
        if not verdicts:
            return set()
        unmarked = (
            select(queued_clicks.c.id)
            .where(
                queued_clicks.c.id.in_([click_id for click_id, _, _ in verdicts]),
                queued_clicks.c.judged_at.is_(None),
            )
            .order_by(queued_clicks.c.id)
        )  # locked in one order: two judges never deadlock
        if db.dialect.name == "postgresql":
            unmarked = unmarked.with_for_update()
        free = {int(click_id) for click_id in db.execute(unmarked).scalars()}
        moment = now()
        rows = [
            {"click_id": click_id, "verdict": outcome, "why": reason[:2000], "moment": moment}
            for click_id, outcome, reason in verdicts
            if click_id in free
        ]
        if rows:
            db.execute(_MARK_JUDGED, rows)
        return {click_id for click_id, _, _ in verdicts if click_id in free}

    def unjudged(self) -> int:
        """How many clicks wait to be judged (claimed or not)."""
        with self.database.transaction() as db:
            count = db.execute(
                select(func.count())
                .select_from(queued_clicks)
                .where(queued_clicks.c.judged_at.is_(None))
            ).scalar_one()
        return int(count)

    def outcome(self, click_id: int) -> tuple[ClickOutcome | None, str | None]:
        """(outcome, reason) of a click; (None, None) while it is not judged."""
        with self.database.transaction() as db:
            row = db.execute(
                select(queued_clicks.c.outcome, queued_clicks.c.reason).where(
                    queued_clicks.c.id == click_id
                )
            ).first()
        if row is None or row.outcome is None:
            return None, None
        return ClickOutcome(row.outcome), row.reason

    def prune(self, older_than: timedelta = KEPT_JUDGED_FOR) -> int:
        """Delete clicks judged longer ago than ``older_than``; how many."""
        with self.database.transaction(flushed=False) as db:
            result = db.execute(
                delete(queued_clicks).where(queued_clicks.c.judged_at < now() - older_than)
            )
        return int(result.rowcount or 0)


def _insert(db: Connection, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Insert queued clicks in one statement (PostgreSQL: one round trip); a row whose
    digest is there already is skipped, not an error (the unique index says so). The ids
    of those inserted, by digest."""
    statement = _insert_skipping_queued(db.dialect.name).returning(
        queued_clicks.c.id, queued_clicks.c.request_digest
    )
    return {row.request_digest: int(row.id) for row in db.execute(statement, rows)}


def _insert_skipping_queued(dialect: str) -> Any:
    """``INSERT ... ON CONFLICT (request_digest) DO NOTHING`` into the queue (PostgreSQL,
    SQLite; on another database a replay makes its whole batch fail, still never queued)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert(queued_clicks).on_conflict_do_nothing(
            index_elements=[queued_clicks.c.request_digest]
        )
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(queued_clicks).on_conflict_do_nothing(
            index_elements=[queued_clicks.c.request_digest]
        )
    return insert(queued_clicks)


class ClickWriter:
    """Writes clicks to the queue in batches, one transaction each (a group commit).

    ``submit`` returns a future that is done when the click's batch is committed (its id;
    None: its signed request was queued before, a replay), or failed with the batch's
    error. ``on_commit`` is called after each batch (the gateway's judge is woken at once,
    rather than at its next look)."""

    def __init__(
        self,
        queue: ClickQueue,
        *,
        on_commit: Callable[[], None] = lambda: None,
        gather_seconds: float = GROUP_COMMIT_SECONDS,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self.queue = queue
        self.on_commit = on_commit
        self.gather_seconds = gather_seconds
        self.max_batch = max_batch
        self._waiting: list[tuple[str, str, str, Future[int | None]]] = []
        self._own: Connection | None = None
        self._used_at = 0.0
        self._changed = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="gateway-click-writer", daemon=True)
        self._thread.start()

    def submit(self, source: str, payload: str, request_digest: str) -> Future[int | None]:
        """Queue one click, brought by the signed request ``request_digest`` identifies; the
        future's result is its id once committed, None if that request was queued before."""
        future: Future[int | None] = Future()
        with self._changed:
            if self._closing:
                raise RuntimeError("the click writer is closed")
            self._waiting.append((source, payload, request_digest, future))
            self._changed.notify()
        return future

    def close(self) -> None:
        """Write what was submitted, then stop."""
        with self._changed:
            self._closing = True
            self._changed.notify()
        self._thread.join(timeout=30)

    def _connection(self) -> Connection | None:
        """PostgreSQL: this writer's own connection, in autocommit (made when missing); on
        SQLite, None: the database's transaction, in this process, is as quick."""
        engine = self.queue.database.engine
        if engine.dialect.name != "postgresql":
            return None
        moment = time.monotonic()
        if self._own is not None and moment - self._used_at > PING_AFTER_IDLE_SECONDS:
            # Idle a while: the server may have restarted meanwhile. Found now, before the
            # batch is sent, a new connection takes it and no click is refused.
            try:
                self._own.exec_driver_sql("SELECT 1")
            except DBAPIError:
                self._drop_connection()
        if self._own is None:
            self._own = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        self._used_at = moment
        return self._own

    def _drop_connection(self) -> None:
        """After a failed write: the next batch makes a new connection (the server may have
        restarted; a broken connection is never reused)."""
        if self._own is not None:
            try:
                self._own.invalidate()
                self._own.close()
            except Exception as exc:  # already broken: nothing more to do with it
                _log.debug("closing the click writer's connection: %s", exc)
            self._own = None

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._waiting and not self._closing:
                    self._changed.wait()
                if not self._waiting:
                    self._drop_connection()
                    return  # closing, nothing left
            # Let more clicks gather: one commit (one disk flush) for all of them.
            time.sleep(self.gather_seconds)
            with self._changed:
                batch = self._waiting[: self.max_batch]
                del self._waiting[: self.max_batch]
            self._write(batch)

    def _write(self, batch: list[tuple[str, str, str, Future[int | None]]]) -> None:
        try:
            ids = self.queue.add(
                [(source, payload, digest) for source, payload, digest, _ in batch],
                connection=self._connection(),
            )
        except Exception as exc:  # each request answers with the error (the gateway: 500)
            _log.error("cannot queue %d clicks: %s", len(batch), exc)
            self._drop_connection()
            for *_, future in batch:
                future.set_exception(exc)
            return
        for (*_, future), click_id in zip(batch, ids, strict=True):
            future.set_result(click_id)
        try:
            self.on_commit()
        except Exception:  # the judge looks again on its own soon
            _log.exception("waking the click judge failed")


__all__ = [
    "GROUP_COMMIT_SECONDS",
    "KEPT_JUDGED_FOR",
    "MAX_BATCH",
    "ClickOutcome",
    "ClickQueue",
    "ClickWriter",
    "QueuedClick",
]
