"""Opening the journal's database, and its transactions; the clock every record is dated by.

SQLite in Tocsin's data folder by default; any SQLAlchemy URL (PostgreSQL for shared
deployments: ``postgresql+psycopg://...``) through the ``journal_url`` setting.

A database server that cannot be reached, or drops the connection in the middle of a
transaction, raises ``JournalUnavailable``: the transaction is rolled back by the server,
so the record and the change it records are both missing, and whatever was to follow
them does not happen (see docs/faults.md). Connections are checked before use, so a
process outliving a database restart reconnects by itself.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from tocsin.errors import ConfigurationError, JournalUnavailable
from tocsin.journal.schema import create_tables
from tocsin.private_paths import private_file


def now() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything here is UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def default_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'journal.db'}"


_created_by_engine: weakref.WeakKeyDictionary[Engine, set[int]] = weakref.WeakKeyDictionary()
"""For each engine, the integrations' table sets (ids of their module-level MetaData) known
to be there."""
_creating = threading.Lock()


@contextmanager
def opened_database(url: str) -> Iterator[JournalDatabase]:
    """The journal's database at ``url`` (a SQLite file is created 0600, its folders 0700),
    closed afterwards: for an integration's own tables there (an inventory, a ledger)."""
    database = JournalDatabase(url)
    try:
        yield database
    finally:
        database.close()


class JournalDatabase:
    """The journal's database: opened (tables created or brought up to date), one
    transaction at a time per SQLite file."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            database = url.removeprefix("sqlite:///").split("?")[0]
            if url.startswith("sqlite:///") and database not in ("", ":memory:"):
                # The journal holds the audit trail and the runs' inputs: only Tocsin's
                # user may read it (SQLite gives its -wal and -shm files the same mode).
                _private_database(Path(database))
            # A server restarted under a long-lived process (the gateway, a paused run) left
            # dead connections in the pool: ping each before use and reconnect.
            self.engine: Engine = create_engine(
                url, future=True, pool_pre_ping=not url.startswith("sqlite")
            )
            self._sqlite_lock = threading.RLock() if self.engine.dialect.name == "sqlite" else None
            # Commits that need not reach the disk at once go through connections of their
            # own, set once to synchronous=NORMAL (setting it on each commit costs more than
            # the flush it saves). The next flushed commit flushes theirs too: an fsync of
            # the write-ahead log writes all of it, whichever connection wrote it.
            self._unflushed_engine = self.engine
            if self.engine.dialect.name == "sqlite":
                event.listen(self.engine, "connect", _sqlite_pragmas)
                if database not in ("", ":memory:"):  # a second engine: another database
                    self._unflushed_engine = create_engine(url, future=True)
                    event.listen(self._unflushed_engine, "connect", _unflushed_sqlite_pragmas)
            create_tables(self.engine, safe_url(url))
        except SQLAlchemyError as exc:
            raise ConfigurationError(
                f"cannot open the run journal at {safe_url(url)}: {exc.__class__.__name__}",
                "check the journal_url setting and that the database is reachable",
            ) from None

    def create_tables_of(self, metadata: MetaData) -> None:
        """An integration's own tables (``metadata``) in this database, created when missing;
        checked once per engine, whichever thread asks first."""
        with _creating:
            done = _created_by_engine.setdefault(self.engine, set())
            if id(metadata) in done:
                return
            with self.transaction() as db:
                metadata.create_all(db, checkfirst=True)
            done.add(id(metadata))

    def close(self) -> None:
        self.engine.dispose()
        self._unflushed_engine.dispose()

    @contextmanager
    def transaction(self, *, flushed: bool = True) -> Iterator[Connection]:
        """One transaction, committed when the block ends.

        ``flushed``: the commit reaches the disk before this returns (SQLite
        ``synchronous=FULL``; PostgreSQL ``synchronous_commit``), so it survives a power
        cut. ``False``: the commit survives the process being killed (every other process
        sees it at once) but may be lost with the machine's power, until the next flushed
        commit, which flushes it too. For records whose loss is harmless, such as the start
        of an idempotent step (run again, it does the same), where one disk flush less per
        step counts.
        """
        if self._sqlite_lock is None:
            try:
                with self.engine.begin() as connection:
                    if not flushed and connection.dialect.name == "postgresql":
                        connection.exec_driver_sql("SET LOCAL synchronous_commit = off")
                    yield connection
            except DBAPIError as exc:
                if _lost_connection(exc):
                    raise self.unavailable(exc) from None
                raise
            return
        # SQLite takes one writer at a time and makes the others sleep and retry (up to
        # 100 ms a time); threads of one process queue here instead, in order.
        engine = self.engine if flushed else self._unflushed_engine
        with self._sqlite_lock, engine.begin() as connection:
            yield connection

    def unavailable(self, error: DBAPIError) -> JournalUnavailable:
        """The error saying the database cannot be reached, and what happens next."""
        said = " ".join(str(error.orig).split())[:200]
        return JournalUnavailable(
            f"the run journal at {safe_url(self.url)} cannot be reached ({said}); the record "
            "being written was not kept, so nothing that depends on it happened",
            "bring the database back, then `tocsin run` again (same runbook and ticket) "
            "resumes the run where its records stop: a step that was in progress is read back "
            "or waits for a person, never run twice silently",
        )


def _lost_connection(error: DBAPIError) -> bool:
    """The server is down or dropped the connection (not a statement it refused)."""
    if error.connection_invalidated:
        return True
    state = getattr(error.orig, "sqlstate", None)
    if state is None:
        # No SQLSTATE: the driver's own failure to connect or to read an answer.
        return type(error.orig).__name__ in ("OperationalError", "InterfaceError")
    # 08: connection exception; 57P: the administrator or a crash shut the server down.
    return str(state).startswith(("08", "57P"))


def safe_url(url: str) -> str:
    """The URL without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


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


def _unflushed_sqlite_pragmas(connection: Any, _record: Any) -> None:
    """The pragmas of a connection whose commits need not reach the disk at once."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
