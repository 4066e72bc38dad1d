"""The demo's scripted approver: decides every waiting step of a run, as people would."""

from __future__ import annotations

import time
from collections.abc import Callable

from tocsin.decisions import DecisionRefused, submit
from tocsin.gates import WaitRequest
from tocsin.running import journal_for
from tocsin.settings import Settings

POLL_SECONDS = 0.3
GIVE_UP_AFTER_SECONDS = 600


def scripted_approver(settings: Settings, ticket: str, say: Callable[[str], None]) -> None:
    """Approve gates with distinct eligible people and mark manual tasks done, until the run ends."""
    journal = journal_for(settings)
    deadline = time.monotonic() + GIVE_UP_AFTER_SECONDS
    try:
        while time.monotonic() < deadline:
            runs = journal.runs_of(ticket)
            if runs and all(run.status not in ("running", "waiting") for run in runs):
                return
            for run in runs:
                for record in journal.steps_of(run.id):
                    if record.status != "waiting" or not record.request:
                        continue
                    request = WaitRequest.from_data(record.request)
                    done_by = {
                        d.actor
                        for d in journal.decisions_of(run.id, record.step_id)
                        if d.status in ("applied", "pending")
                    }
                    _decide(journal, ticket, record.step_id, request, done_by, say)
            time.sleep(POLL_SECONDS)
    finally:
        journal.close()


def _decide(
    journal: object,
    ticket: str,
    step_id: str,
    request: WaitRequest,
    done_by: set[str],
    say: Callable[[str], None],
) -> None:
    from tocsin.journal import Journal

    assert isinstance(journal, Journal)
    if request.kind == "approval":
        candidates = [p for p in request.approvers if p != request.requester and p not in done_by]
        if not candidates:
            return
        actor, kind, checklist = candidates[0], "approve", None
    elif request.kind == "manual":
        if done_by:
            return
        actor, kind, checklist = "U0ITPARTNER", "done", list(range(1, len(request.checklist) + 1))
    else:
        actor, kind, checklist = "U0ONCALL", "approve", None
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
