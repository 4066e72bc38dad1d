"""Where Tocsin's Slack messages about an incident are (its thread, each gate message).

Other processes (the gateway, the demo) and later runs find them here and update them
instead of posting anew. The table lives in the journal's database but belongs to the
Slack integration: it is declared here, on its own metadata, and created the first time a
journal is used for Slack (``SlackPosts``). Its name, ``posts``, is the one journals
written before the Slack integration kept it have.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    insert,
    select,
    update,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from tocsin.journal import Journal, now

metadata = MetaData()
posts = Table(
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


class SlackPosts:
    """The ``posts`` table of a journal: the message posted for each purpose of an incident."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        journal.create_tables_of(metadata)

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
            with self.journal.transaction() as db:
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
        with self.journal.transaction() as db:
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
