"""Human waits (approval gates, manual tasks, in-doubt steps) and the rules for deciding them.

A decision is judged in StackStorm's order, the same in the CLI (to answer the
person at once) and in the flow (which applies it): is the step still waiting,
may this person answer, is the answer well formed. Each refusal is one sentence.
``apply_decisions`` applies the decisions waiting in the journal to the open waits,
in order, and says what changed; the flow and the gateway benchmark both use it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from tocsin.journal import DecisionRecord

from tocsin.statuses import StepStatus

WaitKind = Literal["approval", "manual", "in_doubt"]
DecisionKind = Literal["approve", "reject", "done"]
DECIDED = frozenset(
    {StepStatus.APPROVED, StepStatus.REJECTED, StepStatus.DONE, StepStatus.TIMED_OUT}
)
"""Step statuses a person's decision (or the gate's deadline) settled."""
ALLOWED_KINDS: dict[str, tuple[str, ...]] = {
    "approval": ("approve", "reject"),
    "manual": ("done", "reject"),
    "in_doubt": ("approve", "done", "reject"),
}


@dataclass
class WaitRequest:
    """What a waiting step asks for; stored with the step and shown by ``tocsin status``."""

    kind: WaitKind
    prompt: str
    deadline: str
    requester: str
    gate_hash: str
    approvers: list[str] = field(default_factory=list)
    usergroups: list[str] = field(default_factory=list)
    group: str = ""
    quorum: int = 1
    escalated: bool = False
    reminded: bool = False
    checklist: list[str] = field(default_factory=list)
    guarded: dict[str, Any] = field(default_factory=dict)
    open_to_anyone: bool = False
    """Sandbox only: a manual task or in-doubt step for which the runbook names nobody."""
    requester_known: bool = True
    """False when the run's requester has no known Slack identity: one more approver is needed."""

    def deciders_named(self) -> bool:
        return bool(self.approvers or self.usergroups)

    def as_data(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> WaitRequest:
        return cls(**data)

    @property
    def deadline_at(self) -> datetime:
        return datetime.fromisoformat(self.deadline)


def gate_hash(runbook_digest: str, step_id: str, guarded: dict[str, Any]) -> str:
    """Binds a decision to what was shown: the runbook version and the guarded steps' parameters."""
    payload = json.dumps(
        {"runbook": runbook_digest, "step": step_id, "guarded": guarded},
        sort_keys=True,
        default=str,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class Proposal:
    """A decision someone wants to apply."""

    kind: str
    actor: str
    gate_hash: str | None = None
    checklist: tuple[int, ...] | None = None
    vouched: tuple[str, ...] = ()
    """Slack user groups the deciding channel checked the person belongs to, just now."""


def judge(
    step_status: str | None,
    request: WaitRequest | None,
    proposal: Proposal,
    approvals_so_far: list[str],
    step_id: str,
) -> str | None:
    """Why this decision is refused, or None when it may be applied."""
    if step_status != StepStatus.WAITING or request is None:
        state = step_status or "not started"
        if step_status in DECIDED:
            return (
                f"step {step_id!r} is not waiting for a decision (it is {state}): it was "
                f"already decided, and this {proposal.kind} came too late to count"
            )
        return f"step {step_id!r} is not waiting for a decision (it is {state})"
    allowed = ALLOWED_KINDS[request.kind]
    if proposal.kind not in allowed:
        what = {
            "approval": "an approval gate",
            "manual": "a manual task",
            "in_doubt": "an in-doubt step",
        }
        return (
            f"step {step_id!r} is {what[request.kind]}: it takes "
            f"{' or '.join(allowed)}, not {proposal.kind}"
        )
    if not proposal.actor.strip():
        return "a decision needs the identity of the person making it"
    if request.kind == "approval":
        if proposal.actor == request.requester:
            return f"{proposal.actor} started this run and cannot decide its own approval gate"
        vouched_member = bool(set(proposal.vouched) & set(request.usergroups))
        if proposal.actor not in request.approvers and not vouched_member:
            groups = request.group + (" (escalated)" if request.escalated else "")
            if request.usergroups:
                return (
                    f"{proposal.actor} is not listed in approver group {groups}; membership of "
                    f"Slack user group {', '.join(request.usergroups)} is checked when deciding from Slack"
                )
            return f"{proposal.actor} is not in approver group {groups}"
        if proposal.kind == "approve" and proposal.actor in approvals_so_far:
            return f"{proposal.actor} has already approved {step_id!r}; the quorum counts distinct people"
    else:
        refusal = _refusal_for_task(request, proposal, step_id)
        if refusal is not None:
            return refusal
    if proposal.gate_hash and not request.gate_hash.startswith(proposal.gate_hash):
        return (
            f"this decision was made on another version of {step_id!r} (the runbook or its "
            "inputs changed since it was shown); look at it again with `tocsin status`"
        )
    if proposal.checklist is not None:
        wrong = [n for n in proposal.checklist if not 1 <= n <= len(request.checklist)]
        if wrong:
            return f"checklist item(s) {', '.join(map(str, wrong))} do not exist (1 to {len(request.checklist)})"
    return None


def _refusal_for_task(request: WaitRequest, proposal: Proposal, step_id: str) -> str | None:
    """Manual tasks and in-doubt steps: decided by the people the runbook names, deny by default."""
    if request.kind == "in_doubt" and proposal.kind == "approve":
        if proposal.actor == request.requester:
            return (
                f"{proposal.actor} started this run and cannot alone run {step_id!r} again; "
                "someone of the group that approved it must decide"
            )
    if request.open_to_anyone:
        return None
    if not request.deciders_named():
        return (
            f"nobody may decide {step_id!r}: the runbook names no group for it (give the manual "
            "task an `assignee:` that is an approver group, or declare `operators:`)"
        )
    member = proposal.actor in request.approvers or bool(
        set(proposal.vouched) & set(request.usergroups)
    )
    if not member:
        group = request.group or "the runbook's operators"
        if request.usergroups:
            return (
                f"{proposal.actor} is not listed in {group}; membership of Slack user group "
                f"{', '.join(request.usergroups)} is checked when deciding from Slack"
            )
        return f"{proposal.actor} is not in {group}, who decide {step_id!r}"
    return None


WaitOutcome = Literal["counted", "approved", "rejected", "done", "failed", "run_again"]
"""What an applied decision does to its wait: ``counted`` (an approval short of the quorum,
the gate stays open), ``approved``, ``rejected``, ``done`` or ``failed`` (the wait is
closed with that step status), ``run_again`` (an in-doubt step's action runs again)."""


@dataclass(frozen=True)
class Applied:
    """A decision that may be applied, and what it does to its wait."""

    decision: DecisionRecord
    outcome: WaitOutcome
    approvals: tuple[str, ...] = ()
    """An approval gate's approvers counted so far, this decision included."""


@dataclass(frozen=True)
class Refused:
    """A decision that must be refused, and the sentence saying why."""

    decision: DecisionRecord
    reason: str


def apply_decisions(
    pending: Sequence[DecisionRecord],
    waits: Mapping[str, WaitRequest],
    statuses: Mapping[str, str | None],
    approvals: Mapping[str, Sequence[str]],
) -> list[Applied | Refused]:
    """What the pending decisions change, oldest first: each applied or refused.

    ``waits``: the open waits by step id; ``statuses``: the journalled status of each step a
    decision names; ``approvals``: who approved each open gate's current version so far.
    A decision is judged after those before it: once a gate closes, later ones come too late.
    """
    waits = dict(waits)
    statuses = dict(statuses)
    counted = {step_id: list(names) for step_id, names in approvals.items()}
    changes: list[Applied | Refused] = []
    for decision in pending:
        step_id = decision.step_id
        request = waits.get(step_id)
        so_far = counted.get(step_id, []) if request is not None else []
        proposal = Proposal(
            decision.kind,
            decision.actor,
            decision.gate_hash,
            tuple(decision.checklist) if decision.checklist is not None else None,
            tuple(decision.vouched or ()),
        )
        refusal = judge(statuses.get(step_id), request, proposal, so_far, step_id)
        if refusal is not None:
            changes.append(Refused(decision, refusal))
            continue
        assert request is not None  # judge refuses a decision for a step that does not wait
        outcome = _outcome(request, decision.kind)
        if outcome == "counted":
            # Counted as the journal counts it: an approval of the gate's current version.
            if decision.gate_hash in (None, request.gate_hash):
                so_far = [*so_far, decision.actor]
                counted[step_id] = so_far
            if len(set(so_far)) >= request.quorum:
                outcome = "approved"
        if outcome != "counted":
            del waits[step_id]
            if outcome != "run_again":  # the action runs again: its status is set then
                statuses[step_id] = outcome
        changes.append(Applied(decision, outcome, tuple(so_far)))
    return changes


def _outcome(request: WaitRequest, kind: str) -> WaitOutcome:
    """What a decision allowed by ``judge`` does to a wait, before the quorum is counted."""
    if kind == "reject":
        return "rejected" if request.kind == "approval" else "failed"
    if request.kind == "approval":
        return "counted"
    if request.kind == "in_doubt" and kind == "approve":
        return "run_again"
    return "done"
