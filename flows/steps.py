"""Running a runbook's steps: actions as Prefect tasks (retries, timeouts), parallel blocks,
conditions, failure handlers and undo; steps that wait for people go to ``PeopleWaits``.

The journal is written before and after each action, inside its task, which is what lets a
second run of the same incident continue where the first stopped without doing twice what
is not idempotent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import Task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.runtime import task_run

from tocsin.actions import ActionDefinition, Effect
from tocsin.errors import (
    ConfigurationError,
    IntegrationError,
    RunStopped,
    StepFailed,
    TemplateError,
    TocsinError,
    message_of,
)
from tocsin.flows.clocks import RegulatoryClocks
from tocsin.flows.guards import leaf_steps
from tocsin.flows.retry_waits import RetryDelays, RetryWaits
from tocsin.flows.run_state import RunState
from tocsin.flows.waiting import PeopleWaits
from tocsin.journal import FINISHED_STEP, StepRecord, now
from tocsin.model import RunHandlers, Step
from tocsin.statuses import RunStatus, StepStatus
from tocsin.templating import evaluate_condition, render_value


def _worth_retrying(error: BaseException) -> bool:
    """What can get better by waiting; never a refusal or a wrong configuration."""
    if isinstance(error, IntegrationError):
        return error.retryable
    return not isinstance(error, ConfigurationError | TemplateError)


def _may_have_acted(error: TocsinError) -> bool:
    """A failure that would be retried although the service may have acted on the call
    (a timeout, a dropped reply, a 500, 502 or 504)."""
    return isinstance(error, IntegrationError) and error.retryable and not error.unapplied


def _safe_to_repeat(definition: ActionDefinition, parameters: dict[str, Any]) -> bool:
    """An idempotent action, or a call of a destructive one that changes nothing (a GET)."""
    return definition.idempotent or not definition.changes_anything(
        definition.check_parameters(parameters)
    )


class StepRunner:
    """Runs the steps of one run, in order, and undoes what it did when a step fails."""

    def __init__(self, state: RunState, clocks: RegulatoryClocks, people: PeopleWaits) -> None:
        self.state = state
        self.clocks = clocks
        self.people = people
        self.known: dict[str, StepRecord] = {}  # step rows as the run found them when it started
        self.completed: list[Step] = []  # action steps that succeeded, for undo
        self.attempts: dict[str, int] = {}
        self.parameters: dict[str, dict[str, Any]] = {}  # by step id: its latest call's
        self.tasks: dict[tuple[str, float | None], Any] = {}
        self.retry_waits: dict[str, RetryWaits] = {}  # by step id: the waits before its retries
        # The task gets a step's id, not the step: Prefect walks a task's arguments to find
        # upstream futures, and walking a step model costs more than the rest of the call.
        self.steps = {step.id: step for step, _ in state.runbook.iter_steps()}

    def run_sequence(self, steps: list[Step]) -> None:
        for step in steps:
            self.run_step(step)

    def run_step(self, step: Step) -> None:
        # Only this run changes its steps: the rows read when it started are all there is.
        record = self.known.pop(step.id, None)
        if record is not None and record.status in FINISHED_STEP:
            self.state.report(
                f"{step.id}: already {record.status} in an earlier run, not run again"
            )
            return
        if self.skipped_by_condition(step):
            return
        try:
            if step.action is not None:
                if record is not None and record.status == StepStatus.RUNNING:
                    # Interrupted: read back what it did where the action can, before anything.
                    settled = self.read_back(step)
                    if settled == "took_effect":
                        return
                    if settled != "did_not" and not self.rerun_allowed(step, record.status):
                        # approve runs it again inside the wait; done and reject settle it there
                        self.wait_for_people([step], in_doubt=True)
                        return
                elif record is not None and record.status == StepStatus.WAITING:
                    self.wait_for_people([step], in_doubt=True)
                    return
                self.run_action(step)
            elif step.parallel is not None:
                self.run_parallel(step)
            else:
                self.wait_for_people([step])
        except StepFailed as failure:
            self.handle_failure(step, failure)

    def wait_for_people(
        self, waiting: list[Step], *, in_doubt: bool = False, in_doubt_actions: bool = False
    ) -> None:
        """Wait until every step has been decided; raise for rejections and failures."""
        outcome = self.people.wait_for(
            waiting, in_doubt=in_doubt, in_doubt_actions=in_doubt_actions
        )
        for step in outcome.run_again:
            self.run_action(step)
        if outcome.failures:
            raise outcome.failures[0]
        if outcome.rejected:
            raise RunStopped(RunStatus.REJECTED, f"{', '.join(outcome.rejected)} rejected")

    def skipped_by_condition(self, step: Step) -> bool:
        state = self.state
        if step.when is None:
            return False
        try:
            runs = evaluate_condition(step.when, state.template_context())
        except TemplateError as exc:
            raise RunStopped(
                RunStatus.FAILED,
                f"step {step.id}: its condition cannot be evaluated: {exc.message}",
            ) from None
        if runs:
            return False
        state.journal.set_step(state.run_id, step.id, status=StepStatus.SKIPPED, finished_at=now())
        state.remember(step.id, StepStatus.SKIPPED, {})
        facts = {**state.step_facts(step), "kind": step.kind, "action": step.action}
        state.event("step.skipped", step.id, condition=step.when, **facts)
        self.clocks.stop(step, skipped=True)
        state.report(f"{step.id}: skipped (when: {step.when} is false)")
        return True

    def rerun_allowed(self, step: Step, status: str) -> bool:
        """A step found in flight after a crash runs again only if its action is idempotent."""
        definition = self.state.registry.get(step.action or "")
        if status == StepStatus.RUNNING and definition.idempotent:
            self.state.event(
                "step.resumed_in_flight", step.id, reason="idempotent action, running it again"
            )
            return True
        return False

    def read_back(self, step: Step) -> str:
        """An in-doubt step whose action can read back the real state: ask it.

        ``took_effect``: the step is finished with the outputs read; ``did_not``: the
        caller runs it (nothing changed); anything else (``unknown``, no reconcile, the
        read-back failing): a person decides, as without one."""
        state = self.state
        definition = state.registry.get(step.action or "")
        if definition.reconcile is None:
            return "none"
        try:
            parameters = self.render_parameters(step)
            effect, outputs, found = definition.reconcile_call(
                state.action_context(step.id), parameters
            )
        except Exception as exc:  # a failing read-back leaves it to a person, said why
            message = state.redactor.scrub(message_of(exc))
            state.event("step.reconcile_failed", step.id, action=step.action, error=message)
            state.report(f"{step.id}: could not read back whether it took effect: {message}")
            return "failed"
        found = state.redactor.scrub(found)
        if effect == Effect.TOOK_EFFECT:
            if step.outputs:
                extra = render_value(step.outputs, {**state.template_context(), "result": outputs})
                outputs.update(extra if isinstance(extra, dict) else {})
            recorded = state.redactor.fields(outputs, state.secret_fields(step))
            state.step_event(
                step,
                "step.reconciled",
                {"status": StepStatus.SUCCEEDED, "outputs": recorded, "finished_at": now()},
                {"effect": str(effect), "found": found, "outputs": recorded},
            )
            state.remember(step.id, StepStatus.SUCCEEDED, outputs)
            self.clocks.stop(step)
            self.completed.append(step)
            state.report(f"{step.id}: interrupted, read back: it took effect ({found})")
            return "took_effect"
        state.event("step.reconciled", step.id, effect=str(effect), found=found)
        if effect == Effect.DID_NOT:
            state.report(f"{step.id}: interrupted, read back: it did not take effect; running it")
            return "did_not"
        state.report(f"{step.id}: interrupted, read back: cannot tell ({found}); a person decides")
        return "unknown"

    # actions --------------------------------------------------------------------------------

    def render_parameters(self, step: Step) -> dict[str, Any]:
        try:
            rendered = self.state.registry.get(step.action or "").render_parameters(
                step.with_, self.state.template_context()
            )
        except TemplateError as exc:
            raise StepFailed(step.id, exc.message + self.outputs_not_given(step)) from None
        return rendered if isinstance(rendered, dict) else {}

    def outputs_not_given(self, step: Step) -> str:
        """When a step reads the outputs of an interrupted step a person marked done without
        them: say how to give them next time."""
        written = str(step.with_)
        for other in self.steps.values():
            values = self.state.steps_context.get(other.id) or {}
            if (
                other.action is not None
                and values.get("status") == StepStatus.DONE
                and not values.get("outputs")
                and f"steps.{other.id}.outputs" in written
            ):
                declared = self.state.registry.get(other.action).output_names or {"NAME"}
                example = sorted(declared)[0]
                return (
                    f" ({other.id} was marked done after an interruption without its outputs: "
                    f"give them with `tocsin done {self.state.incident.ticket} {other.id} "
                    f"--output {example}=...`)"
                )
        return ""

    def make_task(self, step: Step, *, in_thread: bool = False) -> Any:
        """One Prefect task per step (building one costs milliseconds): its retries wait as
        its ``RetryWaits`` decide (``flows.retry_waits``)."""
        # In a worker thread Prefect cannot interrupt a task; run_parallel enforces it instead.
        timeout = step.timeout.total_seconds() if step.timeout and not in_thread else None
        key = (step.id, timeout)
        if key not in self.tasks:
            retry = step.retry
            retries = (retry.attempts - 1) if retry else 0
            self.tasks[key] = Task(
                self.attempt_action,
                name="runbook-step",
                task_run_name="{task_name}",  # from the call's parameters: revoke-sessions
                retries=retries,
                retry_delay_seconds=RetryDelays(self.waits_of(step), retries) if retries else 0,
                retry_condition_fn=self.retry_condition(step) if retries else None,
                timeout_seconds=timeout,
                cache_policy=NO_CACHE,
                persist_result=False,
            )
        return self.tasks[key]

    def retry_condition(self, step: Step) -> Callable[[Any, Any, State[Any]], bool]:
        """Prefect's retry condition of the step's task: what ``_worth_retrying``, except a
        call cut off by the step's ``timeout`` (Prefect's ``TimeoutError``) that must not
        run twice — it may have taken effect before it was cut off."""
        assert step.action is not None
        definition = self.state.registry.get(step.action)

        def retryable(task_: Any, task_run: Any, state: State[Any]) -> bool:
            error = state.result(raise_on_failure=False)
            if isinstance(error, TimeoutError):
                parameters = self.parameters.get(step.id)
                if parameters is None or not _safe_to_repeat(definition, parameters):
                    self.state.event(
                        "step.attempt_failed",
                        step.id,
                        attempt=self.attempts.get(step.id, 0),
                        error=f"did not finish within its timeout ({step.timeout})",
                        not_retried="the call may have taken effect",
                    )
                    return False
            return _worth_retrying(error)

        return retryable

    def waits_of(self, step: Step) -> RetryWaits:
        """The waits before the step's retries: its backoff, at least what the service asks,
        capped by ``max_retry_wait_seconds`` and by the step's timeout."""
        with self.state.lock:
            found = self.retry_waits.get(step.id)
            if found is None:
                cap, named = self.state.settings.max_retry_wait_seconds, "max_retry_wait_seconds"
                if step.timeout is not None and step.timeout.total_seconds() < cap:
                    cap, named = step.timeout.total_seconds(), "the step's timeout"
                backoffs = step.retry.delays_seconds() if step.retry else []
                found = self.retry_waits[step.id] = RetryWaits(backoffs, cap, named)
            return found

    def attempt_action(
        self, task_name: str, step_id: str, parameters: dict[str, Any]
    ) -> dict[str, Any]:
        """One attempt of an action step (a Prefect task run); journals before and after."""
        step = self.steps[step_id]
        assert step.action is not None
        state = self.state
        with state.lock:
            attempt = self.attempts[step.id] = self.attempts.get(step.id, 0) + 1
            self.parameters[step.id] = parameters  # what a cut-off call was asked to do
        # This attempt's number within its task run (a step a person sends back to run
        # again starts a new one, with its retries): what indexes its retry waits.
        try_number = task_run.get_run_count() or attempt
        waits = self.waits_of(step)
        if try_number == 1:
            waits.forget()
        if attempt > 1:
            waited = waits.taken(try_number - 2) if try_number > 1 else None
            said: dict[str, Any] = (
                {"waited_seconds": waited.seconds, "wait_reason": waited.reason} if waited else {}
            )
            state.event("step.retried", step.id, attempt=attempt, **said)
            state.report(
                f"{step.id}: attempt {attempt}"
                + (f" (after {waited.seconds:g} s: {waited.reason})" if waited else "")
            )
        definition = state.registry.get(step.action)
        try:
            result = definition.invoke(state.action_context(step.id), parameters)
        except TocsinError as exc:
            doubtful = _may_have_acted(exc) and not _safe_to_repeat(definition, parameters)
            if doubtful and isinstance(exc, IntegrationError):
                # The service may have acted before failing: trying again could do it twice.
                exc.retryable = False
                exc.message += (
                    f"; not tried again: {step.action} must not run twice, and the call may "
                    "have taken effect before it failed"
                )
                exc.args = (exc.message, *exc.args[1:])
                exc.hint = (
                    "check at the service whether it took effect; run the step again "
                    "(tocsin run) only if it did not"
                )
            retried = step.retry is not None and try_number < step.retry.attempts
            wait = (
                waits.decide(try_number - 1, getattr(exc, "retry_after", None))
                if retried and _worth_retrying(exc)
                else None
            )
            facts: dict[str, Any] = {"attempt": attempt, "error": exc.message}
            if doubtful:
                facts["not_retried"] = "the call may have taken effect"
            if wait is not None:
                facts["retry_in_seconds"] = wait.seconds
            state.event("step.attempt_failed", step.id, **facts)
            # Prefect keeps a failed task's message: a secret quoted in it is redacted first.
            exc.message = state.redactor.scrub(exc.message)
            exc.hint = state.redactor.scrub(exc.hint)
            exc.args = tuple(state.redactor.scrub(list(exc.args)))
            raise
        outputs = dict(result)
        if step.outputs:
            extra = render_value(step.outputs, {**state.template_context(), "result": result})
            outputs.update(extra if isinstance(extra, dict) else {})
        recorded = state.redactor.fields(outputs, state.secret_fields(step))
        state.step_event(
            step,
            "step.succeeded",
            {
                "status": StepStatus.SUCCEEDED,
                "outputs": recorded,
                "finished_at": now(),
                "error": None,
                "attempts": attempt,
            },
            {"outputs": recorded, "attempts": attempt},
            # Idempotent: lost with the power, the step is run again on resume, and does the
            # same. The next flushed commit (an action that must not run twice, a decision,
            # the run's end) puts this one on disk first.
            flushed=not definition.idempotent,
        )
        if definition.communicates:
            sent = outputs.get("sent", 1)
            state.event(
                "message.sent",
                step.id,
                channel=definition.communicates,
                action=step.action,
                count=sent if isinstance(sent, int) and not isinstance(sent, bool) else 1,
            )
        state.remember(step.id, StepStatus.SUCCEEDED, outputs)
        self.clocks.stop(step)
        return outputs

    def start_action(self, step: Step, *, in_thread: bool = False) -> tuple[Any, dict[str, Any]]:
        state = self.state
        parameters = self.render_parameters(step)
        # Before an action that must not run twice, its start is on disk (with everything
        # journalled before it): a resume after a power cut knows it may have run. An
        # idempotent one's start needs no disk flush of its own: if a power cut loses it,
        # running the action again does what it did.
        assert step.action is not None  # an action step
        idempotent = state.registry.get(step.action).idempotent
        state.step_event(
            step,
            "step.started",
            {"status": StepStatus.RUNNING, "started_at": now(), "error": None},
            {
                "action": step.action,
                "parameters": state.redactor.fields(parameters, state.secret_fields(step)),
                **state.step_facts(step),
            },
            flushed=not idempotent,
        )
        state.report(f"{step.id}: {step.title} ({step.action})")
        return self.make_task(step, in_thread=in_thread), parameters

    def run_action(self, step: Step) -> None:
        action_task, parameters = self.start_action(step)
        try:
            action_task(step.task_name, step.id, parameters)
        except Exception as exc:  # the action's own error, after Prefect's retries
            self.action_failed(step, exc)
        else:
            self.completed.append(step)
            self.state.report(f"{step.id}: succeeded")

    def action_failed(self, step: Step, exc: BaseException) -> None:
        state = self.state
        message = message_of(exc)
        state.step_event(
            step,
            "step.failed",
            {
                "status": StepStatus.FAILED,
                "error": message,
                "finished_at": now(),
                "attempts": self.attempts.get(step.id, 0),
            },
            {"error": message},
        )
        state.remember(step.id, StepStatus.FAILED, {}, detail=message)
        state.report(f"{step.id}: failed: {message}")
        raise StepFailed(step.id, message)

    # parallel -------------------------------------------------------------------------------

    def run_parallel(self, block: Step) -> None:
        assert block.parallel is not None
        state = self.state
        state.report(f"{block.id}: {len(block.parallel)} branches at the same time")
        state.journal.set_step(state.run_id, block.id, status=StepStatus.RUNNING, started_at=now())
        branches = leaf_steps(block.parallel)
        futures: list[tuple[Step, Any]] = []
        people: list[Step] = []
        failures: list[StepFailed] = []
        for branch in branches:
            record = state.journal.step(state.run_id, branch.id)
            if record is not None and record.status in FINISHED_STEP:
                continue
            if self.skipped_by_condition(branch):
                continue
            if branch.action is None:
                people.append(branch)
                continue
            if (
                record is not None
                and record.status == StepStatus.RUNNING
                and not self.rerun_allowed(branch, record.status)
            ):
                people.append(branch)
                continue
            try:
                action_task, parameters = self.start_action(branch, in_thread=True)
            except StepFailed as failure:
                failures.append(failure)
                continue
            futures.append((branch, action_task.submit(branch.task_name, branch.id, parameters)))
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
                state.report(f"{branch.id}: succeeded")
        blocking: list[StepFailed] = []
        for problem in failures:
            branch = next(b for b in branches if b.id == problem.step_id)
            if branch.on_failure == "continue":
                state.report(f"{branch.id}: failure ignored (on_failure: continue)")
                continue
            if isinstance(branch.on_failure, RunHandlers):
                self.run_handlers(branch.on_failure.run)
            blocking.append(problem)
        if blocking:
            message = "; ".join(f"{f.step_id}: {f.message}" for f in blocking)
            state.journal.set_step(
                state.run_id, block.id, status=StepStatus.FAILED, error=message, finished_at=now()
            )
            raise StepFailed(block.id, message)
        state.journal.set_step(
            state.run_id, block.id, status=StepStatus.SUCCEEDED, finished_at=now()
        )
        state.remember(block.id, StepStatus.SUCCEEDED, {})

    # failures -------------------------------------------------------------------------------

    def handle_failure(self, step: Step, failure: StepFailed) -> None:
        policy = step.on_failure
        if policy == "continue":
            self.state.event("step.failure_ignored", step.id, error=failure.message)
            self.state.report(f"{step.id}: failure ignored (on_failure: continue)")
            return
        if isinstance(policy, RunHandlers):
            self.run_handlers(policy.run)
        self.undo_completed()
        raise RunStopped(RunStatus.FAILED, f"step {failure.step_id} failed: {failure.message}")

    def run_handlers(self, handler_ids: list[str]) -> None:
        for handler_id in handler_ids:
            handler = self.state.runbook.step(handler_id)
            self.state.report(f"{handler_id}: running failure handler")
            try:
                self.run_step(handler)
            except RunStopped as stop:
                self.state.event("handler.failed", handler_id, reason=stop.reason)

    def undo_completed(self) -> None:
        state = self.state
        for step in reversed([s for s in self.completed if s.undo is not None]):
            assert step.undo is not None
            definition = state.registry.get(step.undo.action)
            try:
                parameters = definition.render_parameters(step.undo.with_, state.template_context())
                Task(
                    definition.invoke,
                    name=f"undo-{step.task_name}",
                    task_run_name=f"undo-{step.task_name}",
                    cache_policy=NO_CACHE,
                    persist_result=False,
                )(state.action_context(step.id), parameters)
            except Exception as exc:
                message = exc.message if isinstance(exc, TocsinError) else str(exc)
                state.event("step.undo_failed", step.id, error=message)
                state.report(f"{step.id}: undo FAILED: {message}; reverse it by hand")
                continue
            state.journal.set_step(state.run_id, step.id, status=StepStatus.UNDONE)
            state.remember(step.id, StepStatus.UNDONE, state.steps_context[step.id]["outputs"])
            state.event(
                "step.undone",
                step.id,
                action=step.undo.action,
                parameters=state.redactor.fields(parameters, definition.sensitive),
            )
            state.report(f"{step.id}: undone with {step.undo.action}")


__all__ = ["StepRunner"]
