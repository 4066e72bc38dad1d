"""The generic Prefect flow that runs a validated runbook for an incident.

Each action step is a Prefect task named like the step (``revoke-sessions``),
with the step's retries and timeout. Approval gates, manual tasks and steps
found in flight after a crash wait for people with ``pause_flow_run`` and a
typed ``HumanDecision`` input, so the Prefect UI shows a form for them too.
Everything that happens is written to the run journal first, which is what
makes a second run of the same incident continue where the first stopped.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from prefect import Task, flow, get_run_logger
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.states import Failed, Running

from tocsin.actions import ActionContext, ActionRegistry
from tocsin.announce import (
    Announcements,
    Announcer,
    FinishedStep,
    GateState,
    RefusedDecision,
    RunFacts,
)
from tocsin.audit import RecordingSecrets, Redactor, redacting_logger
from tocsin.errors import (
    ConfigurationError,
    IntegrationError,
    TemplateError,
    TocsinError,
    message_of,
)
from tocsin.gates import Proposal, WaitRequest, gate_hash, judge
from tocsin.incident import Incident
from tocsin.inputs import resolve_inputs
from tocsin.integration import announcers_for as configured_announcers
from tocsin.integration import head_publishers, usergroup_members
from tocsin.journal import FINISHED_STEP, DecisionRecord, Journal, StepRecord, now
from tocsin.model import ApproverGroup, RunHandlers, Step, is_slack_user_id
from tocsin.running import journal_for
from tocsin.sealed_inputs import discard, unseal
from tocsin.settings import EnvironmentSecrets, SecretStore, Settings, configuration
from tocsin.templating import evaluate_condition, render_value
from tocsin.validation import LoadedRunbook, load_runbook_bytes

MANUAL_TASK_DEFAULT_TIMEOUT = timedelta(days=7)
PAUSE_POLL_SECONDS = 1
PENDING_RECHECK_SECONDS = 60
HEARTBEAT_SECONDS = 10

Report = Callable[[str], None]


class HumanDecision(RunInput):
    """A person's answer to a waiting step (also the form the Prefect UI shows)."""

    step_id: str
    decision: Literal["approve", "reject", "done"]
    actor: str
    comment: str = ""
    checklist: list[int] | None = None
    gate_hash: str | None = None
    decision_id: int | None = None


class StepFailed(Exception):
    def __init__(self, step_id: str, message: str) -> None:
        super().__init__(message)
        self.step_id = step_id
        self.message = message


class RunStopped(Exception):
    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _retryable(task_: Any, task_run: Any, state: State[Any]) -> bool:
    """Retry what can get better by waiting; never a refusal or a wrong configuration."""
    error = state.result(raise_on_failure=False)
    if isinstance(error, IntegrationError):
        return error.retryable
    return not isinstance(error, ConfigurationError | TemplateError)


