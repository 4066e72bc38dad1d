"""Signed requests the gateway has handled (webhook deliveries, Slack commands): its replay
protection, across restarts and across gateway processes on one journal."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from tocsin.journal.database import JournalDatabase, now
from tocsin.journal.schema import webhook_deliveries


class WebhookDeliveries(JournalDatabase):
    """The ``webhook_deliveries`` table: claiming a delivery once, forgetting a failed one."""

    def claim_delivery(
        self, source: str, digests: Sequence[str], *, keep_for: timedelta
    ) -> str | None:
        """Record a webhook delivery by its ``digests``: the first of them already recorded
        (nothing is recorded then), or None when the delivery is new. Deliveries of this
        ``source`` recorded more than ``keep_for`` ago are forgotten (each source keeps its
        own for as long as it needs: Jira's an hour, Slack's minutes)."""
        moment = now()
        table = webhook_deliveries
        for _ in range(2):
            try:
                with self.transaction() as db:
                    db.execute(
                        table.delete().where(
                            table.c.source == source, table.c.received_at < moment - keep_for
                        )
                    )
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
