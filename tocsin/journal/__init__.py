"""The run journal: what each run of a runbook did, durably, step by step.

It is the source of truth for resuming: a step recorded as succeeded is never
executed again for the same incident and runbook, whatever process runs next.
Decisions (approvals, rejections, manual completions) are written here first
and only then handed to the waiting flow, so a decision is never lost, and
each is applied at most once (a conditional update claims it).

Its ``events`` table is the audit trail: one hash chain per incident (see
``tocsin.audit`` and docs/audit.md), with signed ``checkpoints``. Each event is
appended in the same transaction as the change it describes.

One module per part, each holding its tables' reading and writing:

- ``schema``: the tables; creating and migrating a database
- ``database``: opening it (SQLite file or any SQLAlchemy URL), transactions, the clock
- ``chain``: the audit chain: appending records, checkpoints, snapshot reads, verifying
- ``runs``: runs and their steps, heartbeats
- ``decisions``: decisions, who approved a gate so far, settling them
- ``deliveries``: signed requests already handled (the gateway's replay protection)

The ``runs`` and ``decisions`` tables are imported from ``schema``: here those names are the
modules. Where Slack messages are (``posts``) is the Slack integration's table
(``integrations/slack/posts.py``), in the same database.
"""

from __future__ import annotations

from tocsin.audit import AuditKey
from tocsin.journal.database import default_url, now
from tocsin.journal.decisions import DecisionRecord, Decisions
from tocsin.journal.deliveries import WebhookDeliveries
from tocsin.journal.runs import (
    HEARTBEAT_STALE_AFTER,
    RunRecord,
    RunsAndSteps,
    StepRecord,
    this_process,
)
from tocsin.journal.schema import (
    checkpoints,
    events,
    metadata,
    sealed_inputs,
    steps,
    webhook_deliveries,
)
from tocsin.statuses import ACTIVE_RUN, FINISHED_STEP

__all__ = [
    "ACTIVE_RUN",
    "FINISHED_STEP",
    "HEARTBEAT_STALE_AFTER",
    "DecisionRecord",
    "Journal",
    "RunRecord",
    "StepRecord",
    "checkpoints",
    "default_url",
    "events",
    "metadata",
    "now",
    "sealed_inputs",
    "steps",
    "this_process",
    "webhook_deliveries",
]


class Journal(RunsAndSteps, Decisions, WebhookDeliveries):
    """Durable record of runs, steps, decisions and events: every part over one database."""

    def __init__(
        self, url: str, *, audit_key: AuditKey | None = None, checkpoint_every: int = 50
    ) -> None:
        self.audit_key = audit_key
        self.checkpoint_every = checkpoint_every
        super().__init__(url)
