"""Each recipient's delivery of a campaign, in the journal's database (SQLite or PostgreSQL).

A campaign (an incident's step) registers its recipients, each named by the keyed HMAC of
the address (never the address), then moves each one through these statuses, every move
its own committed transaction, written before the next network action::

    pending ─► sending ─► committing ─► sent
                  │            │    └──► refused / retry (the service answered after the dot)
                  │            └───────► in_doubt (found so after a crash, cannot tell)
                  └──► refused / retry (the service said no before the point of no return)

So a process killed at any moment leaves each recipient in a status the next run can act
on: ``sending`` (nothing may have left: send it), ``committing`` (it may have left: ask
the service, else report it in doubt), the rest settled or to retry.

Durability: the move to ``committing`` is flushed to the disk; the others need only survive
the process (the next flushed commit flushes them too). A power cut may forget a ``sent``
(the recipient is then found ``committing``: in doubt, never sent twice) or a ``sending``
(then sent: nothing had left), never a ``committing``.

The table belongs to the notify integration: declared here on its own metadata and created
the first time a journal is used for deliveries (as the PKI's inventory).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
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

from tocsin.errors import ActionError
from tocsin.journal.database import JournalDatabase, aware, default_url, now, opened_database
from tocsin.settings import Settings

DETAIL_LENGTH = 500


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    """Registered; nothing done yet."""
    SENDING = "sending"
    """Claimed by a campaign; nothing past the point of no return yet."""
    COMMITTING = "committing"
    """The sender is at the point of no return: the message may have left."""
    SENT = "sent"
    REFUSED = "refused"
    """Refused for good (bad address, 5xx); ``detail`` says what the service answered."""
    IN_DOUBT = "in_doubt"
    """Committed when a run died, and the service cannot tell whether it left: never sent again."""
    RETRY = "retry"
    """A transient failure: to send again."""


SETTLED = frozenset({DeliveryStatus.SENT, DeliveryStatus.REFUSED, DeliveryStatus.IN_DOUBT})

metadata = MetaData()
deliveries = Table(
    "notify_deliveries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("incident", String(64), nullable=False),
    Column("step_id", String(128), nullable=False),
    Column("recipient", String(128), nullable=False),
    Column("row", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("message_digest", String(80)),
    Column("message_id", String(255)),
    Column("attempts", Integer, nullable=False),
    Column("detail", String(DETAIL_LENGTH)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("incident", "step_id", "recipient", name="one_row_per_delivery"),
)


@dataclass(frozen=True)
class Delivery:
    """One recipient's delivery as the ledger knows it."""

    recipient: str
    row: int
    status: DeliveryStatus
    message_digest: str | None
    message_id: str | None
    attempts: int
    detail: str | None
    updated_at: datetime

    @classmethod
    def from_row(cls, row: RowMapping) -> Delivery:
        updated_at = aware(row["updated_at"])
        assert updated_at is not None
        return cls(
            recipient=row["recipient"],
            row=row["row"],
            status=DeliveryStatus(row["status"]),
            message_digest=row["message_digest"],
            message_id=row["message_id"],
            attempts=row["attempts"],
            detail=row["detail"],
            updated_at=updated_at,
        )


