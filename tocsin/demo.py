"""The demo's scripted people: approvers clicking in (fake) chat, an IT partner ticking tasks.

The demo runs the real gateway on loopback. Approvers click Approve on the gate
messages the run posted in the sandbox's chat, through the integration's demo approver
(``Integration.demo_approver``: Slack's clicks with requests signed as Slack signs them), so
the demo exercises the same path as production: signature check, approver group
membership, journal, resume, message update. Manual tasks are marked done as ``tocsin
done`` would; without a demo approver, gates are decided the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from tocsin.decisions import DecisionRefused, submit
from tocsin.gates import WaitRequest
from tocsin.integration import DemoApprover, DemoContext, installed_integrations
from tocsin.journal import Journal, RunRecord
from tocsin.running import journal_for
from tocsin.settings import Settings
from tocsin.statuses import ACTIVE_RUN, DecisionStatus, StepStatus

if TYPE_CHECKING:
    from tocsin.sandbox.assembly import Sandbox

POLL_SECONDS = 0.3
GIVE_UP_AFTER_SECONDS = 600
IT_PARTNER = "U0ITPARTNER"

Say = Callable[[str], None]


def _demo_approver(context: DemoContext) -> DemoApprover | None:
    for integration in installed_integrations():
        if integration.demo_approver is not None:
            approver = integration.demo_approver(context)
            if approver is not None:
                return approver
    return None


def scripted_approver(settings: Settings, ticket: str, say: Say, sandbox: Sandbox | None) -> None:
    """Decide every waiting step of the incident's runs, as people would, until they end."""
    from tocsin.gateway import Gateway, GatewayServer

    journal = journal_for(settings)
    # The demo's gateway is the real one, given the sandbox's settings and secrets.
    gateway = Gateway(sandbox.settings, secrets=sandbox.secrets) if sandbox is not None else None
    server = GatewayServer(gateway.app).start() if gateway is not None else None
    approver = (
        _demo_approver(
            DemoContext(sandbox.settings, sandbox.secrets, sandbox.fakes, server.url, journal, say)
        )
        if server is not None and sandbox is not None
        else None
    )
    if server is not None:
        say(f"[sandbox] gateway listening on {server.url} (clicks are signed requests)")
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
                    if request.kind == "approval" and approver is not None:
                        _click(journal, approver, run, record.step_id, request, clicked, say)
                    else:
                        _decide(journal, ticket, run.id, record.step_id, request, say)
            time.sleep(POLL_SECONDS)
    finally:
        if approver is not None:
            approver.close()
        if server is not None:
            server.stop()
        if gateway is not None:
            gateway.close()
        journal.close()


def _click(
    journal: Journal,
    approver: DemoApprover,
    run: RunRecord,
    step_id: str,
    request: WaitRequest,
    clicked: set[tuple[int, str, str]],
    say: Say,
) -> None:
    """One more eligible approver clicks Approve on the gate's message."""
    counted = {
        d.actor
        for d in journal.decisions_of(run.id, step_id)
        if d.kind == "approve" and d.status in (DecisionStatus.APPLIED, DecisionStatus.PENDING)
    }
    if len(counted) >= request.quorum:
        return  # enough approvals on their way
    candidates = [
        person
        for person in request.approvers
        if person != request.requester
        and person not in counted
        and (run.id, step_id, person) not in clicked
    ]
    if not candidates:
        return
    if approver.approve(run, step_id, candidates[0]):
        clicked.add((run.id, step_id, candidates[0]))


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
