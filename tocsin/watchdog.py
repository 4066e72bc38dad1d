"""What is stuck: gates waiting past their deadline, runs whose process died, regulatory
clocks about to expire. ``tocsin status --stuck`` prints it; the ``watchdog`` flow
(``flows/watchdog.py``) posts each new finding once to the incident thread and on call.

``find_stuck`` reads the journal (runs, their steps and wait requests, the clocks' audit
records) and, where given, Prefect's flow run states; it changes nothing. Each ``Finding``
says what is wrong and, in one sentence for the support engineer, what to do, with the
exact command.

When a run is dead:

- its heartbeat (written every ``HEARTBEAT_SECONDS`` by the process running it) is older
  than ``watchdog.stale_after_seconds``, and
- its owner's process, when on this machine, is gone; on another machine, Prefect does
  not show its flow run running or paused (or Prefect could not be read).

A dead run waiting at a gate is one ``run_dead`` finding, not also ``gate_overdue``: the
fix is the same (run it again), and the run applies the gate's timeout when it resumes.
"""

from __future__ import annotations

import os
import shlex
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from tocsin.audit import REDACTED_PREFIX
from tocsin.gates import WaitRequest
from tocsin.journal import Journal, RunRecord, StepRecord, events
from tocsin.journal.database import aware
from tocsin.settings import WatchdogSettings
from tocsin.statuses import ACTIVE_RUN, StepStatus

if TYPE_CHECKING:
    from tocsin.settings import Settings

FOUND_KIND = "watchdog.found"
"""The audit record of a finding posted: the watchdog's memory of what it already said."""
CHECKPOINT_REASON = "watchdog"
_CLOCK_KINDS = ("clock.started", "clock.stopped")
_ALIVE_IN_PREFECT = frozenset({"RUNNING", "PAUSED"})
"""Prefect state types of a flow run whose process is still expected to work on it."""


class FindingKind(StrEnum):
    """What the watchdog found."""

    GATE_OVERDUE = "gate_overdue"  # a step still waits for people past its deadline
    RUN_DEAD = "run_dead"  # nobody runs an active run any more
    CLOCK_EXPIRING = "clock_expiring"  # a regulatory deadline is near, or just passed


@dataclass(frozen=True)
class Finding:
    """One stuck thing, and what a support engineer does about it."""

    kind: FindingKind
    incident: str
    run_id: int
    runbook: str
    step: str | None
    """The waiting gate; the step a dead run stopped at; the step that stops a clock."""
    since: datetime
    """Waiting since; the last heartbeat; the clock's start."""
    deadline: datetime | None
    """The gate's or the clock's deadline (a dead run: its gate's, if it waits at one)."""
    summary: str
    """What is wrong, in one sentence."""
    what_to_do: str
    """One sentence for the support engineer, with the command."""
    command: str
    """The exact command of ``what_to_do``."""
    key: str
    """The same situation gives the same key: the watchdog posts a key once."""
    clock: str | None = None

    def as_data(self) -> dict[str, Any]:
        """As JSON reads it (``tocsin status --stuck --json``, the audit record)."""
        return {
            "kind": str(self.kind),
            "incident": self.incident,
            "run_id": self.run_id,
            "runbook": self.runbook,
            "step": self.step,
            "clock": self.clock,
            "since": self.since.isoformat(),
            "deadline": self.deadline.isoformat() if self.deadline else None,
            "summary": self.summary,
            "what_to_do": self.what_to_do,
            "command": self.command,
            "key": self.key,
        }


ProcessCheck = Callable[[str | None], bool | None]
"""Whether the process ``host:pid`` is alive; None when it cannot tell (another machine)."""


