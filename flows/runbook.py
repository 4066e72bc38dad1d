"""The generic Prefect flow that runs a validated runbook for an incident.

Each action step is a Prefect task named like the step (``revoke-sessions``),
with the step's retries and timeout. Approval gates, manual tasks and steps
found in flight after a crash wait for people with ``pause_flow_run`` and a
typed ``HumanDecision`` input, so the Prefect UI shows a form for them too.
Everything that happens is written to the run journal first, which is what
makes a second run of the same incident continue where the first stopped.

The parts, each in its module: ``run_state`` (what they share), ``steps`` (actions,
parallel blocks, failure handlers, undo), ``waiting`` and ``wait_requests`` (people),
``clocks`` (regulatory deadlines), ``checkpoints`` (the signed audit head),
``announcers`` (the incident thread, the ticket); this module opens and closes the run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.states import Failed

from tocsin.action_registry import ActionRegistry
from tocsin.announce import Announcements, Announcer
from tocsin.audit import Redactor
from tocsin.errors import RunbookError, RunStopped, TocsinError
from tocsin.flows.announcers import announcers_for
from tocsin.flows.checkpoints import sign_and_anchor
from tocsin.flows.clocks import RegulatoryClocks
from tocsin.flows.outcomes import (
    failure_message,
    quiet_expected_failures,
    read_outcome,
    record_outcome,
)
from tocsin.flows.run_state import PROGRESS_MARK, Report, RunState
from tocsin.flows.steps import StepRunner
from tocsin.flows.waiting import HumanDecision, PeopleWaits
from tocsin.incident import Incident
from tocsin.inputs import resolve_inputs
from tocsin.journal import FINISHED_STEP
from tocsin.launch import run_tags, runbook_from_parameters
from tocsin.preflight import check_run
from tocsin.running import journal_for
from tocsin.sealed_inputs import discard, unseal
from tocsin.settings import configuration
from tocsin.statuses import RunStatus, StepStatus

HEARTBEAT_SECONDS = 10


def execute(
    state: RunState,
    flow_run_id: str | None,
    announcers: list[Announcer],
    announce_problems: list[tuple[str, str]],
) -> dict[str, Any]:
    """Open (or resume) the run in the journal, run its steps, close it; the outcome."""
    journal, runbook, incident = state.journal, state.runbook, state.incident
    run, existed = journal.open_run(
        incident=incident.ticket,
        runbook_id=runbook.runbook,
        runbook_version=runbook.version,
        runbook_digest=state.loaded.digest,
        inputs=state.shown_inputs(),
        requested_by=incident.requested_by,
        requested_via=incident.requested_via,
    )
    state.run_id = run.id
    journal.set_run(run.id, flow_run_id=flow_run_id)
    state.event(
        "run.resumed" if existed else "run.started",
        actor=incident.requested_by,
        runbook=runbook.runbook,
        version=runbook.version,
        digest=state.loaded.digest,
        via=incident.requested_via,
        flow_run_id=flow_run_id,
        title=runbook.title,
        severity=runbook.severity.value,
        ticket_url=incident.url,
        incident_title=incident.title,
        inputs=state.shown_inputs(),
    )
    state.announce = Announcements(
        announcers,
        state.run_facts(resumed=existed),
        on_failure=state.announce_failed,
        batch_seconds=state.settings.announce.progress_every_seconds,
    )
    for announcer, problem in announce_problems:
        state.announce_failed(announcer, "configure", problem)
    state.announce.run_started()
    clocks = RegulatoryClocks(state)
    clocks.start(existed)
    people = PeopleWaits(state, clocks)
    steps = StepRunner(state, clocks, people)
    for record in journal.steps_of(run.id):
        steps.known[record.step_id] = record
        if record.status in FINISHED_STEP or record.status in (
            StepStatus.REJECTED,
            StepStatus.UNDONE,
        ):
            state.remember(record.step_id, record.status, record.outputs, announce=False)
    stop_heartbeat = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(state, stop_heartbeat), daemon=True)
    beat.start()
    try:
        steps.run_sequence(runbook.steps)
        status, reason = RunStatus.SUCCEEDED, "every step finished"
    except RunStopped as stop:
        status, reason = stop.status, stop.reason
    finally:
        stop_heartbeat.set()
    people.refuse_late_decisions(run_over=True)
    journal.set_run(run.id, status=status, heartbeat_at=None)
    state.event("run.finished", status=status, reason=reason)
    state.report(f"run {status}: {reason}")
    state.announce.run_finished(status, reason)
    sign_and_anchor(state, "run.finished")
    state.announce.close()
    return {
        "status": status,
        "reason": reason,
        "steps": {s.step_id: s.status for s in journal.steps_of(run.id)},
    }


def _heartbeat(state: RunState, stop: threading.Event) -> None:
    """Tells the journal this process still runs the run (a dead one is resumed elsewhere)."""
    interval = min(HEARTBEAT_SECONDS, max(1.0, state.settings.announce.progress_every_seconds))
    last_beat = 0.0
    while not stop.wait(interval):
        state.announce.flush_if_due()  # progress of a long step is not held back
        last_beat += interval
        if last_beat >= HEARTBEAT_SECONDS:
            state.journal.heartbeat(state.run_id)
            last_beat = 0.0


_progress_listeners: list[Report] = []


def listen_to_progress(listener: Report) -> Callable[[], None]:
    """Also send progress lines to ``listener`` (the CLI prints them); returns the way to stop."""
    _progress_listeners.append(listener)
    return lambda: _progress_listeners.remove(listener)


def _report(message: str) -> None:
    get_run_logger().info(message.removeprefix(PROGRESS_MARK))
    for listener in list(_progress_listeners):
        listener(message)


@flow(name="run-runbook", validate_parameters=False)
def run_runbook(
    runbook_source: str,
    runbook_name: str,
    incident: dict[str, Any],
    inputs: dict[str, Any],
    sealed_inputs: str | None = None,
    runbook_digest: str | None = None,
) -> Any:
    """Run a runbook (its YAML text) for an incident, resuming what an earlier run did.

    ``sealed_inputs``: a reference to the secret inputs in the journal (never the values:
    Prefect stores and serves parameters); they are removed when the run ends.
    ``runbook_digest``: the sha256 of the text as validated when the run was requested
    (``tocsin.launch``); another text is refused.

    Before the run opens, what it needs is checked where it runs (``tocsin.preflight``):
    a run that could not finish is refused then, not at a later step. The outcome (status,
    reason, steps) is the flow run's artifact (read it with ``outcome_of``); a run that did
    not succeed, or was refused, ends in a Failed state whose message says why.
    """
    quiet_expected_failures()  # on a worker: Prefect's engine would log a traceback
    try:
        return _run_runbook(
            runbook_source, runbook_name, incident, inputs, sealed_inputs, runbook_digest
        )
    except TocsinError as refused:
        _log_refusal(refused)
        # The error is the state's data: in this process ``outcome_of`` raises it as it was.
        return Failed(message=failure_message(refused), data=refused)


def _log_refusal(refused: TocsinError) -> None:
    """The flow run's log is where whoever started it looks: every problem, not a count."""
    lines = ["refused to run:"]
    if isinstance(refused, RunbookError):
        lines.extend(map(str, refused.problems))
    else:
        lines.append(refused.message)
        if refused.hint:
            lines.append(f"hint: {refused.hint}")
    get_run_logger().error("\n".join(lines))


