"""A run's regulatory clocks (GDPR's 72 hours...): started once per run, stopped by a step.

Whether a deadline was met is a fact the report and the regulator rely on, so each start
and stop is an audit record, and a resumed run takes its clocks back from those records.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tocsin.flows.run_state import RunState
from tocsin.journal import now
from tocsin.model import Step


class RegulatoryClocks:
    """The runbook's legal clocks for one run, and their deadlines while they run."""

    def __init__(self, state: RunState) -> None:
        self.state = state
        self.open: dict[str, datetime] = {}  # clock name -> deadline

    def start(self, resumed: bool) -> None:
        """Start the runbook's legal clocks (once per run: a resumed run keeps its clocks)."""
        state = self.state
        started: dict[str, dict[str, Any]] = {}
        stopped: set[str] = set()
        if resumed:
            for recorded in state.journal.events_of(state.incident.ticket):
                if recorded["run_id"] != state.run_id:
                    continue
                if recorded["kind"] == "clock.started":
                    started[recorded["data"]["clock"]] = recorded["data"]
                elif recorded["kind"] == "clock.stopped":
                    stopped.add(recorded["data"]["clock"])
        for name, clock in state.runbook.clocks.items():
            if name in stopped:
                continue
            if name in started:
                self.open[name] = datetime.fromisoformat(started[name]["deadline_at"])
                continue
            from_detection = clock.starts == "detected" and state.incident.detected_at
            starts_at = (
                datetime.fromisoformat(state.incident.detected_at) if from_detection else now()
            )
            if starts_at.tzinfo is None:
                starts_at = starts_at.replace(tzinfo=UTC)
            deadline_at = starts_at + clock.deadline
            self.open[name] = deadline_at
            state.event(
                "clock.started",
                clock=name,
                title=clock.title,
                source=clock.source,
                basis="detected" if from_detection else "run_started",
                stopped_by=clock.stopped_by,
                starts_at=starts_at.isoformat(),
                deadline_at=deadline_at.isoformat(),
            )
            state.report(f"clock {name}: {clock.title} by {deadline_at:%Y-%m-%d %H:%M} UTC")

    def stop(self, step: Step, *, skipped: bool = False) -> None:
        """Stop the clocks ``step`` stops: met or missed, or not required when it was skipped."""
        state = self.state
        for name, clock in state.runbook.clocks.items():
            if clock.stopped_by != step.id:
                continue
            with state.lock:
                deadline_at = self.open.pop(name, None)
            if deadline_at is None:
                continue
            stopped_at = now()
            met = None if skipped else stopped_at <= deadline_at
            state.event(
                "clock.stopped",
                step.id,
                clock=name,
                title=clock.title,
                deadline_at=deadline_at.isoformat(),
                stopped_at=stopped_at.isoformat(),
                met=met,
                reason="step skipped: not required" if skipped else "step completed",
            )
            verdict = "not required" if met is None else ("met" if met else "MISSED")
            state.report(f"clock {name}: {verdict}")


__all__ = ["RegulatoryClocks"]