def local_process_alive(owner: str | None) -> bool | None:
    """Whether the owner ``host:pid`` runs, when it is on this machine; else None."""
    host, _, pid = (owner or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_stuck(
    journal: Journal,
    now: datetime,
    prefect_states: Mapping[str, str] | None = None,
    *,
    rules: WatchdogSettings | None = None,
    incident: str | None = None,
    live: bool = False,
    process_alive: ProcessCheck = local_process_alive,
) -> list[Finding]:
    """Everything stuck in the journal at ``now`` (of one ``incident``, or all).

    ``prefect_states``: Prefect's state type (``RUNNING``, ``PAUSED``, ``CRASHED``...) by
    flow run id, as far as it could be read; None when Prefect was not asked. ``live``:
    the commands given carry ``--as`` (live runs need the Slack id of whoever runs them).
    """
    rules = rules or WatchdogSettings()
    runs = {run.id: run for run in journal.runs_of(incident)}
    found: list[Finding] = []
    dead: set[int] = set()
    for run in runs.values():
        if run.status not in ACTIVE_RUN:
            continue
        steps = journal.steps_of(run.id)
        waiting = [s for s in steps if s.status == StepStatus.WAITING and s.request]
        if _is_dead(run, now, prefect_states, rules, process_alive):
            dead.add(run.id)
            found.append(_dead(run, steps, waiting, live))
            continue
        for record in waiting:
            request = WaitRequest.from_data(record.request or {})
            if now - request.deadline_at > timedelta(seconds=rules.gate_grace_seconds):
                found.append(_overdue(run, record, request, now, live))
    found += _clocks(journal, runs, dead, now, rules, incident, live)
    return sorted(found, key=lambda f: (f.deadline or f.since, f.incident, f.kind))


def already_posted(journal: Journal, incident: str | None = None) -> set[str]:
    """The keys of the findings the watchdog posted (its ``watchdog.found`` records)."""
    return {
        str(row.data.get("key"))
        for row in _records_of_kinds(journal, (FOUND_KIND,), incident)
        if isinstance(row.data, dict)
    }


def prefect_states(flow_run_ids: Iterable[str]) -> dict[str, str] | None:
    """Prefect's state type of each flow run it knows, from the server this process's Prefect
    clients point at; None when it could not be read."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    ids = []
    for flow_run_id in flow_run_ids:
        try:
            ids.append(UUID(flow_run_id))
        except ValueError:
            continue
    if not ids:
        return {}
    try:
        with get_client(sync_client=True) as client:
            flow_runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=len(ids)
            )
    except Exception:  # states only sharpen the verdict: without them, heartbeats decide
        return None
    return {str(r.id): str(r.state.type.value) for r in flow_runs if r.state is not None}


def prefect_states_for(settings: Settings, flow_run_ids: Iterable[str]) -> dict[str, str] | None:
    """``prefect_states`` from the server the settings name, or Tocsin's own if it is up
    (never started for this); None when there is none or it could not be read."""
    from tocsin.embedded import prefect_pointed_at, running_server

    wanted = list(flow_run_ids)
    if not wanted:
        return {}
    api_url = settings.prefect_api_url
    if api_url is None:
        found = running_server(settings)
        if found is None:
            return None
        api_url = found[0]
    with prefect_pointed_at(settings, api_url):
        return prefect_states(wanted)


def active_flow_run_ids(journal: Journal, incident: str | None = None) -> list[str]:
    """The flow runs of the active runs (whose Prefect state ``find_stuck`` may need)."""
    return [
        run.flow_run_id
        for run in journal.runs_of(incident)
        if run.status in ACTIVE_RUN and run.flow_run_id
    ]


# what is stuck ---------------------------------------------------------------------------------


def _is_dead(
    run: RunRecord,
    now: datetime,
    states: Mapping[str, str] | None,
    rules: WatchdogSettings,
    process_alive: ProcessCheck,
) -> bool:
    if run.heartbeat_at is None or now - run.heartbeat_at < timedelta(
        seconds=rules.stale_after_seconds
    ):
        return False
    alive = process_alive(run.owner)
    if alive is not None:
        return not alive
    state = (states or {}).get(run.flow_run_id or "")
    return state is None or state.upper() not in _ALIVE_IN_PREFECT


def _dead(
    run: RunRecord, steps: list[StepRecord], waiting: list[StepRecord], live: bool
) -> Finding:
    at = waiting[0] if waiting else next((s for s in steps if s.status == StepStatus.RUNNING), None)
    deadline = WaitRequest.from_data(waiting[0].request or {}).deadline_at if waiting else None
    heartbeat = run.heartbeat_at or run.updated_at
    where = f" (at step {at.step_id})" if at else ""
    command = resume_command(run, live)
    resume = _resume(run, live)
    return Finding(
        kind=FindingKind.RUN_DEAD,
        incident=run.incident,
        run_id=run.id,
        runbook=run.runbook_id,
        step=at.step_id if at else None,
        since=heartbeat,
        deadline=deadline,
        summary=(
            f"the run of {run.runbook_id} for {run.incident}{where} has no process any more: "
            f"{run.owner or 'its owner'} stopped, no heartbeat since {_moment(heartbeat)}"
        ),
        what_to_do=(
            f"{resume[0].upper()}{resume[1:]} again to continue where it stopped (finished "
            "steps are not run again; a step caught mid-action waits for your decision)"
        ),
        command=command,
        key=f"{FindingKind.RUN_DEAD}:{run.id}:{run.owner}:{heartbeat.isoformat()}",
    )


def _overdue(
    run: RunRecord, record: StepRecord, request: WaitRequest, now: datetime, live: bool
) -> Finding:
    late = now - request.deadline_at
    what = {"approval": "approval gate", "manual": "manual task", "in_doubt": "in-doubt step"}
    command = f"tocsin status {shlex.quote(run.incident)}"
    return Finding(
        kind=FindingKind.GATE_OVERDUE,
        incident=run.incident,
        run_id=run.id,
        runbook=run.runbook_id,
        step=record.step_id,
        since=record.waiting_since or run.updated_at,
        deadline=request.deadline_at,
        summary=(
            f"{what.get(request.kind, 'step')} {record.step_id} of {run.runbook_id} for "
            f"{run.incident} still waits {_span(late)} after its deadline "
            f"({_moment(request.deadline_at)}): its run has not closed it"
        ),
        what_to_do=(
            f"Check the process running it ({run.owner or 'unknown'}) and the Prefect server "
            f"with `{command}`; if that process hangs, stop it and {_resume(run, live)} again, "
            "which applies the gate's timeout"
        ),
        command=command,
        key=f"{FindingKind.GATE_OVERDUE}:{run.id}:{record.step_id}:{request.deadline}",
    )


def _clocks(
    journal: Journal,
    runs: Mapping[int, RunRecord],
    dead: set[int],
    now: datetime,
    rules: WatchdogSettings,
    incident: str | None,
    live: bool,
) -> list[Finding]:
    started: dict[tuple[int, str], _Recorded] = {}
    stopped: set[tuple[int, str]] = set()
    for row in _records_of_kinds(journal, _CLOCK_KINDS, incident):
        if row.run_id is None or not isinstance(row.data, dict):
            continue
        name = (row.run_id, str(row.data.get("clock")))
        if row.kind == "clock.started":
            started[name] = row
        else:
            stopped.add(name)
    window = timedelta(seconds=rules.clock_warning_seconds)
    found: list[Finding] = []
    for (run_id, clock), row in started.items():
        run = runs.get(run_id)
        if run is None or (run_id, clock) in stopped:
            continue
        try:
            deadline = _aware(datetime.fromisoformat(str(row.data["deadline_at"])))
            since = _aware(datetime.fromisoformat(str(row.data.get("starts_at") or row.at)))
        except (KeyError, ValueError):
            continue
        if not deadline - window <= now <= deadline + window:
            continue
        found.append(
            _clock(journal, run, run_id in dead, clock, row.data, since, deadline, now, live)
        )
    return found


def _clock(
    journal: Journal,
    run: RunRecord,
    dead: bool,
    clock: str,
    data: Mapping[str, Any],
    since: datetime,
    deadline: datetime,
    now: datetime,
    live: bool,
) -> Finding:
    passed = now >= deadline
    title = str(data.get("title") or clock)
    source = f" ({data['source']})" if data.get("source") else ""
    stopper = _stopping_step(journal, run, data.get("stopped_by"))
    when = (
        f"expired {_span(now - deadline)} ago, at {_moment(deadline)}"
        if passed
        else f"expires in {_span(deadline - now)}, at {_moment(deadline)}"
    )
    by = f" by step {data['stopped_by']}" if data.get("stopped_by") else ""
    command, how = _clock_fix(run, dead, stopper, live)
    return Finding(
        kind=FindingKind.CLOCK_EXPIRING,
        incident=run.incident,
        run_id=run.id,
        runbook=run.runbook_id,
        step=str(data["stopped_by"]) if data.get("stopped_by") else None,
        since=since,
        deadline=deadline,
        summary=(
            f"regulatory clock {clock} of {run.incident}, {title}{source}, {when}, and has "
            f"not been stopped{by}"
        ),
        what_to_do=f"{title}{' now' if passed else ' before the deadline'}; {how}",
        command=command,
        key=(
            f"{FindingKind.CLOCK_EXPIRING}:{run.id}:{clock}:{deadline.isoformat()}:"
            f"{'expired' if passed else 'expiring'}"
        ),
        clock=clock,
    )


def _stopping_step(journal: Journal, run: RunRecord, stopped_by: Any) -> StepRecord | None:
    """The step that stops the clock (``stopped_by`` of its start record), when it waits for
    people: their decision stops the clock."""
    if not stopped_by:
        return None
    record = journal.step(run.id, str(stopped_by))
    if record is None or record.status != StepStatus.WAITING or not record.request:
        return None
    return record


def _clock_fix(
    run: RunRecord, dead: bool, stopper: StepRecord | None, live: bool
) -> tuple[str, str]:
    """The command and the words that get a clock's step done."""
    ticket = shlex.quote(run.incident)
    if dead:
        command = resume_command(run, live)
        return command, f"its run stopped with its process: {_resume(run, live)} again to reach it"
    if stopper is not None and stopper.request:
        request = WaitRequest.from_data(stopper.request)
        verb = "done" if request.kind == "manual" else "approve"
        command = f"tocsin {verb} {ticket} {shlex.quote(stopper.step_id)} --as YOUR_SLACK_ID"
        return command, f"then record it with `{command}`, which stops the clock"
    if run.status in ACTIVE_RUN:
        command = f"tocsin status {ticket}"
        return command, f"its run has not reached the step that stops it: see `{command}`"
    command = f"tocsin report {ticket}"
    return (
        command,
        f"its run ended {run.status} before the step that stops it, so do it by hand and keep "
        f"the proof with the incident (`{command}` shows the clock)",
    )


def resume_command(run: RunRecord, live: bool) -> str:
    """``tocsin run RUNBOOK --ticket T --set ...``: what continues ``run`` where it stopped.

    Secret inputs are journalled as their HMAC: they are left out (the run then refuses to
    start without them, saying which); ``_resume`` asks for them in words.
    """
    parts = ["tocsin", "run", shlex.quote(run.runbook_id), "--ticket", shlex.quote(run.incident)]
    for name, value in run.inputs.items():
        if value is None or name in secret_inputs(run):
            continue
        for item in value if isinstance(value, list) else [value]:
            shown = item if isinstance(item, str) else _json(item)
            parts += ["--set", shlex.quote(f"{name}={shown}")]
    if live:
        parts += ["--as", "YOUR_SLACK_ID"]
    return " ".join(parts)


def secret_inputs(run: RunRecord) -> list[str]:
    """The run's inputs journalled as their HMAC (secret): nobody can give them back but a person."""
    return [
        name
        for name, value in run.inputs.items()
        if any(
            isinstance(item, str) and item.startswith(REDACTED_PREFIX)
            for item in (value if isinstance(value, list) else [value])
        )
    ]


def _resume(run: RunRecord, live: bool) -> str:
    """``run `COMMAND```, in words, with the secret inputs to add to it."""
    words = f"run `{resume_command(run, live)}`"
    secrets = secret_inputs(run)
    if secrets:
        added = " ".join(f"--set {name}=…" for name in secrets)
        words += f" with the secret input{'s' if len(secrets) > 1 else ''} added ({added})"
    return words


# reading ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Recorded:
    incident: str
    run_id: int | None
    kind: str
    step_id: str | None
    at: datetime
    data: dict[str, Any]


def _records_of_kinds(
    journal: Journal, kinds: Iterable[str], incident: str | None
) -> list[_Recorded]:
    """The audit records of these kinds, of every incident (or one), in chain order."""
    query = (
        select(
            events.c.incident,
            events.c.run_id,
            events.c.kind,
            events.c.step_id,
            events.c.at,
            events.c.data,
        )
        .where(events.c.kind.in_(list(kinds)))
        .order_by(events.c.incident, events.c.seq)
    )
    if incident is not None:
        query = query.where(events.c.incident == incident)
    with journal.transaction() as db:
        return [
            _Recorded(
                row.incident,
                row.run_id,
                row.kind,
                row.step_id,
                aware(row.at) or row.at,
                row.data if isinstance(row.data, dict) else {},
            )
            for row in db.execute(query)
        ]


def _aware(moment: datetime) -> datetime:
    return aware(moment) or moment


def _moment(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def _span(delta: timedelta) -> str:
    """``45 s``, ``12 min``, ``2 h 5 min``, ``3 d 4 h``."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def _json(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, default=str)


__all__ = [
    "CHECKPOINT_REASON",
    "FOUND_KIND",
    "Finding",
    "FindingKind",
    "active_flow_run_ids",
    "already_posted",
    "find_stuck",
    "local_process_alive",
    "prefect_states",
    "prefect_states_for",
    "resume_command",
    "secret_inputs",
]
