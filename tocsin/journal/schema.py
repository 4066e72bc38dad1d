"""The journal's tables, and bringing a database up to them (create, add columns, refuse).

An integration keeping a table of its own in the journal's database declares it on its
own metadata and creates it on first use (Slack's ``posts``: ``integrations/slack/posts.py``).
"""

from __future__ import annotations

import time

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    inspect,
)
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from tocsin.errors import ConfigurationError

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
    # The outputs a person gave with `done` for an interrupted step (what the action returned).
    Column("outputs", JSON),
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

queued_clicks = Table(
    # Clicks the gateway acknowledged and has yet to judge (``journal/click_queue.py``): the
    # payload as the chat service sent it, its signature checked. Judged by whichever gateway
    # claims it first; a claim lapses at ``claimed_until``, so a dead gateway's clicks are
    # taken by another. A table missing from an older journal is created by ``create_all``.
    # ``request_digest`` identifies the signed request that brought the click (the SHA-256
    # of its signature): unique, so the same signed request is queued once, whichever
    # gateway receives it, and a replay is refused (``ClickQueue.add``). NULL: queued by a
    # Tocsin from before the column.
    "queued_clicks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("source", String(16), nullable=False),
    Column("payload", Text, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("claimed_by", String(128)),
    Column("claimed_until", DateTime(timezone=True)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("judged_at", DateTime(timezone=True), index=True),
    Column("outcome", String(16)),
    Column("reason", Text),
    Column("request_digest", String(64)),
)
one_click_per_signed_request = Index(
    "one_click_per_signed_request", queued_clicks.c.request_digest, unique=True
)

# Columns added after a journal may have been created: (table, column, SQL type).
_ADDED_COLUMNS = (
    ("decisions", "vouched", "JSON"),
    ("decisions", "outputs", "JSON"),
    ("queued_clicks", "request_digest", "VARCHAR(64)"),
)
# Indexes added after a journal may have been created (on columns added above): (table, index).
ADDED_INDEXES = (("queued_clicks", one_click_per_signed_request),)


def create_tables(engine: Engine, shown_url: str) -> None:
    """Create the journal's tables; processes opening a new journal at once all succeed.

    ``shown_url``: the journal's URL without its password, for the error message.
    """
    for attempt in range(5):
        _refuse_unchained_journal(engine, shown_url)
        try:
            metadata.create_all(engine)
            _add_missing_columns(engine)
            _add_missing_indexes(engine)
            return
        except (OperationalError, IntegrityError, ProgrammingError):
            if attempt == 4:
                raise
            time.sleep(0.05 * (attempt + 1))  # another process created them meanwhile


def _add_missing_columns(engine: Engine) -> None:
    """Bring a journal written by an earlier Tocsin up to date (added columns are nullable)."""
    inspector = inspect(engine)
    for table, column, sql_type in _ADDED_COLUMNS:
        present = {c["name"] for c in inspector.get_columns(table)}
        if column not in present:
            with engine.begin() as db:
                db.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")


def _add_missing_indexes(engine: Engine) -> None:
    """The indexes of ``ADDED_INDEXES`` a journal written by an earlier Tocsin lacks (one
    process creating one while another does: ``create_tables`` tries again)."""
    inspector = inspect(engine)
    for table, index in ADDED_INDEXES:
        if index.name not in {found["name"] for found in inspector.get_indexes(table)}:
            index.create(engine)


def _refuse_unchained_journal(engine: Engine, shown_url: str) -> None:
    """A journal written before the audit chain existed cannot be chained after the fact."""
    inspector = inspect(engine)
    if inspector.has_table("events"):
        columns = {column["name"] for column in inspector.get_columns("events")}
        if "hash" not in columns:
            raise ConfigurationError(
                f"the run journal at {shown_url} was written by an older Tocsin, "
                "before events were hash-chained",
                "move that database aside (keep it as evidence) and start again; "
                "Tocsin will create a new one",
            )