class RunbookExecution:
    """Runs one runbook for one incident, resuming from the journal."""

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
        self.secrets = RecordingSecrets(
            secrets if secrets is not None else EnvironmentSecrets(), redactor
        )
        self.secret_inputs = [n for n, spec in self.runbook.inputs.items() if spec.secret]
        redactor.fields(inputs, self.secret_inputs)  # remembered, so scrubbed everywhere
        self.action_logger = redacting_logger("tocsin.actions", redactor)
        self.lock = threading.Lock()
        self.run_id = 0
        self.completed: list[Step] = []
        self.known: dict[str, StepRecord] = {}  # step rows as the run found them when it started
        self.attempts: dict[str, int] = {}
        self.open_clocks: dict[str, datetime] = {}
        self.tasks: dict[tuple[str, float | None], Any] = {}
        self.announcers: list[Announcer] = []
        self.announce_problems: list[tuple[str, str]] = []
        self.announce = Announcements([], self.run_facts(), on_failure=self.announce_failed)
        self.steps_context: dict[str, dict[str, Any]] = {
            step.id: {"outputs": {}, "status": "pending"} for step, _ in self.runbook.iter_steps()
        }

    # context --------------------------------------------------------------------------------

    def template_context(self, own: Step | None = None) -> dict[str, Any]:
        return {
            "inputs": {name: self.inputs.get(name) for name in self.runbook.inputs},
            "incident": self.incident.as_template_values(),
            "runbook": {
                "id": self.runbook.runbook,
                "version": self.runbook.version,
                "title": self.runbook.title,
                "severity": self.runbook.severity.value,
            },
            "steps": self.steps_context,
        }

    def remember(
        self,
        step_id: str,
        status: str,
        outputs: dict[str, Any] | None,
        *,
        announce: bool = True,
        detail: str = "",
    ) -> None:
        with self.lock:
            self.steps_context[step_id] = {"outputs": outputs or {}, "status": status}
        if announce:
            self.announce.step_finished(
                FinishedStep(step_id, self.runbook.step(step_id).title, status, detail)
            )

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
            inputs=self.redactor.fields(self.inputs, self.secret_inputs),
            resumed=resumed,
        )

    def announce_failed(self, announcer: str, doing: str, error: str) -> None:
        """Slack or the ticket tool could not be told: audited, and the run goes on."""
        self.event("announce.failed", announcer=announcer, doing=doing, error=error)
        self.report(f"could not update {announcer} ({doing}): {error}")

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
    ) -> None:
        """A step's row and its audit record, in one transaction, secrets redacted in both."""
        self.journal.step_event(
            self.run_id,
            self.incident.ticket,
            step.id,
            event,
            self.redactor.scrub(step_values),
            self.redactor.scrub(event_data),
        )

    def step_facts(self, step: Step) -> dict[str, Any]:
        """What the report needs to know of a step besides its id."""
        return {"title": step.title, "phase": step.phase.value if step.phase else None}

    def secret_fields(self, step: Step) -> frozenset[str]:
        names = set(step.secret_outputs)
        if step.action is not None and step.action in self.registry:
            names |= self.registry.get(step.action).sensitive
        return frozenset(names)

    # the run --------------------------------------------------------------------------------

    def run(self, flow_run_id: str | None) -> dict[str, Any]:
        run, existed = self.journal.open_run(
            incident=self.incident.ticket,
            runbook_id=self.runbook.runbook,
            runbook_version=self.runbook.version,
            runbook_digest=self.loaded.digest,
            inputs=self.redactor.fields(self.inputs, self.secret_inputs),
            requested_by=self.incident.requested_by,
            requested_via=self.incident.requested_via,
        )
        self.run_id = run.id
        self.journal.set_run(run.id, flow_run_id=flow_run_id)
        self.event(
            "run.resumed" if existed else "run.started",
            actor=self.incident.requested_by,
            runbook=self.runbook.runbook,
            version=self.runbook.version,
            digest=self.loaded.digest,
            via=self.incident.requested_via,
            flow_run_id=flow_run_id,
            title=self.runbook.title,
            severity=self.runbook.severity.value,
            ticket_url=self.incident.url,
            incident_title=self.incident.title,
            inputs=self.redactor.fields(self.inputs, self.secret_inputs),
        )
        self.announce = Announcements(
            self.announcers,
            self.run_facts(resumed=existed),
            on_failure=self.announce_failed,
            batch_seconds=self.settings.announce.progress_every_seconds,
        )
        for announcer, problem in self.announce_problems:
            self.announce_failed(announcer, "configure", problem)
        self.announce.run_started()
        self.start_clocks(existed)
        for record in self.journal.steps_of(run.id):
            self.known[record.step_id] = record
            if record.status in FINISHED_STEP or record.status in ("rejected", "undone"):
                self.remember(record.step_id, record.status, record.outputs, announce=False)
        stop_heartbeat = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(stop_heartbeat,), daemon=True)
        beat.start()
        try:
            self.run_sequence(self.runbook.steps)
            status, reason = "succeeded", "every step finished"
        except RunStopped as stop:
            status, reason = stop.status, stop.reason
        finally:
            stop_heartbeat.set()
        self.refuse_late_decisions(run_over=True)
        self.journal.set_run(run.id, status=status, heartbeat_at=None)
        self.event("run.finished", status=status, reason=reason)
        self.report(f"run {status}: {reason}")
        self.announce.run_finished(status, reason)
        self.sign_and_anchor("run.finished")
        self.announce.close()
        return {
            "status": status,
            "reason": reason,
            "steps": {s.step_id: s.status for s in self.journal.steps_of(run.id)},
        }

    # regulatory clocks and checkpoints -------------------------------------------------------

    def start_clocks(self, resumed: bool) -> None:
        """Start the runbook's legal clocks (once per run: a resumed run keeps its clocks)."""
        started: dict[str, dict[str, Any]] = {}
        stopped: set[str] = set()
        if resumed:
            for recorded in self.journal.events_of(self.incident.ticket):
                if recorded["run_id"] != self.run_id:
                    continue
                if recorded["kind"] == "clock.started":
                    started[recorded["data"]["clock"]] = recorded["data"]
                elif recorded["kind"] == "clock.stopped":
                    stopped.add(recorded["data"]["clock"])
        for name, clock in self.runbook.clocks.items():
            if name in stopped:
                continue
            if name in started:
                self.open_clocks[name] = datetime.fromisoformat(started[name]["deadline_at"])
                continue
            from_detection = clock.starts == "detected" and self.incident.detected_at
            starts_at = (
                datetime.fromisoformat(self.incident.detected_at) if from_detection else now()
            )
            if starts_at.tzinfo is None:
                starts_at = starts_at.replace(tzinfo=UTC)
            deadline_at = starts_at + clock.deadline
            self.open_clocks[name] = deadline_at
            self.event(
                "clock.started",
                clock=name,
                title=clock.title,
                source=clock.source,
                basis="detected" if from_detection else "run_started",
                starts_at=starts_at.isoformat(),
                deadline_at=deadline_at.isoformat(),
            )
            self.report(f"clock {name}: {clock.title} by {deadline_at:%Y-%m-%d %H:%M} UTC")

    def stop_clocks(self, step: Step, *, skipped: bool = False) -> None:
        for name, clock in self.runbook.clocks.items():
            if clock.stopped_by != step.id:
                continue
            with self.lock:
                deadline_at = self.open_clocks.pop(name, None)
            if deadline_at is None:
                continue
            stopped_at = now()
            met = None if skipped else stopped_at <= deadline_at
            self.event(
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
            self.report(f"clock {name}: {verdict}")

    def sign_and_anchor(self, reason: str, *, publish: bool = True) -> None:
        """Sign the chain's head; at the end of a run, also publish it outside the database."""
        checkpoint = self.journal.checkpoint(self.incident.ticket, reason)
        if checkpoint is None or not publish:
            return
        places = self.announce.anchor(checkpoint.seq, checkpoint.head, checkpoint.key_id)
        for where in places:  # the incident's Slack thread, its ticket
            self.event(
                "audit.checkpoint_anchored", seq=checkpoint.seq, head=checkpoint.head, where=where
            )
        publishers = head_publishers(self.settings, self.secrets)  # slack.anchor_channel
        if not publishers:
            if places:
                self.report(
                    f"audit head sha256:{checkpoint.head[:16]}… published to "
                    + ", ".join(p.rsplit(":", 1)[0] for p in places)
                )
                self.journal.checkpoint(self.incident.ticket, "anchored")
            return
        text = (
            f"Audit checkpoint for {self.incident.ticket}: record {checkpoint.seq}, "
            f"head sha256:{checkpoint.head} (key {checkpoint.key_id}). Keep this message: "
            f"`tocsin audit verify {self.incident.ticket} --anchor sha256:{checkpoint.head}` "
            "proves later that the audit trail was not cut short."
        )
        for publisher in publishers:
            channel = publisher.place
            try:
                where = publisher.publish(text)
            except Exception as exc:  # Slack down or not configured: audited, never fatal
                message = message_of(exc)
                self.event(
                    "audit.anchor_failed",
                    seq=checkpoint.seq,
                    head=checkpoint.head,
                    channel=channel,
                    error=message,
                )
                self.report(f"audit head not published to {channel}: {message}")
            else:
                self.event(
                    "audit.checkpoint_anchored",
                    seq=checkpoint.seq,
                    head=checkpoint.head,
                    where=where,
                )
                shown = ", ".join([*(p.rsplit(":", 1)[0] for p in places), channel])
                self.report(f"audit head sha256:{checkpoint.head[:16]}… published to {shown}")
        self.journal.checkpoint(self.incident.ticket, "anchored")

    def _heartbeat(self, stop: threading.Event) -> None:
        interval = min(HEARTBEAT_SECONDS, max(1.0, self.settings.announce.progress_every_seconds))
        last_beat = 0.0
        while not stop.wait(interval):
            self.announce.flush_if_due()  # progress of a long step is not held back
            last_beat += interval
            if last_beat >= HEARTBEAT_SECONDS:
                self.journal.heartbeat(self.run_id)
                last_beat = 0.0

    def run_sequence(self, steps: list[Step]) -> None:
        for step in steps:
            self.run_step(step)

    def run_step(self, step: Step) -> None:
        # Only this run changes its steps: the rows read when it started are all there is.
        record = self.known.pop(step.id, None)
        if record is not None and record.status in FINISHED_STEP:
            self.report(f"{step.id}: already {record.status} in an earlier run, not run again")
            return
        if self.skipped_by_condition(step):
            return
        try:
            if step.action is not None:
                if (
                    record is not None
                    and record.status in ("running", "waiting")
                    and not self.rerun_allowed(step, record.status)
                ):
                    # approve runs it again inside the wait; done and reject settle it there
                    self.wait_for_people([step], in_doubt=True)
                    return
                self.run_action(step)
            elif step.parallel is not None:
                self.run_parallel(step)
            else:
                self.wait_for_people([step])
        except StepFailed as failure:
            self.handle_failure(step, failure)

    def skipped_by_condition(self, step: Step) -> bool:
        if step.when is None:
            return False
        try:
            runs = evaluate_condition(step.when, self.template_context())
        except TemplateError as exc:
            raise RunStopped(
                "failed", f"step {step.id}: its condition cannot be evaluated: {exc.message}"
            ) from None
        if runs:
            return False
        self.journal.set_step(self.run_id, step.id, status="skipped", finished_at=now())
        self.remember(step.id, "skipped", {})
        self.event("step.skipped", step.id, condition=step.when)
        self.stop_clocks(step, skipped=True)
        self.report(f"{step.id}: skipped (when: {step.when} is false)")
        return True

    def rerun_allowed(self, step: Step, status: str) -> bool:
        """A step found in flight after a crash runs again only if its action is idempotent."""
        definition = self.registry.get(step.action or "")
        if status == "running" and definition.idempotent:
            self.event(
                "step.resumed_in_flight", step.id, reason="idempotent action, running it again"
            )
            return True
        return False

    # actions --------------------------------------------------------------------------------

    def render_parameters(self, step: Step) -> dict[str, Any]:
        try:
            rendered = self.registry.get(step.action or "").render_parameters(
                step.with_, self.template_context()
            )
        except TemplateError as exc:
            raise StepFailed(step.id, exc.message) from None
        return rendered if isinstance(rendered, dict) else {}

    def make_task(self, step: Step, *, in_thread: bool = False) -> Any:
        """One Prefect task per retry and timeout policy (building one costs milliseconds)."""
        # In a worker thread Prefect cannot interrupt a task; run_parallel enforces it instead.
        timeout = step.timeout.total_seconds() if step.timeout and not in_thread else None
        key = (step.retry.model_dump_json() if step.retry else "", timeout)
        if key not in self.tasks:
            retry = step.retry
            self.tasks[key] = Task(
                self.attempt_action,
                name="runbook-step",
                task_run_name="{task_name}",  # from the call's parameters: revoke-sessions
                retries=(retry.attempts - 1) if retry else 0,
                retry_delay_seconds=retry.delays_seconds() if retry and retry.attempts > 1 else 0,
                retry_condition_fn=_retryable,
                timeout_seconds=timeout,
                cache_policy=NO_CACHE,
                persist_result=False,
            )
        return self.tasks[key]

    def attempt_action(
        self, task_name: str, step: Step, parameters: dict[str, Any]
    ) -> dict[str, Any]:
        """One attempt of an action step (a Prefect task run); journals before and after."""
        assert step.action is not None
        with self.lock:
            attempt = self.attempts[step.id] = self.attempts.get(step.id, 0) + 1
        if attempt > 1:
            self.event("step.retried", step.id, attempt=attempt)
            self.report(f"{step.id}: attempt {attempt}")
        definition = self.registry.get(step.action)
        context = ActionContext(
            incident=self.incident.ticket,
            step_id=step.id,
            secrets=self.secrets,
            settings=self.settings,
            logger=self.action_logger,
        )
        try:
            result = definition.invoke(context, parameters)
        except TocsinError as exc:
            self.event("step.attempt_failed", step.id, attempt=attempt, error=exc.message)
            # Prefect keeps a failed task's message: a secret quoted in it is redacted first.
            exc.message = self.redactor.scrub(exc.message)
            exc.hint = self.redactor.scrub(exc.hint)
            exc.args = tuple(self.redactor.scrub(list(exc.args)))
            raise
        outputs = dict(result)
        if step.outputs:
            extra = render_value(step.outputs, {**self.template_context(), "result": result})
            outputs.update(extra if isinstance(extra, dict) else {})
        recorded = self.redactor.fields(outputs, self.secret_fields(step))
        self.step_event(
            step,
            "step.succeeded",
            {
                "status": "succeeded",
                "outputs": recorded,
                "finished_at": now(),
                "error": None,
                "attempts": attempt,
            },
            {"outputs": recorded, "attempts": attempt},
        )
        if definition.communicates:
            sent = outputs.get("sent", 1)
            self.event(
                "message.sent",
                step.id,
                channel=definition.communicates,
                action=step.action,
                count=sent if isinstance(sent, int) and not isinstance(sent, bool) else 1,
            )
        self.remember(step.id, "succeeded", outputs)
        self.stop_clocks(step)
        return outputs

    def start_action(self, step: Step, *, in_thread: bool = False) -> tuple[Any, dict[str, Any]]:
        parameters = self.render_parameters(step)
        self.step_event(
            step,
            "step.started",
            {"status": "running", "started_at": now(), "error": None},
            {
                "action": step.action,
                "parameters": self.redactor.fields(parameters, self.secret_fields(step)),
                **self.step_facts(step),
            },
        )
        self.report(f"{step.id}: {step.title} ({step.action})")
        return self.make_task(step, in_thread=in_thread), parameters

    def run_action(self, step: Step) -> None:
        action_task, parameters = self.start_action(step)
        try:
            action_task(step.task_name, step, parameters)
        except Exception as exc:  # the action's own error, after Prefect's retries
            self.action_failed(step, exc)
        else:
            self.completed.append(step)
            self.report(f"{step.id}: succeeded")

    def action_failed(self, step: Step, exc: BaseException) -> None:
        message = message_of(exc)
        self.step_event(
            step,
            "step.failed",
            {
                "status": "failed",
                "error": message,
                "finished_at": now(),
                "attempts": self.attempts.get(step.id, 0),
            },
            {"error": message},
        )
        self.remember(step.id, "failed", {}, detail=message)
        self.report(f"{step.id}: failed: {message}")
        raise StepFailed(step.id, message)

    # parallel -------------------------------------------------------------------------------

    def run_parallel(self, block: Step) -> None:
        assert block.parallel is not None
        self.report(f"{block.id}: {len(block.parallel)} branches at the same time")
        self.journal.set_step(self.run_id, block.id, status="running", started_at=now())
        branches = _flatten(block.parallel)
        futures: list[tuple[Step, Any]] = []
        people: list[Step] = []
        failures: list[StepFailed] = []
        for branch in branches:
            record = self.journal.step(self.run_id, branch.id)
            if record is not None and record.status in FINISHED_STEP:
                continue
            if self.skipped_by_condition(branch):
                continue
            if branch.action is None:
                people.append(branch)
                continue
            if (
                record is not None
                and record.status == "running"
                and not self.rerun_allowed(branch, record.status)
            ):
                people.append(branch)
                continue
            try:
                action_task, parameters = self.start_action(branch, in_thread=True)
            except StepFailed as failure:
                failures.append(failure)
                continue
            futures.append((branch, action_task.submit(branch.task_name, branch, parameters)))
        if people:
            try:
                self.wait_for_people(people, in_doubt_actions=True)
            except StepFailed as failure:
                failures.append(failure)
        for branch, future in futures:
            limit = branch.timeout.total_seconds() if branch.timeout else None
            try:
                future.result(timeout=limit)
            except TimeoutError:
                try:
                    self.action_failed(branch, TimeoutError(f"did not finish within {limit:g} s"))
                except StepFailed as failure:
                    failures.append(failure)
            except Exception as exc:
                try:
                    self.action_failed(branch, exc)
                except StepFailed as failure:
                    failures.append(failure)
            else:
                self.completed.append(branch)
                self.report(f"{branch.id}: succeeded")
        blocking: list[StepFailed] = []
        for problem in failures:
            branch = next(b for b in branches if b.id == problem.step_id)
            if branch.on_failure == "continue":
                self.report(f"{branch.id}: failure ignored (on_failure: continue)")
                continue
            if isinstance(branch.on_failure, RunHandlers):
                self.run_handlers(branch.on_failure.run)
            blocking.append(problem)
        if blocking:
            message = "; ".join(f"{f.step_id}: {f.message}" for f in blocking)
            self.journal.set_step(
                self.run_id, block.id, status="failed", error=message, finished_at=now()
            )
            raise StepFailed(block.id, message)
        self.journal.set_step(self.run_id, block.id, status="succeeded", finished_at=now())
        self.remember(block.id, "succeeded", {})

    # failures -------------------------------------------------------------------------------

    def handle_failure(self, step: Step, failure: StepFailed) -> None:
        policy = step.on_failure
        if policy == "continue":
            self.event("step.failure_ignored", step.id, error=failure.message)
            self.report(f"{step.id}: failure ignored (on_failure: continue)")
            return
        if isinstance(policy, RunHandlers):
            self.run_handlers(policy.run)
        self.undo_completed()
        raise RunStopped("failed", f"step {failure.step_id} failed: {failure.message}")

    def run_handlers(self, handler_ids: list[str]) -> None:
        for handler_id in handler_ids:
            handler = self.runbook.step(handler_id)
            self.report(f"{handler_id}: running failure handler")
            try:
                self.run_step(handler)
            except RunStopped as stop:
                self.event("handler.failed", handler_id, reason=stop.reason)

    def undo_completed(self) -> None:
        for step in reversed([s for s in self.completed if s.undo is not None]):
            assert step.undo is not None
            definition = self.registry.get(step.undo.action)
            try:
                parameters = definition.render_parameters(step.undo.with_, self.template_context())
                context = ActionContext(
                    incident=self.incident.ticket,
                    step_id=step.id,
                    secrets=self.secrets,
                    settings=self.settings,
                    logger=self.action_logger,
                )
                Task(
                    definition.invoke,
                    name=f"undo-{step.task_name}",
                    task_run_name=f"undo-{step.task_name}",
                    cache_policy=NO_CACHE,
                    persist_result=False,
                )(context, parameters)
            except Exception as exc:
                message = exc.message if isinstance(exc, TocsinError) else str(exc)
                self.event("step.undo_failed", step.id, error=message)
                self.report(f"{step.id}: undo FAILED: {message}; reverse it by hand")
                continue
            self.journal.set_step(self.run_id, step.id, status="undone")
            self.remember(step.id, "undone", self.steps_context[step.id]["outputs"])
            self.event(
                "step.undone",
                step.id,
                action=step.undo.action,
                parameters=self.redactor.fields(parameters, definition.sensitive),
            )
            self.report(f"{step.id}: undone with {step.undo.action}")

    # people ---------------------------------------------------------------------------------

    def open_wait(self, step: Step, *, in_doubt: bool) -> WaitRequest:
        existing = self.journal.step(self.run_id, step.id)
        requester = self.incident.requested_by
        if in_doubt:
            request = WaitRequest(
                kind="in_doubt",
                prompt=(
                    f"Step {step.id} ({step.action}) was running when the previous run stopped, and "
                    "its action is not idempotent. Check whether it took effect: approve to run it "
                    "again, done if it took effect, reject to stop the run."
                ),
                deadline=(now() + MANUAL_TASK_DEFAULT_TIMEOUT).isoformat(),
                requester=requester,
                gate_hash=gate_hash(self.loaded.digest, step.id, {"in_doubt": step.id}),
                **self.deciders(step.id, self.in_doubt_deciders(step)),
            )
        elif step.approval is not None:
            gate = step.approval
            guarded = self.guarded_parameters(step)
            digest = gate_hash(self.loaded.digest, step.id, guarded)
            group = self.runbook.approver_groups[gate.approvers]
            deadline = now() + gate.timeout
            if existing is not None and existing.request and existing.status == "waiting":
                previous = WaitRequest.from_data(existing.request)
                if previous.gate_hash == digest:
                    deadline = previous.deadline_at
            # A requester without a Slack identity could approve their own run unnoticed:
            # one more approver than the quorum is needed then (said at the gate).
            known = is_slack_user_id(requester) or self.settings.mode == "sandbox"
            request = WaitRequest(
                kind="approval",
                prompt=str(render_value(gate.prompt, self.template_context())),
                deadline=deadline.isoformat(),
                requester=requester,
                gate_hash=digest,
                approvers=self.eligible_approvers(step.id, group.users, group.usergroup),
                usergroups=[group.usergroup] if group.usergroup else [],
                group=gate.approvers,
                quorum=gate.quorum + (0 if known else 1),
                guarded=guarded,
                requester_known=known,
            )
        else:
            assert step.manual is not None
            timeout = step.timeout or MANUAL_TASK_DEFAULT_TIMEOUT
            assignee = step.manual.assignee
            deciding = (
                self.group_named(assignee)
                if assignee in self.runbook.approver_groups
                else self.group_named(self.runbook.operators)
            )
            request = WaitRequest(
                kind="manual",
                prompt=str(render_value(step.manual.instructions, self.template_context())).strip(),
                deadline=(now() + timeout).isoformat(),
                requester=requester,
                gate_hash=gate_hash(self.loaded.digest, step.id, {}),
                checklist=[
                    str(render_value(item, self.template_context()))
                    for item in step.manual.checklist
                ],
                **self.deciders(step.id, deciding),
            )
        # A secret input templated into a prompt or a checklist is shown and stored redacted.
        request = WaitRequest.from_data(self.redactor.scrub(request.as_data()))
        self.journal.set_step(
            self.run_id,
            step.id,
            status="waiting",
            request=request.as_data(),
            waiting_since=(
                existing.waiting_since
                if existing and existing.waiting_since and existing.status == "waiting"
                else now()
            ),
        )
        self.event(
            f"{request.kind}.requested", step.id, **request.as_data(), **self.step_facts(step)
        )
        self.sign_and_anchor("waiting", publish=False)
        self.announce.gate_changed(
            GateState(step.id, step.title, request, tuple(self.approvals_of(step.id, request)))
        )
        if not request.requester_known:
            self.report(
                f"{step.id}: {requester} has no known Slack identity, so they could not be told "
                f"apart from an approver: one more approval is needed (quorum {request.quorum})"
            )
        verb = {"approval": "approve", "manual": "done", "in_doubt": "approve"}[request.kind]
        who = f" by {request.group} (quorum {request.quorum})" if request.kind == "approval" else ""
        self.report(
            f"{step.id}: waiting{who} until {request.deadline_at:%Y-%m-%d %H:%M} UTC — "
            f"tocsin {verb} {self.incident.ticket} {step.id} --as USER"
        )
        return request

    def eligible_approvers(
        self, step_id: str, users: list[str], usergroup: str | None
    ) -> list[str]:
        """The people listed by id, plus the members of the Slack user group as Slack says now."""
        people = set(users)
        if usergroup:
            try:
                members = usergroup_members(self.settings, self.secrets, usergroup)
            except TocsinError as exc:
                self.event(
                    "approval.group_lookup_failed", step_id, usergroup=usergroup, error=exc.message
                )
                self.report(
                    f"{step_id}: cannot list Slack user group {usergroup} ({exc.message}); "
                    "only people listed by id can decide for now"
                )
            else:
                people.update(members)
        return sorted(people)

    def deciders(self, step_id: str, groups: list[tuple[str, ApproverGroup]]) -> dict[str, Any]:
        """Who may decide a manual task or an in-doubt step: the groups, or (sandbox) anyone."""
        if not groups:
            # Deny by default live; the sandbox lets anyone try a runbook that names nobody.
            return {"open_to_anyone": self.settings.mode == "sandbox", "group": ""}
        people: set[str] = set()
        for _, group in groups:
            people.update(self.eligible_approvers(step_id, group.users, group.usergroup))
        return {
            "approvers": sorted(people),
            "usergroups": [g.usergroup for _, g in groups if g.usergroup],
            "group": "+".join(name for name, _ in groups),
        }

    def group_named(self, name: str | None) -> list[tuple[str, ApproverGroup]]:
        group = self.runbook.approver_groups.get(name) if name else None
        return [(name, group)] if name and group is not None else []

    def in_doubt_deciders(self, step: Step) -> list[tuple[str, ApproverGroup]]:
        """Running an interrupted destructive step again takes the people of the gate that
        guarded it (its escalation group too, who may have approved it), else the runbook's
        operators."""
        for candidate, _ in self.runbook.iter_steps():
            gate = candidate.approval
            if gate is None:
                continue
            covered = [self.runbook.step(i) for i in self.guarded_ids(candidate)]
            if step.id in {s.id for s in _flatten(covered)} | {s.id for s in covered}:
                return self.group_named(gate.approvers) + self.group_named(gate.escalate_to)
        return self.group_named(self.runbook.operators)

    def guarded_ids(self, gate_step: Step) -> list[str]:
        """The steps a gate's decision covers: its ``guards:``, else the steps up to the next gate."""
        assert gate_step.approval is not None
        if gate_step.approval.guards is not None:
            return list(gate_step.approval.guards)
        ids: list[str] = []
        found = False
        for step in self.runbook.steps:
            if step.id == gate_step.id:
                found = True
                continue
            if found:
                if step.approval is not None:
                    break
                ids.append(step.id)
        return ids

    def guarded_parameters(self, gate_step: Step) -> dict[str, Any]:
        guarded: dict[str, Any] = {}
        for step_id in self.guarded_ids(gate_step):
            step = self.runbook.step(step_id)
            if step.action is not None:
                try:
                    rendered = self.registry.get(step.action).render_parameters(
                        step.with_, self.template_context()
                    )
                    guarded[step_id] = {
                        "action": step.action,
                        "with": self.redactor.fields(rendered, self.secret_fields(step))
                        if isinstance(rendered, dict)
                        else rendered,
                    }
                except TemplateError:
                    guarded[step_id] = {"action": step.action, "with": step.with_}
                    continue
                touches = self.touches(step, rendered)
                if touches:
                    guarded[step_id]["touches"] = self.redactor.scrub(touches)
        return guarded

    def touches(self, step: Step, parameters: Any) -> str | None:
        """What a guarded step will touch, in the action's own words (as `tocsin plan` says)."""
        if (
            step.action is None
            or step.action not in self.registry
            or not isinstance(parameters, dict)
        ):
            return None
        definition = self.registry.get(step.action)
        try:
            return definition.describe_call(definition.parameters.model_validate(parameters))
        except Exception:  # parameters the action will refuse: the step fails and says why
            return None

    def approvals_of(self, step_id: str, request: WaitRequest) -> list[str]:
        return [
            d.actor
            for d in self.journal.decisions_of(self.run_id, step_id)
            if d.status == "applied"
            and d.kind == "approve"
            and d.gate_hash in (None, request.gate_hash)
        ]

    def wait_for_people(
        self, waiting: list[Step], *, in_doubt: bool = False, in_doubt_actions: bool = False
    ) -> None:
        """Wait until every step has been decided; raise for rejections and failures."""
        open_steps: dict[str, tuple[Step, WaitRequest]] = {}
        for step in waiting:
            doubt = in_doubt or (in_doubt_actions and step.action is not None)
            open_steps[step.id] = (step, self.open_wait(step, in_doubt=doubt))
        self.journal.set_run(self.run_id, status="waiting")
        rejected: list[str] = []
        failures: list[StepFailed] = []
        reruns: list[Step] = []
        while open_steps:
            self.apply_decisions(open_steps, rejected, failures, reruns)
            if not open_steps:
                break
            moment = now()
            for step, request in list(open_steps.values()):
                if request.deadline_at <= moment:
                    self.time_out(step, request, open_steps, failures)
                elif not request.reminded and self.reminder_at(step, request) <= moment:
                    self.remind(step, request)
            if not open_steps:
                break
            wake_up = [r.deadline_at for _, r in open_steps.values()] + [
                self.reminder_at(s, r) for s, r in open_steps.values() if not r.reminded
            ]
            remaining = min(wake_up) - now()
            try:
                answer = pause_flow_run(
                    wait_for_input=HumanDecision,
                    # Woken at least every minute: a decision journalled while this run was
                    # between two pauses (so nobody could resume it) is applied then.
                    timeout=max(
                        1, min(math.ceil(remaining.total_seconds()), PENDING_RECHECK_SECONDS)
                    ),
                    poll_interval=PAUSE_POLL_SECONDS,
                    key=uuid.uuid4().hex,
                )
            except FlowPauseTimeout:
                # The server still shows the run Paused: take it back, or the next pause is refused.
                _back_to_running()
                continue
            self.check_run_input(answer)
        self.journal.set_run(self.run_id, status="running")
        self.refuse_late_decisions()
        for step in reruns:
            self.run_action(step)
        if failures:
            raise failures[0]
        if rejected:
            raise RunStopped("rejected", f"{', '.join(rejected)} rejected")

    def check_run_input(self, answer: HumanDecision) -> None:
        """A resume of this flow run is only a wake-up: decisions are read from the journal.

        Prefect's API has no authentication, so anyone who reaches it can resume a paused run
        with any input. An input that is not the delivery of a decision the CLI or the gateway
        judged and journalled is refused and audited; it never decides anything.
        """
        if answer.decision_id is not None:
            recorded = self.journal.decision(answer.decision_id)
            if (
                recorded is not None
                and recorded.run_id == self.run_id
                and recorded.step_id == answer.step_id
                and recorded.kind == answer.decision
                and recorded.actor == answer.actor
            ):
                return
        reason = (
            "not a decision judged and journalled by Tocsin (a resume through the Prefect API "
            "or UI carries no proof of who decided); decide with `tocsin approve` or in Slack"
        )
        self.event(
            "decision.refused",
            answer.step_id[:64] or None,
            answer.actor[:64] or None,
            decision=answer.decision,
            channel="prefect-api",
            reason=reason,
            claimed_decision_id=answer.decision_id,
        )
        self.report(
            f"{answer.step_id[:64]}: refused a {answer.decision} sent through the Prefect API: {reason}"
        )

    def refuse_late_decisions(self, *, run_over: bool = False) -> None:
        """Decisions journalled after their step was settled: each gets its answer, refused."""
        for decision in self.journal.pending_decisions(self.run_id):
            record = self.journal.step(self.run_id, decision.step_id)
            if record is not None and record.status == "waiting" and not run_over:
                continue  # another wait of this run (a parallel branch) will apply it
            status = record.status if record else None
            if run_over and status == "waiting":
                status = f"{status}, but the run stopped"
            refusal = judge(
                status,
                None,
                Proposal(decision.kind, decision.actor),
                [],
                decision.step_id,
            )
            assert refusal is not None  # nothing waits, so judge always refuses
            self.settle_refused(decision, refusal)

    def wait_length(self, step: Step) -> timedelta:
        if step.approval is not None:
            return step.approval.timeout
        return step.timeout or MANUAL_TASK_DEFAULT_TIMEOUT

    def reminder_at(self, step: Step, request: WaitRequest) -> datetime:
        """When people are reminded: a fraction (announce.remind_before) of the wait before its end."""
        return request.deadline_at - self.wait_length(step) * self.settings.announce.remind_before

    def remind(self, step: Step, request: WaitRequest) -> None:
        request.reminded = True
        self.journal.set_step(self.run_id, step.id, request=request.as_data())
        left = max(0, int((request.deadline_at - now()).total_seconds() // 60))
        self.event(f"{request.kind}.reminded", step.id, minutes_left=left, group=request.group)
        self.report(f"{step.id}: reminder sent, {left} min left")
        self.announce.reminder(
            GateState(step.id, step.title, request, tuple(self.approvals_of(step.id, request))),
            left,
        )

    def apply_decisions(
        self,
        open_steps: dict[str, tuple[Step, WaitRequest]],
        rejected: list[str],
        failures: list[StepFailed],
        reruns: list[Step],
    ) -> None:
        for decision in self.journal.pending_decisions(self.run_id):
            entry = open_steps.get(decision.step_id)
            record = self.journal.step(self.run_id, decision.step_id)
            request = entry[1] if entry else None
            proposal = Proposal(
                decision.kind,
                decision.actor,
                decision.gate_hash,
                tuple(decision.checklist) if decision.checklist is not None else None,
                tuple(decision.vouched or ()),
            )
            approvals = self.approvals_of(decision.step_id, request) if request else []
            if (
                request is not None
                and decision.gate_hash
                and request.gate_hash.startswith(decision.gate_hash)
            ):
                decision = replace(decision, gate_hash=request.gate_hash)
            refusal = judge(
                record.status if record else None, request, proposal, approvals, decision.step_id
            )
            if refusal is not None:
                self.settle_refused(decision, refusal)
                continue
            if not self.journal.settle_decision(decision.id, "applied"):
                continue  # another process applied it first
            assert entry is not None and request is not None
            step = entry[0]
            self.event(
                "decision.applied",
                step.id,
                decision.actor,
                decision=decision.kind,
                channel=decision.channel,
                comment=decision.comment,
                checklist=decision.checklist,
            )
            self.close_if_decided(step, request, decision, open_steps, rejected, failures, reruns)

    def settle_refused(self, decision: DecisionRecord, refusal: str) -> None:
        """Refuse a journalled decision once: audited, and the person is told why."""
        if not self.journal.settle_decision(decision.id, "refused", refusal):
            return  # another process settled it first
        self.event(
            "decision.refused",
            decision.step_id,
            decision.actor,
            decision=decision.kind,
            channel=decision.channel,
            reason=refusal,
            comment=decision.comment,
        )
        self.report(f"{decision.step_id}: refused {decision.kind} from {decision.actor}: {refusal}")
        self.announce.decision_refused(
            RefusedDecision(
                decision.step_id, decision.actor, decision.kind, decision.channel, refusal
            )
        )

    def close_if_decided(
        self,
        step: Step,
        request: WaitRequest,
        decision: Any,
        open_steps: dict[str, tuple[Step, WaitRequest]],
        rejected: list[str],
        failures: list[StepFailed],
        reruns: list[Step],
    ) -> None:
        decided = now().isoformat()
        if request.kind == "approval":
            if decision.kind == "reject":
                outputs = {
                    "decision": "rejected",
                    "approved_by": [],
                    "decided_at": decided,
                    "comment": decision.comment,
                }
                self.finish_wait(step, "rejected", outputs, open_steps, decision.actor)
                rejected.append(step.id)
                self.report(f"{step.id}: REJECTED by {decision.actor}")
                return
            approvals = self.approvals_of(step.id, request)
            if len(set(approvals)) < request.quorum:
                self.report(
                    f"{step.id}: approved by {decision.actor} ({len(set(approvals))} of {request.quorum})"
                )
                self.announce.gate_changed(
                    GateState(step.id, step.title, request, tuple(approvals))
                )
                return
            outputs = {
                "decision": "approved",
                "approved_by": approvals,
                "decided_at": decided,
                "comment": decision.comment,
            }
            self.finish_wait(step, "approved", outputs, open_steps)
            self.report(f"{step.id}: approved by {', '.join(approvals)}")
        elif request.kind == "manual":
            if decision.kind == "reject":
                self.finish_wait(step, "failed", {}, open_steps, decision.actor)
                failures.append(
                    StepFailed(
                        step.id,
                        f"{decision.actor} could not do it: {decision.comment or 'no reason given'}",
                    )
                )
                return
            ticked = [request.checklist[n - 1] for n in (decision.checklist or [])]
            outputs = {"completed_by": decision.actor, "completed_at": decided, "checklist": ticked}
            self.finish_wait(step, "done", outputs, open_steps)
            self.report(
                f"{step.id}: done by {decision.actor} ({len(ticked)} of {len(request.checklist)} items ticked)"
            )
        else:
            if decision.kind == "approve":
                del open_steps[step.id]
                reruns.append(step)
            elif decision.kind == "done":
                self.finish_wait(step, "done", {}, open_steps, decision.actor)
            else:
                self.finish_wait(step, "failed", {}, open_steps, decision.actor)
                failures.append(StepFailed(step.id, f"stopped by {decision.actor} after the crash"))

    def finish_wait(
        self,
        step: Step,
        status: str,
        outputs: dict[str, Any],
        open_steps: dict[str, tuple[Step, WaitRequest]],
        decided_by: str | None = None,
    ) -> None:
        self.journal.set_step(
            self.run_id, step.id, status=status, outputs=outputs, finished_at=now()
        )
        self.remember(step.id, status, outputs, announce=False)
        self.event(f"step.{status}", step.id, outputs=outputs)
        entry = open_steps.pop(step.id, None)
        if entry is not None:
            request = entry[1]
            approved = (
                tuple(self.approvals_of(step.id, request)) if request.kind == "approval" else ()
            )
            decided_by = outputs.get("approved_by") or outputs.get("completed_by") or decided_by
            self.announce.gate_changed(
                GateState(
                    step.id,
                    step.title,
                    request,
                    approved,
                    outcome=status,
                    decided_by=tuple(
                        decided_by
                        if isinstance(decided_by, list)
                        else [decided_by]
                        if decided_by
                        else []
                    ),
                    comment=str(outputs.get("comment") or ""),
                )
            )
        if status in ("approved", "done"):
            self.stop_clocks(step)

    def time_out(
        self,
        step: Step,
        request: WaitRequest,
        open_steps: dict[str, tuple[Step, WaitRequest]],
        failures: list[StepFailed],
    ) -> None:
        if request.kind != "approval" or step.approval is None:
            self.finish_wait(step, "failed", {}, open_steps)
            failures.append(StepFailed(step.id, "nobody marked it done before its timeout"))
            return
        gate = step.approval
        if gate.on_timeout == "escalate" and not request.escalated and gate.escalate_to:
            group = self.runbook.approver_groups[gate.escalate_to]
            request.escalated = True
            request.reminded = False
            request.group = f"{request.group}+{gate.escalate_to}"
            request.approvers = sorted({*request.approvers, *group.users})
            if group.usergroup:
                request.usergroups = [*request.usergroups, group.usergroup]
            request.deadline = (now() + gate.timeout).isoformat()
            self.journal.set_step(self.run_id, step.id, request=request.as_data())
            self.event(
                "approval.escalated", step.id, to=gate.escalate_to, deadline=request.deadline
            )
            self.report(f"{step.id}: no decision in time, escalated to {gate.escalate_to}")
            open_steps[step.id] = (step, request)
            self.announce.gate_changed(
                GateState(step.id, step.title, request, tuple(self.approvals_of(step.id, request)))
            )
            return
        outputs = {
            "decision": "timed_out",
            "approved_by": self.approvals_of(step.id, request),
            "decided_at": now().isoformat(),
            "comment": "",
        }
        self.finish_wait(step, "timed_out", outputs, open_steps)
        self.event("approval.timed_out", step.id, on_timeout=gate.on_timeout)
        if gate.on_timeout == "continue":
            self.report(f"{step.id}: no decision in time; continuing (on_timeout: continue)")
            return
        self.report(f"{step.id}: no decision in time; stopping the run")
        raise RunStopped("timed_out", f"approval {step.id} timed out")


def announcers_for(
    settings: Settings, journal: Journal, secrets: Any
) -> tuple[list[Announcer], list[tuple[str, str]]]:
    """Where people hear about runs: each installed integration's announcer that is configured
    (the Slack incident thread, the ticket); and (announcer, problem) for those configured but
    unusable (audited by the run)."""
    return configured_announcers(settings, journal, secrets, _report_for_ticket(settings))


def _report_for_ticket(settings: Settings) -> Callable[[str], tuple[str, bytes, str]]:
    def make(ticket: str) -> tuple[str, bytes, str]:
        from tocsin.evidence import incident_report

        content = incident_report(settings, ticket, fmt="html", lang="en", with_prefect=False)
        return f"{ticket}-report.html", content, "text/html"

    return make


def _back_to_running() -> None:
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(context.flow_run.id, Running(), force=True)


def _flatten(branches: list[Step]) -> list[Step]:
    flat: list[Step] = []
    for branch in branches:
        flat.extend(_flatten(branch.parallel) if branch.parallel else [branch])
    return flat


_progress_listeners: list[Report] = []


def listen_to_progress(listener: Report) -> Callable[[], None]:
    """Also send progress lines to ``listener`` (the CLI prints them); returns the way to stop."""
    _progress_listeners.append(listener)
    return lambda: _progress_listeners.remove(listener)


def _report(message: str) -> None:
    get_run_logger().info(message)
    for listener in list(_progress_listeners):
        listener(message)


@flow(name="run-runbook", validate_parameters=False)
def run_runbook(
    runbook_source: str,
    runbook_name: str,
    incident: dict[str, Any],
    inputs: dict[str, Any],
    sealed_inputs: str | None = None,
) -> Any:
    """Run a runbook (its YAML text) for an incident, resuming what an earlier run did.

    ``sealed_inputs``: a reference to the secret inputs in the journal (never the values:
    Prefect stores and serves parameters); they are removed when the run ends.

    Returns the outcome (status, reason, steps); a run that did not succeed ends as a
    Failed state carrying that outcome (read it with ``outcome_of``).
    """
    handed = configuration()  # what the caller handed down, else the environment's
    settings = handed.settings
    registry = ActionRegistry.discover(settings.action_modules)
    loaded = load_runbook_bytes(runbook_source.encode("utf-8"), runbook_name, registry)
    journal = journal_for(settings, signing=True)
    assert journal.audit_key is not None  # signing=True gives a key or raises
    try:
        given = dict(inputs)
        if sealed_inputs:
            given.update(unseal(journal, str(incident["ticket"]), sealed_inputs))
        values, _ = resolve_inputs(loaded.runbook, given)
    except BaseException:
        journal.close()
        raise
    context = FlowRunContext.get()
    flow_run_id = str(context.flow_run.id) if context and context.flow_run else None
    if context is not None and context.flow_run is not None:
        # Tags set here, not by the caller, so runs started from a deployment carry them too.
        wanted = {f"incident:{incident['ticket']}", f"runbook:{loaded.runbook.runbook}"}
        with get_client(sync_client=True) as client:
            client.update_flow_run(
                context.flow_run.id, tags=sorted(set(context.flow_run.tags) | wanted)
            )
    redactor = Redactor(journal.audit_key)
    execution = RunbookExecution(
        loaded,
        Incident(**incident),
        values,
        journal=journal,
        registry=registry,
        settings=settings,
        report=lambda line: _report(redactor.scrub(line)),
        redactor=redactor,
        secrets=handed.secrets,
    )
    execution.announcers, execution.announce_problems = announcers_for(
        settings, journal, execution.secrets
    )
    try:
        outcome = execution.run(flow_run_id)
    finally:
        if sealed_inputs:
            discard(journal, sealed_inputs)
        journal.close()
    outcome = redactor.scrub(outcome)  # Prefect stores it: no secret quoted in a reason
    if outcome["status"] != "succeeded":
        # The Prefect UI must show a failed, rejected or timed-out runbook as Failed.
        return Failed(message=f"runbook {outcome['status']}: {outcome['reason']}", data=outcome)
    return outcome


def outcome_of(state: State[Any]) -> dict[str, Any]:
    """The outcome dict of a finished run_runbook flow run (called with return_state=True)."""
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):
        raise result
    assert isinstance(result, dict)
    return result


__all__ = ["HumanDecision", "RunbookExecution", "listen_to_progress", "outcome_of", "run_runbook"]