def _run_runbook(
    runbook_source: str,
    runbook_name: str,
    incident: dict[str, Any],
    inputs: dict[str, Any],
    sealed_inputs: str | None,
    runbook_digest: str | None,
) -> Any:
    handed = configuration()  # what the caller handed down, else the environment's
    settings = handed.settings
    registry = ActionRegistry.for_settings(settings)
    loaded = runbook_from_parameters(runbook_source, runbook_name, runbook_digest, registry)
    ticket = str(incident["ticket"])
    # Checked again here: on a worker, its own settings, secrets and key are what count. The
    # journal is opened next, which refuses an unreachable or unchained one just as cleanly.
    check_run(
        loaded.runbook, ticket, registry, settings, handed.secrets, prefect=False, journal_too=False
    )
    journal = journal_for(settings, signing=True)
    assert journal.audit_key is not None  # signing=True gives a key or raises
    try:
        given = dict(inputs)
        if sealed_inputs:
            given.update(unseal(journal, ticket, sealed_inputs))
        values, _ = resolve_inputs(loaded.runbook, given)
    except BaseException:
        journal.close()
        raise
    context = FlowRunContext.get()
    flow_run_id = str(context.flow_run.id) if context and context.flow_run else None
    if context is not None and context.flow_run is not None:
        # Tags set here, not by the caller, so runs started from a deployment carry them too.
        wanted = set(run_tags(ticket, loaded.runbook.runbook))
        with get_client(sync_client=True) as client:
            client.update_flow_run(
                context.flow_run.id, tags=sorted(set(context.flow_run.tags) | wanted)
            )
    redactor = Redactor(journal.audit_key)
    state = RunState(
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
    announcers, announce_problems = announcers_for(settings, journal, state.secrets)
    try:
        outcome = execute(state, flow_run_id, announcers, announce_problems)
    finally:
        if sealed_inputs:
            discard(journal, sealed_inputs)
        journal.close()
    outcome = redactor.scrub(outcome)  # Prefect stores it: no secret quoted in a reason
    if flow_run_id is not None:
        try:
            record_outcome(outcome, ticket, loaded.runbook.runbook)
        except Exception as exc:  # the journal has the outcome; the artifact only shows it
            get_run_logger().warning("the run's outcome artifact was not saved: %s", exc)
    if outcome["status"] != RunStatus.SUCCEEDED:
        # The Prefect UI must show a failed, rejected or timed-out runbook as Failed; the
        # state carries the message only (Prefect makes a Failed state's data an exception).
        return Failed(message=f"runbook {outcome['status']}: {outcome['reason']}")
    return outcome


def outcome_of(state: State[Any]) -> dict[str, Any]:
    """The outcome of a finished run_runbook flow run (called with return_state=True): the
    flow run's outcome artifact; the Tocsin error that refused the run is raised."""
    flow_run_id = state.state_details.flow_run_id
    if flow_run_id is not None:
        found = read_outcome(flow_run_id)
        if found is not None:
            return found
    result = state.result(raise_on_failure=False)
    if isinstance(result, TocsinError):
        raise result
    if state.is_completed() and isinstance(result, dict):
        return result
    raise TocsinError(
        f"the flow run ended {state.name} without an outcome: {state.message or 'no message'}",
        "its log in the Prefect UI says why; `tocsin status TICKET` shows how far it got",
    )


__all__ = ["HumanDecision", "execute", "listen_to_progress", "outcome_of", "run_runbook"]
