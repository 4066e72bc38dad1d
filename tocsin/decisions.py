"""Deciding a waiting step from outside the run: the CLI, the demo's scripted approver, the gateway.

A decision is judged at once (so the person hears why it is refused), written
to the journal, and only then handed to the paused flow with ``resume_flow_run``.
If the flow is busy (not paused at that instant) the decision stays pending in
the journal and the flow applies it before it next waits: never lost, and the
flow's conditional update applies it at most once.

When the Prefect server does not answer (restarted, down), the decision is journalled
all the same and queued: the waiting flow rides out the outage and, once the server is
back, reads the journal before it pauses again, so the decision is applied then. Nothing
re-sends it; the journal is the queue (see docs/faults.md).
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from tocsin.errors import ConfigurationError, DecisionRefused
from tocsin.gates import Proposal, WaitRequest, judge
from tocsin.journal import DecisionRecord, Journal, RunRecord, StepRecord
from tocsin.journal.decisions import NewDecision
from tocsin.statuses import DecisionStatus, StepStatus

if TYPE_CHECKING:
    from tocsin.settings import Settings

SETTLE_TIMEOUT_SECONDS = 20.0
_log = logging.getLogger(__name__)


class Delivery(enum.StrEnum):
    """What became of handing a journalled decision to its paused flow run."""

    SETTLED = "settled"  # the flow applied or refused it
    RESUMED = "resumed"  # the flow run was resumed; it applies the decision from the journal
    LATER = "later"  # the flow was busy: it reads the journal before it next waits
    UNREACHABLE = "unreachable"  # the Prefect server does not answer: queued in the journal


@dataclass(frozen=True)
class Outcome:
    decision: DecisionRecord
    message: str
    run: RunRecord | None = None


def find_waiting_run(
    journal: Journal, incident: str, step_id: str
) -> tuple[RunRecord | None, StepStatus | None]:
    """The run of ``incident`` that has ``step_id``, preferring one where it waits."""
    candidates = journal.runs_of(incident)
    fallback: tuple[RunRecord | None, StepStatus | None] = (None, None)
    for run in candidates:
        record = journal.step(run.id, step_id)
        if record is None:
            continue
        if record.status == StepStatus.WAITING:
            return run, record.status
        fallback = (run, record.status)
    return fallback


def submit(
    journal: Journal,
    *,
    incident: str,
    step_id: str,
    kind: str,
    actor: str,
    channel: str,
    comment: str = "",
    checklist: Sequence[int] | None = None,
    gate_hash: str | None = None,
    vouched: Sequence[str] | Callable[[WaitRequest], Sequence[str]] = (),
    run_id: int | None = None,
    actor_details: Mapping[str, Any] | None = None,
    wait: bool = True,
    deliver: bool = True,
    outputs: Mapping[str, Any] | None = None,
    flushed: bool = True,
) -> Outcome:
    """Judge, journal and deliver one decision; raise ``DecisionRefused`` when it is refused.

    ``vouched``: Slack user groups the channel checked the person belongs to; or a function
    of the gate's request giving them (asked only when the person is not listed).
    ``run_id``: the run the decision is for, when the channel knows it (a Slack button).
    ``actor_details``: who the person is according to the channel (name, e-mail), audited.
    ``deliver=False`` only journals it: the caller hands it to the flow later with
    ``deliver_decision`` (the gateway answers Slack first).
    ``outputs``: with ``done`` for an interrupted step, what its action returned, as the
    person read it; the run checks them against the action's declared outputs.
    ``flushed=False``: the decision's commit need not reach the disk at once (the gateway:
    the click it judges is on disk in its queue, and judged again if the decision is lost).
    """
    approvals: list[str] | None = None
    found = None
    if run_id is not None:
        run, found, approvals = journal.gate_context(run_id, step_id)
        if run is not None and run.incident != incident:
            run, found, approvals = None, None, None
    else:
        run, _ = find_waiting_run(journal, incident, step_id)
    if run is None:
        raise no_run_refusal(journal, incident, step_id)
    record = journal.step(run.id, step_id) if run_id is None else found
    judged = judge_submission(
        run,
        record,
        approvals,
        incident=incident,
        step_id=step_id,
        kind=kind,
        actor=actor,
        channel=channel,
        comment=comment,
        checklist=checklist,
        gate_hash=gate_hash,
        vouched=vouched,
        actor_details=actor_details,
        outputs=outputs,
        approvers_of=lambda gate: journal.approvers_so_far(run.id, step_id, gate),
    )
    decision = journal.record_decision(judged.decision, flushed=flushed)
    if judged.refusal is not None:
        raise DecisionRefused(judged.refusal, _hint_for(judged.refusal, incident))
    if not deliver:
        return Outcome(decision, f"{kind} from {actor} recorded", run)
    delivery = deliver_decision(journal, run, decision, wait=wait)
    return _outcome_of(journal, decision, step_id, delivery)


@dataclass(frozen=True)
class Judgement:
    """A decision judged, not yet journalled: the decision to journal (refused, with its
    reason, or pending for the flow to apply) and its audit record."""

    decision: NewDecision
    refusal: str | None


def no_run_refusal(journal: Journal, incident: str, step_id: str) -> DecisionRefused:
    """The refusal of a decision for a step no run of the incident has (nothing journalled)."""
    known = journal.runs_of(incident)
    hint = (
        f"runs of {incident}: {', '.join(r.runbook_id for r in known)}; `tocsin status {incident}` shows what they wait for"
        if known
        else f"no run of {incident} is recorded; check the ticket key"
    )
    return DecisionRefused(f"no run of {incident} has a step {step_id!r}", hint)


def judge_submission(
    run: RunRecord,
    record: StepRecord | None,
    approvals: list[str] | None,
    *,
    incident: str,
    step_id: str,
    kind: str,
    actor: str,
    channel: str,
    comment: str = "",
    checklist: Sequence[int] | None = None,
    gate_hash: str | None = None,
    vouched: Sequence[str] | Callable[[WaitRequest], Sequence[str]] = (),
    actor_details: Mapping[str, Any] | None = None,
    outputs: Mapping[str, Any] | None = None,
    approvers_of: Callable[[str], list[str]] = lambda gate: [],
) -> Judgement:
    """Judge a decision on ``run``'s step (``record``, as journalled), given who approved
    its gate so far (``approvals``; None: ``approvers_of(gate hash)`` says), as ``submit``
    does, without writing anything."""
    status = record.status if record is not None else None
    request = WaitRequest.from_data(record.request) if record and record.request else None
    if callable(vouched):
        vouched = vouched(request) if request is not None else ()
    # Pending approvals count too: a second click before the flow applied the first is a duplicate.
    if approvals is None:
        approvals = approvers_of(request.gate_hash) if request is not None else []
    proposal = Proposal(
        kind,
        actor,
        gate_hash,
        tuple(checklist) if checklist is not None else None,
        tuple(vouched),
    )
    refusal = judge(status, request, proposal, approvals, step_id)
    if (
        refusal is None
        and request is not None
        and request.kind == "manual"
        and kind == "done"
        and request.checklist
        and not checklist
    ):
        refusal = (
            f"tick the checklist items you did ({len(request.checklist)} in all) with --check N "
            "or --all; `tocsin status` lists them"
        )
    if refusal is None and outputs is not None:
        refusal = _refusal_of_outputs(request, kind, step_id, outputs)
    details = {"actor_details": dict(actor_details)} if actor_details else {}
    if refusal is not None:
        refused = NewDecision(
            run_id=run.id,
            step_id=step_id,
            kind=kind,
            actor=actor,
            channel=channel,
            comment=comment,
            checklist=checklist,
            gate_hash=gate_hash,
            status=DecisionStatus.REFUSED,
            reason=refusal,
            vouched=vouched,
            audit=(
                incident,
                "decision.refused",
                {
                    "decision": kind,
                    "channel": channel,
                    "reason": refusal,
                    "comment": comment,
                    **details,
                },
            ),
        )
        return Judgement(refused, refusal)
    assert request is not None
    pending = NewDecision(
        run_id=run.id,
        step_id=step_id,
        kind=kind,
        actor=actor,
        channel=channel,
        comment=comment,
        checklist=checklist,
        gate_hash=request.gate_hash,  # judged above: a prefix stands for this hash
        vouched=vouched,
        audit=(
            incident,
            "decision.received",
            {
                "decision": kind,
                "channel": channel,
                "comment": comment,
                "checklist": list(checklist or []),
                **({"vouched_groups": list(vouched)} if vouched else {}),
                **details,
                **({"outputs": dict(outputs)} if outputs is not None else {}),
            },
        ),
        outputs=dict(outputs) if outputs is not None else None,
    )
    return Judgement(pending, None)


def _outcome_of(
    journal: Journal, decision: DecisionRecord, step_id: str, delivery: Delivery
) -> Outcome:
    final = journal.decision(decision.id) or decision
    said = f"{final.kind} from {final.actor}"
    if final.status == DecisionStatus.REFUSED:
        raise DecisionRefused(final.reason or "refused by the run")
    if final.status == DecisionStatus.APPLIED:
        return Outcome(final, f"{said} applied to {step_id}")
    if delivery == Delivery.UNREACHABLE:
        return Outcome(final, f"{said} recorded and queued: {PREFECT_DOWN}")
    return Outcome(final, f"{said} recorded; the run applies it when it next waits")


PREFECT_DOWN = (
    "the Prefect server does not answer, so the run applies it when the Prefect server is back "
    "(nothing to do again)"
)


def submit_where_reachable(settings: Settings, journal: Journal, **decision: Any) -> Outcome:
    """``submit`` from a command: delivered through Tocsin's Prefect server when it answers,
    else judged, journalled and queued for the run to apply when the server is back."""
    from tocsin.embedded import ensure_server, prefect_pointed_at

    try:
        url = ensure_server(settings)
    except ConfigurationError as down:
        _log.debug("deciding without the Prefect server: %s", down.message)
        queued = submit(journal, **decision, deliver=False)
        return _outcome_of(journal, queued.decision, queued.decision.step_id, Delivery.UNREACHABLE)
    with prefect_pointed_at(settings, url):
        return submit(journal, **decision)


def deliver_decision(
    journal: Journal, run: RunRecord, decision: DecisionRecord, *, wait: bool
) -> Delivery:
    """Resume the paused flow; if it is busy, or the Prefect server is down, the flow finds
    the decision in the journal itself when it next looks (``Delivery`` says which)."""
    import httpx
    from prefect.exceptions import FlowPauseTimeout, NotPausedError, ObjectNotFound
    from prefect.flow_runs import resume_flow_run

    if run.flow_run_id is None:
        return Delivery.LATER
    deadline = time.monotonic() + (SETTLE_TIMEOUT_SECONDS if wait else 2.0)
    delivered = False
    retry_in = 0.1  # doubled at each try: a flow between two pauses is paused again soon
    while time.monotonic() < deadline:
        current = journal.decision(decision.id)
        if current is not None and current.status != DecisionStatus.PENDING:
            return Delivery.SETTLED
        if not delivered:
            try:
                resume_flow_run(
                    UUID(run.flow_run_id),
                    run_input={
                        "step_id": decision.step_id,
                        "decision": decision.kind,
                        "actor": decision.actor,
                        "comment": decision.comment,
                        "checklist": decision.checklist,
                        "gate_hash": decision.gate_hash,
                        "decision_id": decision.id,
                    },
                )
                delivered = True
            except FlowPauseTimeout:
                # The gate's time is over; the flow settles the decision as refused.
                _log.debug("decision %s not delivered: its gate timed out", decision.id)
                return Delivery.LATER
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # No server to resume the run through: it is queued in the journal, which the
                # waiting flow reads again when the server is back.
                _log.debug("decision %s queued, the Prefect server is down: %s", decision.id, exc)
                return Delivery.UNREACHABLE
            except (NotPausedError, RuntimeError, ObjectNotFound, httpx.HTTPError) as exc:
                # The flow is between two waits, or the server is busy: it reads the journal
                # before it waits again, so the decision is applied all the same.
                _log.debug("decision %s not delivered yet: %s", decision.id, exc)
        if delivered and not wait:
            return Delivery.RESUMED
        if delivered:
            time.sleep(0.1)  # waiting for the flow to settle it
        else:
            time.sleep(min(retry_in, max(0.0, deadline - time.monotonic())))
            retry_in *= 2
    return Delivery.RESUMED if delivered else Delivery.LATER


def _refusal_of_outputs(
    request: WaitRequest | None, kind: str, step_id: str, outputs: Mapping[str, Any]
) -> str | None:
    """Outputs go only with done for an interrupted step, name outputs its action declares,
    and never a secret one (the decision and its audit record would hold the value)."""
    if request is None or request.kind != "in_doubt" or kind != "done":
        return (
            f"outputs are given only with done for a step interrupted by a crash; "
            f"{step_id!r} is not one"
        )
    offered = request.guarded.get(step_id) or {}
    action = offered.get("action") or "its action"
    secret = sorted(set(outputs) & set(offered.get("secret_outputs") or ()))
    if secret:
        return (
            f"{', '.join(secret)} of {action} is a secret: it is never given in a decision; "
            "leave it out"
        )
    declared = offered.get("outputs")
    unknown = sorted(set(outputs) - set(declared)) if declared is not None else []
    if unknown:
        return (
            f"{action} has no output {', '.join(unknown)}; its outputs are "
            f"{', '.join(declared or []) or 'none'}"
        )
    return None


def _hint_for(refusal: str, incident: str) -> str:
    if "not waiting" in refusal or "another version" in refusal:
        return f"`tocsin status {incident}` shows what the run waits for now"
    if "approver group" in refusal:
        return "ask someone of the group, or have the runbook's approver group changed"
    return ""


# DecisionRefused lives in the error tree (tocsin.errors); callers catch it from here too.
__all__ = [
    "DecisionRefused",
    "Delivery",
    "Judgement",
    "Outcome",
    "deliver_decision",
    "find_waiting_run",
    "judge_submission",
    "no_run_refusal",
    "submit",
    "submit_where_reachable",
]
