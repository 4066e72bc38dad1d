"""What the parts of one run share: the runbook and incident, the journal, the announcements,
and the values later steps' templates read. Every event of the run is written through here,
so that secrets are redacted in one place."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from tocsin.action_registry import ActionRegistry
from tocsin.actions import ActionContext, StepSummary
from tocsin.announce import Announcements, FinishedStep, RunFacts
from tocsin.audit import RecordingSecrets, Redactor, redacting_logger
from tocsin.incident import Incident
from tocsin.journal import Journal
from tocsin.model import Step
from tocsin.settings import EnvironmentSecrets, SecretStore, Settings
from tocsin.statuses import StepStatus
from tocsin.validation import LoadedRunbook
from tocsin.vocabulary import step_values, template_context

Report = Callable[[str], None]
PROGRESS_MARK = "\x00progress\x00"
"""Starts a progress line of the run's report: the CLI redraws it in place on a terminal."""


class RunState:
    """One run of one runbook for one incident, as every part of the flow sees it."""

    def __init__(
        self,
        loaded: LoadedRunbook,
        incident: Incident,
        inputs: dict[str, Any],
        *,
        journal: Journal,
        registry: ActionRegistry,
        settings: Settings,
        report: Report,
        redactor: Redactor,
        secrets: SecretStore | None = None,
    ) -> None:
        self.loaded = loaded
        self.runbook = loaded.runbook
        self.incident = incident
        self.inputs = inputs
        self.journal = journal
        self.registry = registry
        self.settings = settings
        self.report = report
        self.redactor = redactor
        self.secrets = RecordingSecrets(secrets or EnvironmentSecrets(), redactor)
        self.secret_inputs = [n for n, spec in self.runbook.inputs.items() if spec.secret]
        redactor.fields(inputs, self.secret_inputs)  # remembered, so scrubbed everywhere
        self.action_logger = redacting_logger("tocsin.actions", redactor)
        # Parallel branches finish in worker threads: they share the step values and clocks.
        self.lock = threading.Lock()
        self._progress_shown: dict[str, int] = {}
        self.run_id = 0  # set once the journal has opened (or found) the run
        self.announce = Announcements([], self.run_facts(), on_failure=self.announce_failed)
        self.steps_context: dict[str, dict[str, Any]] = {
            step.id: step_values({}, StepStatus.PENDING) for step, _ in self.runbook.iter_steps()
        }

    # what templates read ---------------------------------------------------------------------

    def template_context(self) -> dict[str, Any]:
        return template_context(self.runbook, self.incident, self.inputs, self.steps_context)

    def remember(
        self,
        step_id: str,
        status: StepStatus,
        outputs: dict[str, Any] | None,
        *,
        announce: bool = True,
        detail: str = "",
    ) -> None:
        """A step's status and outputs, for later steps' templates (and the incident thread)."""
        with self.lock:
            self.steps_context[step_id] = step_values(outputs or {}, status)
        if announce:
            self.announce.step_finished(
                FinishedStep(step_id, self.runbook.step(step_id).title, status, detail)
            )

    # what is recorded ------------------------------------------------------------------------

    def event(
        self, name: str, /, step_id: str | None = None, actor: str | None = None, **data: Any
    ) -> None:
        self.journal.record(
            self.incident.ticket,
            name,
            run_id=self.run_id,
            step_id=step_id,
            actor=actor,
            **self.redactor.scrub(data),
        )

    def step_event(
        self,
        step: Step,
        event: str,
        step_values: dict[str, Any],
        event_data: dict[str, Any],
        *,
        flushed: bool = True,
    ) -> None:
        """A step's row and its audit record, in one transaction, secrets redacted in both
        (``flushed``: on disk before this returns)."""
        self.journal.step_event(
            self.run_id,
            self.incident.ticket,
            step.id,
            event,
            self.redactor.scrub(step_values),
            self.redactor.scrub(event_data),
            flushed=flushed,
        )

    def step_facts(self, step: Step) -> dict[str, Any]:
        """What the report needs to know of a step besides its id."""
        facts: dict[str, Any] = {
            "title": step.title,
            "phase": step.phase.value if step.phase else None,
        }
        if step.evidence:
            facts["evidence"] = True  # the report shows its outputs under Evidence
        return facts

    def secret_fields(self, step: Step) -> frozenset[str]:
        names = set(step.secret_outputs)
        if step.action is not None and step.action in self.registry:
            names |= self.registry.get(step.action).sensitive
        return frozenset(names)

    def shown_inputs(self) -> dict[str, Any]:
        """The run's inputs with the secret ones redacted, as the journal and people see them."""
        return self.redactor.fields(self.inputs, self.secret_inputs)

    # who is told -----------------------------------------------------------------------------

    def run_facts(self, *, resumed: bool = False) -> RunFacts:
        return RunFacts(
            ticket=self.incident.ticket,
            run_id=self.run_id,
            runbook=self.runbook.runbook,
            runbook_title=self.runbook.title,
            version=self.runbook.version,
            severity=self.runbook.severity.value,
            requested_by=self.incident.requested_by,
            requested_via=self.incident.requested_via,
            ticket_url=self.incident.url,
            incident_title=self.incident.title,
            inputs=self.shown_inputs(),
            resumed=resumed,
        )

    def announce_failed(self, announcer: str, doing: str, error: str) -> None:
        """Slack or the ticket tool could not be told: audited, and the run goes on."""
        self.event("announce.failed", announcer=announcer, doing=doing, error=error)
        self.report(f"could not update {announcer} ({doing}): {error}")

    # what actions get ------------------------------------------------------------------------

    def action_context(self, step_id: str) -> ActionContext:
        return ActionContext(
            incident=self.incident.ticket,
            step_id=step_id,
            secrets=self.secrets,
            settings=self.settings,
            logger=self.action_logger,
            fingerprint=self.redactor.key.redact,
            progress=lambda done, total, what: self.step_progress(step_id, done, total, what),
            history=self.history,
            detected_at=self.incident.detected_at,
            started_at=self.incident.started_at,
        )

    def step_progress(self, step_id: str, done: int, total: int, what: str) -> None:
        """A long action's progress: a bar line for the CLI (at most one per percent) and
        the incident thread's announcers."""
        percent = 100 * done // total if total else 100
        with self.lock:
            if self._progress_shown.get(step_id) == percent and done < total:
                return
            self._progress_shown[step_id] = percent
        filled = percent // 5
        bar = "#" * filled + "." * (20 - filled)
        self.report(f"{PROGRESS_MARK}{step_id}: [{bar}] {percent:3d}% {done}/{total} {what}")
        self.announce.step_progress(step_id, self.runbook.step(step_id).title, done, total, what)

    def history(self) -> list[StepSummary]:
        """The run's steps in runbook order, as ``ActionContext.history`` gives them."""
        rows = {record.step_id: record for record in self.journal.steps_of(self.run_id)}
        summaries: list[StepSummary] = []
        for step, _ in self.runbook.iter_steps():
            with self.lock:
                values = dict(self.steps_context.get(step.id) or {})
            record = rows.get(step.id)
            outputs = values.get("outputs") or {}
            summaries.append(
                StepSummary(
                    step_id=step.id,
                    title=step.title,
                    phase=step.phase.value if step.phase else "",
                    kind=step.kind,
                    action=step.action,
                    status=str(values.get("status") or StepStatus.PENDING),
                    finished_at=record.finished_at.isoformat(timespec="seconds")
                    if record is not None and record.finished_at is not None
                    else "",
                    touches=self._touches(step),
                    completed_by=str(outputs.get("completed_by") or "")
                    if isinstance(outputs, dict)
                    else "",
                )
            )
        return summaries

    def _touches(self, step: Step) -> str:
        if step.action is None or step.action not in self.registry:
            return ""
        definition = self.registry.get(step.action)
        try:
            rendered = definition.render_parameters(step.with_, self.template_context())
            sentence = definition.describe_call(definition.parameters.model_validate(rendered))
        except Exception:  # a step that has not run yet may read values that do not exist yet
            return ""
        return str(self.redactor.scrub(sentence))


__all__ = ["Report", "RunState"]
