"""The demo's scripted people: approvers clicking in (fake) Slack, an IT partner ticking tasks.

The demo runs the real gateway on loopback. Approvers click Approve on the gate
messages the run posted in the sandbox Slack, through requests signed as Slack signs
them, so the demo exercises the same path as production: signature check, approver
group membership, journal, resume, ``chat.update``. Manual tasks are marked done as
``tocsin done`` would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from tocsin.decisions import DecisionRefused, submit
from tocsin.gates import WaitRequest
from tocsin.journal import Journal
from tocsin.running import journal_for
from tocsin.settings import Settings
from tocsin.statuses import ACTIVE_RUN, DecisionStatus, StepStatus

if TYPE_CHECKING:
    from tocsin.integrations.slack.simulated_user import SimulatedSlack
    from tocsin.sandbox.assembly import Sandbox

POLL_SECONDS = 0.3
GIVE_UP_AFTER_SECONDS = 600
IT_PARTNER = "U0ITPARTNER"

Say = Callable[[str], None]


def scripted_approver(settings: Settings, ticket: str, say: Say, sandbox: Sandbox | None) -> None:
    """Decide every waiting step of the incident's runs, as people would, until they end."""
    from tocsin.gateway import Gateway, GatewayServer
    from tocsin.integrations.slack.fake import FakeSlack
    from tocsin.integrations.slack.sandbox import SANDBOX_SIGNING_SECRET
    from tocsin.integrations.slack.simulated_user import SimulatedSlack

    journal = journal_for(settings)
    # The demo's gateway is the real one, given the sandbox's settings and secrets.
    gateway = Gateway(sandbox.settings, secrets=sandbox.secrets) if sandbox is not None else None
    server = GatewayServer(gateway.app).start() if gateway is not None else None
    slack = (
        SimulatedSlack(
            server.url, SANDBOX_SIGNING_SECRET, fake_slack=sandbox.fake("slack", FakeSlack)
        )
        if server is not None and sandbox is not None
        else None
    )
    if server is not None:
        say(f"[sandbox] gateway listening on {server.url} (Slack clicks are signed requests)")
    clicked: set[tuple[int, str, str]] = set()
    deadline = time.monotonic() + GIVE_UP_AFTER_SECONDS
    try:
        while time.monotonic() < deadline:
            runs = journal.runs_of(ticket)
            if runs and all(run.status not in ACTIVE_RUN for run in runs):
                return
            for run in runs:
                for record in journal.steps_of(run.id):
                    if record.status != StepStatus.WAITING or not record.request:
                        continue
                    request = WaitRequest.from_data(record.request)
                    if request.kind == "approval" and slack is not None and sandbox is not None:
                        _click(
                            journal, sandbox, slack, run.id, record.step_id, request, clicked, say
                        )
                    else:
                        _decide(journal, ticket, run.id, record.step_id, request, say)
            time.sleep(POLL_SECONDS)
    finally:
        if slack is not None:
            slack.close()
        if server is not None:
            server.stop()
        if gateway is not None:
            gateway.close()
        journal.close()


def _click(
    journal: Journal,
    sandbox: Sandbox,
    slack: SimulatedSlack,
    run_id: int,
    step_id: str,
    request: WaitRequest,
    clicked: set[tuple[int, str, str]],
    say: Say,
) -> None:
    """One more eligible approver clicks Approve on the gate's Slack message."""
    from tocsin.integrations.slack.fake import FakeSlack
    from tocsin.integrations.slack.incident_thread import APPROVE_ACTION, GATE

    counted = {
        d.actor
        for d in journal.decisions_of(run_id, step_id)
        if d.kind == "approve" and d.status in (DecisionStatus.APPLIED, DecisionStatus.PENDING)
    }
    if len(counted) >= request.quorum:
        return  # enough approvals on their way
    run = next(r for r in journal.runs_of() if r.id == run_id)
    post = journal.post(run.incident, GATE, f"{run_id}:{step_id}")
    if post is None:
        return  # not posted yet
    try:
        message = sandbox.fake("slack", FakeSlack).message(post.channel, post.ts)
    except KeyError:
        return
    candidates = [
        person
        for person in request.approvers
        if person != request.requester
        and person not in counted
        and (run_id, step_id, person) not in clicked
    ]
    if not candidates:
        return
    person = candidates[0]
    clicked.add((run_id, step_id, person))
    say(f"[scripted approver] {person} clicks Approve on {step_id} in Slack")
    answer = slack.click(person, message, APPROVE_ACTION)
    if answer.status_code != 200:
        say(f"[scripted approver] the gateway answered {answer.status_code}: {answer.text}")


def _decider(request: WaitRequest, preferred: str) -> str:
    """Who of the people the runbook names decides a manual task or an interrupted step."""
    if request.open_to_anyone or preferred in request.approvers:
        return preferred
    others = [p for p in request.approvers if p != request.requester]
    return others[0] if others else preferred


def _decide(
    journal: Journal, ticket: str, run_id: int, step_id: str, request: WaitRequest, say: Say
) -> None:
    done_by = {
        d.actor
        for d in journal.decisions_of(run_id, step_id)
        if d.status in (DecisionStatus.APPLIED, DecisionStatus.PENDING)
    }
    if request.kind == "approval":  # live mode has no demo; kept for completeness
        candidates = [p for p in request.approvers if p != request.requester and p not in done_by]
        if not candidates:
            return
        actor, kind, checklist = candidates[0], "approve", None
    elif request.kind == "manual":
        if done_by:
            return
        actor = _decider(request, IT_PARTNER)
        kind, checklist = "done", list(range(1, len(request.checklist) + 1))
    else:
        if done_by:
            return
        actor, kind, checklist = _decider(request, "U0ONCALL"), "approve", None
    say(f"[scripted approver] {actor}: {kind} {step_id}")
    try:
        submit(
            journal,
            incident=ticket,
            step_id=step_id,
            kind=kind,
            actor=actor,
            channel="demo",
            comment="scripted demo decision",
            checklist=checklist,
            wait=False,
        )
    except DecisionRefused as refused:
        say(f"[scripted approver] refused: {refused.message}")