class DeliveryLedger:
    """The ``notify_deliveries`` table of a journal's database."""

    def __init__(self, database: JournalDatabase) -> None:
        self.database = database
        database.create_tables_of(metadata)

    def register(self, incident: str, step_id: str, recipients: Iterable[tuple[str, int]]) -> int:
        """Add each (recipient HMAC, row) not yet there as ``pending``; those already there
        keep their status. How many were added."""
        wanted = dict(recipients)
        with self.database.transaction() as db:
            known = set(
                db.execute(
                    select(deliveries.c.recipient).where(
                        deliveries.c.incident == incident, deliveries.c.step_id == step_id
                    )
                ).scalars()
            )
            new = [
                {
                    "incident": incident,
                    "step_id": step_id,
                    "recipient": recipient,
                    "row": row,
                    "status": DeliveryStatus.PENDING.value,
                    "attempts": 0,
                    "updated_at": now(),
                }
                for recipient, row in wanted.items()
                if recipient not in known
            ]
            if new:
                db.execute(insert(deliveries), new)
        return len(new)

    def deliveries(self, incident: str, step_id: str) -> dict[str, Delivery]:
        """Every recipient of the campaign, by HMAC."""
        with self.database.transaction(flushed=False) as db:
            rows = (
                db.execute(
                    select(deliveries).where(
                        deliveries.c.incident == incident, deliveries.c.step_id == step_id
                    )
                )
                .mappings()
                .all()
            )
        return {row["recipient"]: Delivery.from_row(row) for row in rows}

    # -- moves: each one committed before the caller goes on -------------------------------

    def claim(
        self, incident: str, step_id: str, recipient: str, *, message_digest: str, message_id: str
    ) -> None:
        """``sending``: an attempt begins (counted), for the message with this digest."""
        self._move(
            incident,
            step_id,
            recipient,
            DeliveryStatus.SENDING,
            {DeliveryStatus.PENDING, DeliveryStatus.RETRY, DeliveryStatus.SENDING},
            message_digest=message_digest,
            message_id=message_id,
            detail=None,
            attempted=True,
        )

    def committing(self, incident: str, step_id: str, recipient: str) -> None:
        """``committing``: the sender is at the point of no return (flushed to the disk)."""
        self._move(
            incident,
            step_id,
            recipient,
            DeliveryStatus.COMMITTING,
            {DeliveryStatus.SENDING},
            flushed=True,
        )

    def settle(
        self, incident: str, step_id: str, recipient: str, status: DeliveryStatus, detail: str = ""
    ) -> None:
        """``sent``, ``refused``, ``in_doubt`` or ``retry``, with what the service said."""
        if status not in SETTLED | {DeliveryStatus.RETRY}:
            raise ValueError(f"{status} does not settle a delivery")
        self._move(
            incident,
            step_id,
            recipient,
            status,
            {DeliveryStatus.SENDING, DeliveryStatus.COMMITTING},
            detail=detail[:DETAIL_LENGTH] or None,
        )

    def _move(
        self,
        incident: str,
        step_id: str,
        recipient: str,
        status: DeliveryStatus,
        allowed_from: set[DeliveryStatus],
        *,
        flushed: bool = False,
        attempted: bool = False,
        **values: str | None,
    ) -> None:
        changes: dict[str, object] = {"status": status.value, "updated_at": now(), **values}
        if attempted:
            changes["attempts"] = deliveries.c.attempts + 1
        with self.database.transaction(flushed=flushed) as db:
            changed = db.execute(
                update(deliveries)
                .where(
                    deliveries.c.incident == incident,
                    deliveries.c.step_id == step_id,
                    deliveries.c.recipient == recipient,
                    deliveries.c.status.in_([s.value for s in allowed_from]),
                )
                .values(**changes)
            ).rowcount
        if not changed:
            # A move from a status the row is not in: another run of the same step is sending.
            raise ActionError(
                "notify",
                f"the delivery of step {step_id} to recipient {recipient} cannot become "
                f"{status}: it is not {' or '.join(sorted(allowed_from))}",
                "another run of the same incident's step is sending this campaign: let it "
                "finish, then run the step again (it sends only to whoever is left)",
            )


@contextmanager
def ledger_for(settings: Settings) -> Iterator[DeliveryLedger]:
    """The ledger in the journal's database the settings name (``journal_url``, else SQLite
    in ``data_dir``), closed afterwards."""
    with ledger_at(settings.journal_url or default_url(settings.data_dir)) as ledger:
        yield ledger


@contextmanager
def ledger_at(url: str) -> Iterator[DeliveryLedger]:
    """The ledger in the database at ``url``, closed afterwards."""
    with opened_database(url) as database:
        yield DeliveryLedger(database)
