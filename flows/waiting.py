"""Waiting for people: approval gates, manual tasks, and steps found in flight after a crash.

One loop, around ``tocsin.gates.apply_decisions``: apply the decisions journalled since the
last look, time out or escalate what is overdue, remind people, then pause the flow run
until a decision is delivered or the next deadline. The decisions themselves are always
read from the journal: a resume of the flow run is only a wake-up (see ``check_run_input``).

The journal is also what carries a wait through an outage of the Prefect server: when the
server stops answering during a pause, the run waits for it to come back (the decisions
people make meanwhile are journalled and queued, see ``tocsin.decisions``), then takes its
flow run back to Running and reads the journal before it pauses again.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import httpx
import prefect.settings
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.input import RunInput
from prefect.states import Running
from pydantic import ValidationError

from tocsin.announce import GateState, RefusedDecision
from tocsin.errors import RunStopped, StepFailed
from tocsin.flows.checkpoints import sign_and_anchor
from tocsin.flows.clocks import RegulatoryClocks
from tocsin.flows.pausing import FlowRunEnded, pause_for_input
from tocsin.flows.run_state import RunState
from tocsin.flows.wait_requests import WaitRequests, wait_length
from tocsin.gates import Applied, Proposal, WaitRequest, apply_decisions, judge
from tocsin.journal import DecisionRecord, now
from tocsin.model import Step
from tocsin.statuses import DecisionStatus, RunStatus, StepStatus
from tocsin.vocabulary import ApprovalOutputs, ManualOutputs

PAUSE_POLL_SECONDS = 1
PENDING_RECHECK_SECONDS = 60
PAUSE_EXPIRY_MARGIN_SECONDS = 600
"""Prefect fails a paused flow run this long after the run meant to wake (its process died)."""
# While paused, a server that stops answering is noticed after this many client retries
# (Prefect's own default backs off for minutes), then looked for every OUTAGE_POLL_SECONDS.
PAUSE_CLIENT_RETRIES = 2
OUTAGE_POLL_SECONDS = 1.0
OUTAGE_REPORT_SECONDS = 300.0

OpenWaits = dict[str, tuple[Step, WaitRequest]]


class HumanDecision(RunInput):
    """A person's answer to a waiting step (also the form the Prefect UI shows)."""

    step_id: str
    decision: Literal["approve", "reject", "done"]
    actor: str
    comment: str = ""
    checklist: list[int] | None = None
    gate_hash: str | None = None
    decision_id: int | None = None


@dataclass
class WaitOutcome:
    """How a wait ended besides the steps it settled: what the caller must still do or raise."""

    rejected: list[str] = field(default_factory=list)
    failures: list[StepFailed] = field(default_factory=list)
    run_again: list[Step] = field(default_factory=list)
    """In-doubt steps someone approved running again: the caller runs their actions."""


