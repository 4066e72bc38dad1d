"""Where Tocsin's messages about an incident are (Slack thread, gate message, ticket).

Other processes (the gateway) and later runs find them here and update them instead of
posting anew. Self-contained: its table, its record and the reading and writing of both.
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
    String,
    Table,
    UniqueConstraint,
    insert,
    select,
    update,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from tocsin.journal.database import JournalDatabase, now
from tocsin.journal.schema import metadata

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


class Posts(JournalDatabase):
    """The ``posts`` table: the message posted for each purpose of an incident."""

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
