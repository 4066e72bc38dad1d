"""A runbook run in this process in sandbox mode (``tocsin.running.start_run``), decided from
its ``on_started`` thread: by ``People`` (gates approved and manual tasks ticked as people
would through ``tocsin.decisions``) or by any other decider (the demo's scripted people, who
click in the fake Slack); the Microsoft fake kept so that a test reads the tenant's own
final state afterwards, and the journal's record of each step and of who decided it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.engine_support import settings_journal
from tests.microsoft_support import INVOKE
from tocsin.decisions import submit
from tocsin.gates import WaitRequest
from tocsin.incident import Incident
from tocsin.integrations.microsoft.fake import FakeMicrosoft
from tocsin.journal import Journal, StepRecord
from tocsin.running import start_run
from tocsin.sandbox.assembly import Sandbox
from tocsin.settings import load_settings
from tocsin.statuses import ACTIVE_RUN, StepStatus
from tocsin.validation import LoadedRunbook

RESPONDER = "U0SUPPORT"  # one of the shipped runbooks' operators (responders)


@dataclass
class People:
    """Who decides each waiting step, from the run's ``on_started`` thread, until the
    incident's runs end: the first eligible approver approves a gate, a responder ticks
    every item of a manual task."""

    ticket: str
    fake: FakeMicrosoft | None = None
    decided: list[str] = field(default_factory=list)
    prompts: dict[str, str] = field(default_factory=dict)
    ended: threading.Event = field(default_factory=threading.Event)

    def __call__(self, sandbox: Sandbox | None) -> None:
        assert sandbox is not None, "sandbox mode only"
        self.fake = sandbox.fake("microsoft", FakeMicrosoft)
        journal = settings_journal()
        deadline = time.monotonic() + 400
        try:
            while time.monotonic() < deadline:
                runs = journal.runs_of(self.ticket)
                if runs and all(run.status not in ACTIVE_RUN for run in runs):
                    return
                for run in runs:
                    for record in journal.steps_of(run.id):
                        if record.status != StepStatus.WAITING or not record.request:
                            continue
                        if record.step_id not in self.decided:
                            self.decide(
                                journal, record.step_id, WaitRequest.from_data(record.request)
                            )
                time.sleep(0.3)  # bounded by the deadline above
        finally:
            journal.close()
            self.ended.set()

    def decide(self, journal: Journal, step_id: str, request: WaitRequest) -> None:
        self.prompts[step_id] = request.prompt
        checklist: list[int] | None = None
        if request.kind == "approval":
            # as many distinct approvers as the quorum asks, none of them the requester
            actors = [p for p in request.approvers if p != request.requester][: request.quorum]
            kind = "approve"
        else:
            actors, kind = [RESPONDER], "done"
            checklist = list(range(1, len(request.checklist) + 1))
        for actor in actors:
            submit(
                journal,
                incident=self.ticket,
                step_id=step_id,
                kind=kind,
                actor=actor,
                channel="cli",
                comment="end-to-end test",
                checklist=checklist,
                wait=False,
            )
        self.decided.append(step_id)


def start_in_sandbox(
    loaded: LoadedRunbook,
    incident: Incident,
    inputs: dict[str, Any],
    on_started: Callable[[Sandbox | None], None],
    lines: list[str] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Run ``loaded`` to its end with the session's settings, ``on_started`` deciding from
    its thread; the run's outcome and the lines it printed (appended to ``lines``, if given)."""
    printed = [] if lines is None else lines
    outcome = start_run(
        loaded,
        incident,
        inputs,
        settings=load_settings(),
        printer=printed.append,
        on_started=on_started,
    )
    return outcome, printed


def run_in_sandbox(
    loaded: LoadedRunbook, ticket: str, inputs: dict[str, Any]
) -> tuple[dict[str, Any], People, list[str]]:
    """Run ``loaded`` to its end; its outcome, the people (and the fake), the printed lines."""
    people = People(ticket)
    incident = Incident(ticket=ticket, requested_by="U0REQUESTER")
    outcome, lines = start_in_sandbox(loaded, incident, inputs, people)
    assert people.ended.wait(60), "the deciding thread did not end"
    assert people.fake is not None, "the run did not start the Microsoft fake"
    return outcome, people, lines


def step_records(ticket: str) -> dict[str, Any]:
    """The journal's record of each step of the incident's one run, by step id."""
    return journal_records(ticket)[0]


def journal_records(ticket: str) -> tuple[dict[str, StepRecord], dict[str, set[str]]]:
    """The journal's record of each step of the incident's one run, and who decided each
    (gates and manual tasks; nobody for the others), by step id."""
    journal = settings_journal()
    try:
        (run,) = journal.runs_of(ticket)
        steps = {record.step_id: record for record in journal.steps_of(run.id)}
        deciders = {
            step_id: {d.actor for d in journal.decisions_of(run.id, step_id)} for step_id in steps
        }
        return steps, deciders
    finally:
        journal.close()


def calls(fake: FakeMicrosoft) -> list[str]:
    """What the tenant was asked, in order: Graph as ``METHOD path``, Exchange as its cmdlet."""
    seen = []
    for request in fake.requests:
        if request.path == INVOKE:
            seen.append(str(request.json()["CmdletInput"]["CmdletName"]))
        elif request.path.startswith("/v1.0/"):
            seen.append(f"{request.method} {request.path.removeprefix('/v1.0')}")
    return seen
