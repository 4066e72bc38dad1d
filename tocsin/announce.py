"""Telling people what a run does, where they are: the incident's Slack thread, its ticket.

The flow calls one ``Announcements`` object at each moment that matters (run started,
steps finished, a gate opened or changed or closed, a reminder, an escalation, a
refused decision, the run's end and its audit anchor). Each ``Announcer`` (Slack,
Jira...) turns those facts into its own messages. Announcing never decides anything:
when Slack or the ticket tool is down, the failure is audited and the run goes on,
and a gate can still be decided from the CLI or the Prefect UI.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tocsin.gates import WaitRequest
from tocsin.statuses import RunStatus, StepStatus


@dataclass(frozen=True)
class RunFacts:
    """What every announcement may say about the run."""

    ticket: str
    run_id: int
    runbook: str
    runbook_title: str
    version: str
    severity: str
    requested_by: str
    requested_via: str
    ticket_url: str = ""
    incident_title: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)
    """Secret inputs already replaced by their HMAC."""
    resumed: bool = False


@dataclass(frozen=True)
class FinishedStep:
    step_id: str
    title: str
    status: StepStatus
    detail: str = ""


@dataclass(frozen=True)
class GateState:
    """A waiting step as people should see it now."""

    step_id: str
    title: str
    request: WaitRequest
    approved_by: tuple[str, ...] = ()
    outcome: str | None = None
    """None while it waits; else approved, rejected, timed_out, done, failed."""
    decided_by: tuple[str, ...] = ()
    comment: str = ""

    @property
    def still_needed(self) -> int:
        return max(0, self.request.quorum - len(set(self.approved_by)))


@dataclass(frozen=True)
class StepProgress:
    """How far a long action has got (a mail campaign)."""

    step_id: str
    title: str
    done: int
    total: int
    what: str
    """What is counted: ``sent``, ``devices isolated``."""

    @property
    def percent(self) -> int:
        return 100 * self.done // self.total if self.total else 100


@dataclass(frozen=True)
class RefusedDecision:
    step_id: str
    actor: str
    decision: str
    channel: str
    reason: str


class Announcer(Protocol):
    """One place where people hear about runs. Every method may raise; the caller audits it."""

    name: str

    def run_started(self, run: RunFacts) -> None: ...

    def steps_finished(self, run: RunFacts, steps: Sequence[FinishedStep]) -> None: ...

    def gate_changed(self, run: RunFacts, gate: GateState) -> None:
        """A gate opened, got a decision, was escalated or closed: show its current state."""
        ...

    def reminder(self, run: RunFacts, gate: GateState, minutes_left: int) -> None: ...

    # An announcer may also have ``step_progress(run, progress: StepProgress)``: a long
    # step's progress (optional, so that announcers written before it keep working); and
    # ``watchdog_found(run, text: str, command: str)``: something of the incident is stuck
    # (``tocsin.watchdog``), with the command that fixes it.

    def decision_refused(self, run: RunFacts, refused: RefusedDecision) -> None: ...

    def run_finished(self, run: RunFacts, status: RunStatus, reason: str) -> None: ...

    def anchor(self, run: RunFacts, seq: int, head: str, key_id: str) -> str:
        """Publish an audit checkpoint's head; returns where (``slack:C1:ts``, ``jira:INC-1``)."""
        ...

    def close(self) -> None: ...


AuditFailure = Callable[[str, str, str], None]
"""Called as (announcer name, what it was doing, error message) when an announcer fails."""


class Announcements:
    """Every configured announcer; a failing one is audited and skipped, never fatal.

    Finished steps are batched: they are sent together at most every
    ``batch_seconds`` (and always before a gate and at the end), so a 30-step
    runbook posts a handful of progress messages, not thirty.
    """

    def __init__(
        self,
        announcers: Sequence[Announcer],
        run: RunFacts,
        *,
        on_failure: AuditFailure,
        batch_seconds: float = 20.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        import threading
        import time

        self.announcers = list(announcers)
        self.run = run
        self.on_failure = on_failure
        self.batch_seconds = batch_seconds
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._pending: list[FinishedStep] = []
        self._last_sent = self._clock()
        self._progress: dict[str, tuple[int, float]] = {}

    def __bool__(self) -> bool:
        return bool(self.announcers)

    def _each(self, doing: str, call: Callable[[Announcer], Any]) -> list[Any]:
        from tocsin.errors import IntegrationError, message_of

        results = []
        for announcer in list(self.announcers):
            try:
                results.append(call(announcer))
            except Exception as exc:  # an outage of Slack or Jira never stops a run
                message = message_of(exc)
                if isinstance(exc, IntegrationError) and not exc.retryable:
                    # A refusal that will not change (no such ticket, no permission): say it once.
                    self.announcers.remove(announcer)
                    message += f"; nothing more is sent to {announcer.name} for this run"
                self.on_failure(announcer.name, doing, message)
        return results

    def run_started(self) -> None:
        self._each("run_started", lambda a: a.run_started(self.run))

    def step_finished(self, step: FinishedStep) -> None:
        with self._lock:
            self._pending.append(step)
            due = self._clock() - self._last_sent >= self.batch_seconds
        if due:
            self.flush()

    def flush(self) -> None:
        """Send the finished steps not yet announced."""
        with self._lock:
            batch, self._pending = self._pending, []
            self._last_sent = self._clock()
        if batch:
            self._each("steps_finished", lambda a: a.steps_finished(self.run, batch))

    def flush_if_due(self) -> None:
        with self._lock:
            due = self._pending and self._clock() - self._last_sent >= self.batch_seconds
        if due:
            self.flush()

    def step_progress(self, step_id: str, title: str, done: int, total: int, what: str) -> None:
        """A long step's progress, to the announcers that show it: at each tenth, at most
        once per ``batch_seconds``, and always when it is complete."""
        progress = StepProgress(step_id, title, done, total, what)
        tenth = progress.percent // 10
        with self._lock:
            last_tenth, last_at = self._progress.get(step_id, (-1, float("-inf")))
            complete = done >= total
            due = tenth != last_tenth and (
                complete or self._clock() - last_at >= self.batch_seconds
            )
            if due:
                self._progress[step_id] = (tenth, self._clock())
        if not due:
            return
        showing = [a for a in self.announcers if getattr(a, "step_progress", None) is not None]
        if showing:
            self._each(
                "step_progress",
                lambda a: a.step_progress(self.run, progress) if a in showing else None,  # type: ignore[attr-defined]
            )

    def gate_changed(self, gate: GateState) -> None:
        self.flush()
        self._each("gate_changed", lambda a: a.gate_changed(self.run, gate))

    def reminder(self, gate: GateState, minutes_left: int) -> None:
        self._each("reminder", lambda a: a.reminder(self.run, gate, minutes_left))

    def decision_refused(self, refused: RefusedDecision) -> None:
        self._each("decision_refused", lambda a: a.decision_refused(self.run, refused))

    def run_finished(self, status: RunStatus, reason: str) -> None:
        self.flush()
        self._each("run_finished", lambda a: a.run_finished(self.run, status, reason))

    def anchor(self, seq: int, head: str, key_id: str) -> list[str]:
        """Where the head was published (empty when no announcer could)."""
        places = self._each("anchor", lambda a: a.anchor(self.run, seq, head, key_id))
        return [place for place in places if place]

    def close(self) -> None:
        self._each("close", lambda a: a.close())
