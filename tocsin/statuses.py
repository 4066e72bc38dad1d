"""The three state machines of a run: the run itself, each of its steps, each decision.

Each is a ``StrEnum``: a member is the very text the journal stores and the audit
records carry (``StepStatus.SUCCEEDED == "succeeded"``), so the database, the audit
chain and the reports read the same words as before the enums existed.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """The state of a run of one runbook for one incident."""

    RUNNING = "running"
    WAITING = "waiting"  # paused until someone decides a gate, a manual task or an in-doubt step
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"  # someone rejected a gate: the run stopped there
    TIMED_OUT = "timed_out"  # a gate's deadline passed before its quorum was reached


class StepStatus(StrEnum):
    """The state of one step of a run."""

    # Not started yet: only in the template context (``steps.<id>.status``), never stored.
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # its ``when:`` condition was false
    UNDONE = "undone"  # it had succeeded; its undo action reversed it after a later failure
    APPROVED = "approved"
    REJECTED = "rejected"
    DONE = "done"  # a manual task someone marked done
    TIMED_OUT = "timed_out"


class DecisionStatus(StrEnum):
    """The state of one decision (approve, reject, done) someone sent about a waiting step."""

    PENDING = "pending"  # judged and journalled; the flow has not applied it yet
    APPLIED = "applied"
    REFUSED = "refused"


ACTIVE_RUN = (RunStatus.RUNNING, RunStatus.WAITING)
"""Run statuses in which a process is, or should be, working on the run."""

FINISHED_STEP = (
    StepStatus.SUCCEEDED,
    StepStatus.SKIPPED,
    StepStatus.APPROVED,
    StepStatus.DONE,
    StepStatus.TIMED_OUT,
)
"""Step statuses that a later run of the same runbook for the incident never runs again."""