class PeopleWaits:
    """Every wait for people of one run."""

    def __init__(self, state: RunState, clocks: RegulatoryClocks) -> None:
        self.state = state
        self.clocks = clocks
        self.requests = WaitRequests(state)

    def wait_for(
        self, waiting: list[Step], *, in_doubt: bool = False, in_doubt_actions: bool = False
    ) -> WaitOutcome:
        """Wait until every step has been decided (or timed out); a timed-out gate that
        stops the run raises ``RunStopped``."""
        state = self.state
        open_steps: OpenWaits = {}
        for step in waiting:
            doubt = in_doubt or (in_doubt_actions and step.action is not None)
            open_steps[step.id] = (step, self.open_wait(step, in_doubt=doubt))
        state.journal.set_run(state.run_id, status=RunStatus.WAITING)
        outcome = WaitOutcome()
        while open_steps:
            self.apply_pending(open_steps, outcome)
            if not open_steps:
                break
            moment = now()
            for step, request in list(open_steps.values()):
                if request.deadline_at <= moment:
                    self.time_out(step, request, open_steps, outcome)
                elif not request.reminded and self.reminder_at(step, request) <= moment:
                    self.remind(step, request)
            if not open_steps:
                break
            wake_up = [r.deadline_at for _, r in open_steps.values()] + [
                self.reminder_at(s, r) for s, r in open_steps.values() if not r.reminded
            ]
            remaining = min(wake_up) - now()
            # Woken at least every minute: a decision journalled while this run was
            # between two pauses (so nobody could resume it) is applied then.
            answer = self.pause(
                max(1, min(math.ceil(remaining.total_seconds()), PENDING_RECHECK_SECONDS))
            )
            if answer is not None:
                self.check_run_input(answer)
        state.journal.set_run(state.run_id, status=RunStatus.RUNNING)
        self.refuse_late_decisions()
        return outcome

    def pause(self, seconds: int) -> HumanDecision | None:
        """Pause the flow run until it is resumed or ``seconds`` pass (None then). When the
        Prefect server does not answer, wait for it to be back (None then too)."""
        try:
            with _failing_fast():
                try:
                    answer = pause_for_input(
                        HumanDecision,
                        wake_after=seconds,
                        expires_after=seconds + PAUSE_EXPIRY_MARGIN_SECONDS,
                        poll_seconds=PAUSE_POLL_SECONDS,
                        key=uuid.uuid4().hex,
                    )
                except (FlowRunEnded, RuntimeError) as exc:
                    if not isinstance(exc, FlowRunEnded) and "terminal state" not in str(exc):
                        raise
                    # Prefect ended the flow run (Failed) while this process was away — a
                    # pause it had given up on, an operator — yet the run is alive and its
                    # truth is the journal's: it takes its flow run back and waits on.
                    self.state.event("prefect.state_restored", seen=_short(exc))
                    answer = None
                if answer is None:
                    # The server still shows the run Paused: take it back, or the next
                    # pause is refused.
                    _back_to_running()
                return answer
        except httpx.HTTPError as exc:
            if not _is_outage(exc):
                raise
            self.ride_out_outage(exc)
            return None

    def ride_out_outage(self, error: httpx.HTTPError) -> None:
        """Wait for the Prefect server to answer again and take the flow run back to Running.

        The run cannot go on without the server (its steps are Prefect tasks), so it waits,
        however long the outage; meanwhile decisions are journalled and queued, and the wait
        loop applies them from the journal as soon as this returns.
        """
        state = self.state
        url = str(prefect.settings.PREFECT_API_URL.value() or "")
        began = time.monotonic()
        state.event("prefect.unreachable", api_url=url, error=_short(error))
        state.report(
            f"the Prefect server at {url} does not answer ({_short(error)}): the run waits for "
            "it; decisions made meanwhile are journalled and applied when it is back"
        )
        reported = began
        while True:
            if _healthy(url):
                try:
                    with _failing_fast():
                        _back_to_running()
                    break
                except httpx.HTTPError as exc:
                    if not _is_outage(exc):
                        raise
            if time.monotonic() - reported >= OUTAGE_REPORT_SECONDS:
                reported = time.monotonic()
                state.report(
                    f"still waiting for the Prefect server at {url} "
                    f"({reported - began:.0f} s so far)"
                )
            time.sleep(OUTAGE_POLL_SECONDS)
        lasted = round(time.monotonic() - began, 1)
        state.event("prefect.reachable", api_url=url, outage_seconds=lasted)
        state.report(f"the Prefect server is back after {lasted:.0f} s: the run goes on")

    # opening ---------------------------------------------------------------------------------

    def open_wait(self, step: Step, *, in_doubt: bool) -> WaitRequest:
        state = self.state
        existing = state.journal.step(state.run_id, step.id)
        request = self.requests.build(step, existing, in_doubt=in_doubt)
        state.journal.set_step(
            state.run_id,
            step.id,
            status=StepStatus.WAITING,
            request=request.as_data(),
            waiting_since=(
                existing.waiting_since
                if existing and existing.waiting_since and existing.status == StepStatus.WAITING
                else now()
            ),
        )
        state.event(
            f"{request.kind}.requested", step.id, **request.as_data(), **state.step_facts(step)
        )
        sign_and_anchor(state, "waiting", publish=False)
        state.announce.gate_changed(
            GateState(step.id, step.title, request, tuple(self.approvals_of(step.id, request)))
        )
        if not request.requester_known:
            state.report(
                f"{step.id}: {state.incident.requested_by} has no known Slack identity, so they "
                "could not be told apart from an approver: one more approval is needed "
                f"(quorum {request.quorum})"
            )
        verb = {"approval": "approve", "manual": "done", "in_doubt": "approve"}[request.kind]
        who = f" by {request.group} (quorum {request.quorum})" if request.kind == "approval" else ""
        state.report(
            f"{step.id}: waiting{who} until {request.deadline_at:%Y-%m-%d %H:%M} UTC — "
            f"tocsin {verb} {state.incident.ticket} {step.id} --as USER"
        )
        return request

    def approvals_of(self, step_id: str, request: WaitRequest) -> list[str]:
        """Who approved this version of the gate so far (applied decisions only)."""
        return [
            d.actor
            for d in self.state.journal.decisions_of(self.state.run_id, step_id)
            if d.status == DecisionStatus.APPLIED
            and d.kind == "approve"
            and d.gate_hash in (None, request.gate_hash)
        ]

    # decisions -------------------------------------------------------------------------------

    def apply_pending(self, open_steps: OpenWaits, outcome: WaitOutcome) -> None:
        """Apply the journalled decisions to the open waits, each claimed once in the journal."""
        journal, run_id = self.state.journal, self.state.run_id
        while True:
            pending = journal.pending_decisions(run_id)
            named = {d.step_id for d in pending}
            statuses: dict[str, StepStatus | None] = {}
            for step_id in named:
                record = journal.step(run_id, step_id)
                statuses[step_id] = record.status if record else None
            waits = {step_id: request for step_id, (_, request) in open_steps.items()}
            approvals = {
                step_id: self.approvals_of(step_id, waits[step_id])
                for step_id in named & set(waits)
            }
            for change in apply_decisions(pending, waits, statuses, approvals):
                if not isinstance(change, Applied):
                    self.settle_refused(change.decision, change.reason)
                elif (wrong := self.wrong_outputs(change, open_steps)) is not None:
                    self.settle_refused(change.decision, wrong)
                    break  # the wait stays open: judge the rest again
                elif journal.settle_decision(change.decision.id, DecisionStatus.APPLIED):
                    self.applied(change, open_steps, outcome)
                else:
                    break  # another process applied it first: judge the rest again
            else:
                return

    def applied(self, change: Applied, open_steps: OpenWaits, outcome: WaitOutcome) -> None:
        """Audit an applied decision and close its wait (or count it, short of the quorum)."""
        state = self.state
        decision = change.decision
        step, request = open_steps[decision.step_id]
        state.event(
            "decision.applied",
            step.id,
            decision.actor,
            decision=decision.kind,
            channel=decision.channel,
            comment=decision.comment,
            checklist=decision.checklist,
        )
        decided = now().isoformat()
        approvals = list(change.approvals)
        match change.outcome:
            case "counted":
                state.report(
                    f"{step.id}: approved by {decision.actor} ({len(set(approvals))} of {request.quorum})"
                )
                state.announce.gate_changed(
                    GateState(step.id, step.title, request, tuple(approvals))
                )
            case "approved":
                approved = ApprovalOutputs(
                    decision="approved",
                    approved_by=approvals,
                    decided_at=decided,
                    comment=decision.comment,
                )
                self.finish_wait(step, StepStatus.APPROVED, dict(approved), open_steps)
                state.report(f"{step.id}: approved by {', '.join(approvals)}")
            case "rejected":
                rejected = ApprovalOutputs(
                    decision="rejected",
                    approved_by=[],
                    decided_at=decided,
                    comment=decision.comment,
                )
                self.finish_wait(
                    step, StepStatus.REJECTED, dict(rejected), open_steps, decision.actor
                )
                outcome.rejected.append(step.id)
                state.report(f"{step.id}: REJECTED by {decision.actor}")
            case "done" if request.kind == "manual":
                ticked = [request.checklist[n - 1] for n in (decision.checklist or [])]
                done = ManualOutputs(
                    completed_by=decision.actor, completed_at=decided, checklist=ticked
                )
                self.finish_wait(step, StepStatus.DONE, dict(done), open_steps)
                state.report(
                    f"{step.id}: done by {decision.actor} ({len(ticked)} of {len(request.checklist)} items ticked)"
                )
            case "done":  # an in-doubt step whose action took effect
                given = self.given_outputs(step, decision.outputs)
                self.finish_wait(step, StepStatus.DONE, given, open_steps, decision.actor)
                state.report(
                    f"{step.id}: {decision.actor} says it took effect"
                    + (f"; outputs {', '.join(sorted(given))} as given" if given else "")
                )
            case "failed":
                self.finish_wait(step, StepStatus.FAILED, {}, open_steps, decision.actor)
                why = (
                    f"{decision.actor} could not do it: {decision.comment or 'no reason given'}"
                    if request.kind == "manual"
                    else f"stopped by {decision.actor} after the crash"
                )
                outcome.failures.append(StepFailed(step.id, why))
            case "run_again":
                del open_steps[step.id]
                outcome.run_again.append(step)

    def wrong_outputs(self, change: Applied, open_steps: OpenWaits) -> str | None:
        """Why the outputs given with done for an interrupted step do not fit its action."""
        decision = change.decision
        if change.outcome != "done" or decision.outputs is None:
            return None
        step, request = open_steps[decision.step_id]
        if request.kind != "in_doubt" or step.action is None:
            return None
        try:
            self.given_outputs(step, decision.outputs)
        except StepFailed as wrong:
            return wrong.message
        return None

    def given_outputs(self, step: Step, given: dict[str, Any] | None) -> dict[str, Any]:
        """The outputs a person gave for an interrupted step, checked against those its
        action declares (``StepFailed`` saying what does not fit)."""
        if not given or step.action is None:
            return {}
        definition = self.state.registry.get(step.action)
        if definition.result is None:
            return dict(given)
        try:
            checked = definition.result.model_validate(given)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
                for error in exc.errors()
                if error["type"] != "missing"
            )
            if problems:
                raise StepFailed(
                    step.id, f"outputs that do not fit {step.action}: {problems}"
                ) from None
            # Some outputs left out: those given are checked one by one.
            fields = definition.result.model_fields
            return {name: given[name] for name in given if name in fields}
        return dict(checked.model_dump(mode="json"))

    def settle_refused(self, decision: DecisionRecord, refusal: str) -> None:
        """Refuse a journalled decision once: audited, and the person is told why."""
        state = self.state
        if not state.journal.settle_decision(decision.id, DecisionStatus.REFUSED, refusal):
            return  # another process settled it first
        state.event(
            "decision.refused",
            decision.step_id,
            decision.actor,
            decision=decision.kind,
            channel=decision.channel,
            reason=refusal,
            comment=decision.comment,
        )
        state.report(
            f"{decision.step_id}: refused {decision.kind} from {decision.actor}: {refusal}"
        )
        state.announce.decision_refused(
            RefusedDecision(
                decision.step_id, decision.actor, decision.kind, decision.channel, refusal
            )
        )

    def check_run_input(self, answer: HumanDecision) -> None:
        """A resume of this flow run is only a wake-up: decisions are read from the journal.

        Prefect's API has no authentication, so anyone who reaches it can resume a paused run
        with any input. An input that is not the delivery of a decision the CLI or the gateway
        judged and journalled is refused and audited; it never decides anything.
        """
        state = self.state
        if answer.decision_id is not None:
            recorded = state.journal.decision(answer.decision_id)
            if (
                recorded is not None
                and recorded.run_id == state.run_id
                and recorded.step_id == answer.step_id
                and recorded.kind == answer.decision
                and recorded.actor == answer.actor
            ):
                return
        reason = (
            "not a decision judged and journalled by Tocsin (a resume through the Prefect API "
            "or UI carries no proof of who decided); decide with `tocsin approve` or in Slack"
        )
        state.event(
            "decision.refused",
            answer.step_id[:64] or None,
            answer.actor[:64] or None,
            decision=answer.decision,
            channel="prefect-api",
            reason=reason,
            claimed_decision_id=answer.decision_id,
        )
        state.report(
            f"{answer.step_id[:64]}: refused a {answer.decision} sent through the Prefect API: {reason}"
        )

    def refuse_late_decisions(self, *, run_over: bool = False) -> None:
        """Decisions journalled after their step was settled: each gets its answer, refused."""
        journal, run_id = self.state.journal, self.state.run_id
        for decision in journal.pending_decisions(run_id):
            record = journal.step(run_id, decision.step_id)
            if record is not None and record.status == StepStatus.WAITING and not run_over:
                continue  # another wait of this run (a parallel branch) will apply it
            # What the refusal says the step is: a description, not only a StepStatus.
            shown: str | None = record.status if record else None
            if run_over and shown == StepStatus.WAITING:
                shown = f"{shown}, but the run stopped"
            refusal = judge(
                shown,
                None,
                Proposal(decision.kind, decision.actor),
                [],
                decision.step_id,
            )
            assert refusal is not None  # nothing waits, so judge always refuses
            self.settle_refused(decision, refusal)

    # closing, deadlines, reminders -----------------------------------------------------------

    def finish_wait(
        self,
        step: Step,
        status: StepStatus,
        outputs: dict[str, Any],
        open_steps: OpenWaits,
        decided_by: str | None = None,
    ) -> None:
        state = self.state
        state.journal.set_step(
            state.run_id, step.id, status=status, outputs=outputs, finished_at=now()
        )
        state.remember(step.id, status, outputs, announce=False)
        state.event(f"step.{status}", step.id, outputs=outputs)
        entry = open_steps.pop(step.id, None)
        if entry is not None:
            request = entry[1]
            approved = (
                tuple(self.approvals_of(step.id, request)) if request.kind == "approval" else ()
            )
            deciders = outputs.get("approved_by") or outputs.get("completed_by") or decided_by
            state.announce.gate_changed(
                GateState(
                    step.id,
                    step.title,
                    request,
                    approved,
                    outcome=status,
                    decided_by=tuple(
                        deciders if isinstance(deciders, list) else [deciders] if deciders else []
                    ),
                    comment=str(outputs.get("comment") or ""),
                )
            )
        if status in (StepStatus.APPROVED, StepStatus.DONE):
            self.clocks.stop(step)

    def time_out(
        self, step: Step, request: WaitRequest, open_steps: OpenWaits, outcome: WaitOutcome
    ) -> None:
        """A wait's deadline passed: escalate the gate once if it says so, else time it out."""
        state = self.state
        if request.kind != "approval" or step.approval is None:
            self.finish_wait(step, StepStatus.FAILED, {}, open_steps)
            outcome.failures.append(StepFailed(step.id, "nobody marked it done before its timeout"))
            return
        gate = step.approval
        if gate.on_timeout == "escalate" and not request.escalated and gate.escalate_to:
            group = state.runbook.approver_groups[gate.escalate_to]
            request.escalated = True
            request.reminded = False
            request.group = f"{request.group}+{gate.escalate_to}"
            request.approvers = sorted({*request.approvers, *group.users})
            if group.usergroup:
                request.usergroups = [*request.usergroups, group.usergroup]
            request.deadline = (now() + gate.timeout).isoformat()
            state.journal.set_step(state.run_id, step.id, request=request.as_data())
            state.event(
                "approval.escalated", step.id, to=gate.escalate_to, deadline=request.deadline
            )
            state.report(f"{step.id}: no decision in time, escalated to {gate.escalate_to}")
            open_steps[step.id] = (step, request)
            state.announce.gate_changed(
                GateState(step.id, step.title, request, tuple(self.approvals_of(step.id, request)))
            )
            return
        timed_out = ApprovalOutputs(
            decision="timed_out",
            approved_by=self.approvals_of(step.id, request),
            decided_at=now().isoformat(),
            comment="",
        )
        self.finish_wait(step, StepStatus.TIMED_OUT, dict(timed_out), open_steps)
        state.event("approval.timed_out", step.id, on_timeout=gate.on_timeout)
        if gate.on_timeout == "continue":
            state.report(f"{step.id}: no decision in time; continuing (on_timeout: continue)")
            return
        state.report(f"{step.id}: no decision in time; stopping the run")
        raise RunStopped(RunStatus.TIMED_OUT, f"approval {step.id} timed out")

    def reminder_at(self, step: Step, request: WaitRequest) -> datetime:
        """When people are reminded: a fraction (slack.remind_before) of the wait before its end."""
        return request.deadline_at - wait_length(step) * self.state.settings.announce.remind_before

    def remind(self, step: Step, request: WaitRequest) -> None:
        state = self.state
        request.reminded = True
        state.journal.set_step(state.run_id, step.id, request=request.as_data())
        left = max(0, int((request.deadline_at - now()).total_seconds() // 60))
        state.event(f"{request.kind}.reminded", step.id, minutes_left=left, group=request.group)
        state.report(f"{step.id}: reminder sent, {left} min left")
        state.announce.reminder(
            GateState(step.id, step.title, request, tuple(self.approvals_of(step.id, request))),
            left,
        )


@contextmanager
def _failing_fast() -> Iterator[None]:
    """Prefect clients made in the block give up on an unreachable server within seconds."""
    with prefect.settings.temporary_settings(
        updates={prefect.settings.PREFECT_CLIENT_MAX_RETRIES: PAUSE_CLIENT_RETRIES}
    ):
        yield


def _is_outage(error: httpx.HTTPError) -> bool:
    """The server is down, restarting or overloaded (not a request it refuses, nor its bug:
    a 500 is raised, not waited out)."""
    if isinstance(error, httpx.HTTPStatusError):
        return error.response.status_code in (502, 503, 504)
    return isinstance(error, httpx.TransportError)


def _healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _short(error: BaseException) -> str:
    return (str(error) or type(error).__name__).splitlines()[0][:200]


def _back_to_running() -> None:
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(context.flow_run.id, Running(), force=True)


__all__ = ["HumanDecision", "PeopleWaits", "WaitOutcome"]
