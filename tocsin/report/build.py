"""From audit records to the facts of a post-incident report (no wording: see wording.py)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

from tocsin.audit import REDACTED_PREFIX, AuditRecord, Verification
from tocsin.errors import TocsinError
from tocsin.statuses import RunStatus, StepStatus

_log = logging.getLogger("tocsin.report")

SEVERITY_ORDER = ("low", "medium", "high", "critical")
FINAL_STEP_STATUS: dict[str, StepStatus] = {
    "step.succeeded": StepStatus.SUCCEEDED,
    "step.failed": StepStatus.FAILED,
    "step.skipped": StepStatus.SKIPPED,
    "step.undone": StepStatus.UNDONE,
    "step.approved": StepStatus.APPROVED,
    "step.rejected": StepStatus.REJECTED,
    "step.done": StepStatus.DONE,
    "step.timed_out": StepStatus.TIMED_OUT,
}
REQUESTED = ("approval.requested", "manual.requested", "in_doubt.requested")


@dataclass
class RunSummary:
    run_id: int | None
    runbook: str
    version: str
    title: str
    severity: str
    requested_by: str | None
    via: str
    started_at: datetime
    finished_at: datetime | None = None
    status: str = RunStatus.RUNNING  # as its run.finished record says ("?" when it does not)
    reason: str = ""
    flow_run_id: str | None = None
    prefect_state: str | None = None
    ticket_url: str | None = None
    incident_title: str | None = None


@dataclass
class StepSummary:
    run_id: int | None
    step_id: str
    title: str
    phase: str | None
    kind: str  # action, approval, manual, in_doubt
    status: StepStatus = StepStatus.RUNNING
    action: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    error: str | None = None
    evidence: bool = False
    """The runbook marks it ``evidence: true``: its outputs are the state before any change."""
    outputs: dict[str, Any] = field(default_factory=dict)
    """An action step's outputs as the trail records them (secret ones as their HMAC)."""
    annex: str | None = None
    """The output its action declares as the report's annex (``@action(annex=...)``)."""

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass
class Annex:
    """A Markdown document a step wrote (a draft notification), added after the sections."""

    run_id: int | None
    step_id: str
    title: str
    action: str
    output: str
    document: str


@dataclass
class Decision:
    actor: str
    decision: str
    channel: str
    at: datetime
    comment: str


@dataclass
class ApprovalSummary:
    step_id: str
    title: str
    group: str | None
    quorum: int
    requested_at: datetime
    decided_at: datetime | None = None
    outcome: StepStatus = StepStatus.WAITING  # or approved, rejected, timed_out
    decisions: list[Decision] = field(default_factory=list)
    escalated_to: str | None = None

    @property
    def waited_seconds(self) -> float | None:
        if self.decided_at is None:
            return None
        return (self.decided_at - self.requested_at).total_seconds()


@dataclass
class ManualTaskSummary:
    step_id: str
    title: str
    requested_at: datetime
    items: list[str]
    completed_by: str | None = None
    completed_at: datetime | None = None
    ticked: list[str] = field(default_factory=list)
    status: StepStatus = StepStatus.WAITING  # or done, rejected, timed_out


@dataclass
class RefusedDecision:
    at: datetime
    step_id: str | None
    actor: str | None
    channel: str
    decision: str
    reason: str


@dataclass
class ClockSummary:
    clock: str
    title: str
    source: str | None
    starts_at: datetime | None
    deadline_at: datetime
    stopped_at: datetime | None = None
    status: str = "running"  # met, missed, not_required, running, overdue


@dataclass
class TimelineEntry:
    seq: int
    at: datetime
    kind: str
    step_id: str | None
    actor: str | None
    detail: str


@dataclass
class IncidentReport:
    incident: str
    generated_at: datetime
    runs: list[RunSummary]
    steps: list[StepSummary]
    approvals: list[ApprovalSummary]
    manual_tasks: list[ManualTaskSummary]
    refused_decisions: list[RefusedDecision]
    communications: dict[str, int]
    clocks: list[ClockSummary]
    timeline: list[TimelineEntry]
    verification: Verification
    anchors: list[dict[str, Any]]
    triggered_at: datetime | None
    contained_at: datetime | None
    prefect_unavailable: bool = False
    """No Prefect server could be read: the runs' Prefect states are missing, not unknown."""
    annexes: list[Annex] = field(default_factory=list)
    """One per succeeded step whose action declares an annex, in the order of the steps."""

    @property
    def severity(self) -> str:
        known = [r.severity for r in self.runs if r.severity in SEVERITY_ORDER]
        return max(known, key=SEVERITY_ORDER.index) if known else "unknown"

    @property
    def outcome(self) -> str:
        statuses = {r.status for r in self.runs}
        if not statuses:
            return "unknown"
        if statuses == {RunStatus.SUCCEEDED}:
            return RunStatus.SUCCEEDED
        worst_first = (
            RunStatus.FAILED,
            RunStatus.REJECTED,
            RunStatus.TIMED_OUT,
            RunStatus.RUNNING,
            RunStatus.WAITING,
        )
        for worst in worst_first:
            if worst in statuses:
                return worst
        return sorted(statuses)[0]

    @property
    def time_to_contain_seconds(self) -> float | None:
        if self.triggered_at is None or self.contained_at is None:
            return None
        return (self.contained_at - self.triggered_at).total_seconds()

    @property
    def ticket_url(self) -> str | None:
        return next((r.ticket_url for r in self.runs if r.ticket_url), None)

    @property
    def title(self) -> str | None:
        return next((r.incident_title for r in self.runs if r.incident_title), None)


def _when(text: Any) -> datetime | None:
    if not text:
        return None
    moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def build_report(
    incident: str,
    records: list[AuditRecord],
    verification: Verification,
    flow_states: dict[str, str] | None = None,
    generated_at: datetime | None = None,
    *,
    prefect_unavailable: bool = False,
    annexed_outputs: Mapping[str, str] | None = None,
) -> IncidentReport:
    """Read the incident's records, in chain order, into the report's facts.

    ``prefect_unavailable``: Prefect could not be asked for ``flow_states``; the report says so.
    ``annexed_outputs``: the output each action adds as an annex, by action name; by default
    what the installed integrations' actions declare (``declared_annexes``).
    """
    states = flow_states or {}
    runs: dict[int | None, RunSummary] = {}
    steps: dict[tuple[int | None, str], StepSummary] = {}
    approvals: dict[tuple[int | None, str], ApprovalSummary] = {}
    manual: dict[tuple[int | None, str], ManualTaskSummary] = {}
    clocks: dict[tuple[int | None, str], ClockSummary] = {}
    refused: list[RefusedDecision] = []
    communications: Counter[str] = Counter()
    anchors: list[dict[str, Any]] = []
    timeline: list[TimelineEntry] = []
    titles: dict[tuple[int | None, str], str] = {}

    for record in records:
        data = record.data
        key = (record.run_id, record.step_id or "")
        kind = record.kind
        timeline.append(
            TimelineEntry(
                record.seq, record.at, kind, record.step_id, record.actor, _detail(record)
            )
        )
        if kind in ("run.started", "run.resumed"):
            run = runs.get(record.run_id)
            if run is None:
                runs[record.run_id] = RunSummary(
                    run_id=record.run_id,
                    runbook=str(data.get("runbook", "?")),
                    version=str(data.get("version", "?")),
                    title=str(data.get("title") or data.get("runbook", "")),
                    severity=str(data.get("severity") or "unknown"),
                    requested_by=record.actor,
                    via=str(data.get("via", "?")),
                    started_at=record.at,
                    flow_run_id=data.get("flow_run_id"),
                    ticket_url=data.get("ticket_url") or None,
                    incident_title=data.get("incident_title") or None,
                )
            else:
                run.status, run.finished_at = RunStatus.RUNNING, None
                run.flow_run_id = data.get("flow_run_id") or run.flow_run_id
        elif kind == "run.finished" and record.run_id in runs:
            run = runs[record.run_id]
            run.status = str(data.get("status", "?"))
            run.reason = str(data.get("reason", ""))
            run.finished_at = record.at
        elif kind == "step.started" and record.step_id:
            step = steps.get(key)
            if step is None:
                step = steps[key] = StepSummary(
                    run_id=record.run_id,
                    step_id=record.step_id,
                    title=str(data.get("title") or record.step_id),
                    phase=data.get("phase"),
                    kind="action",
                    action=data.get("action"),
                    started_at=record.at,
                )
            step.status, step.finished_at, step.error = StepStatus.RUNNING, None, None
            step.attempts = max(step.attempts, 1)
            step.evidence = bool(data.get("evidence"))
            titles[key] = step.title
        elif kind == "step.retried" and key in steps:
            steps[key].attempts = max(steps[key].attempts, int(data.get("attempt", 1)))
        elif kind in REQUESTED and record.step_id:
            title = str(data.get("title") or record.step_id)
            titles[key] = title
            step = steps.setdefault(
                key,
                StepSummary(
                    run_id=record.run_id,
                    step_id=record.step_id,
                    title=title,
                    phase=data.get("phase"),
                    kind=str(data.get("kind") or kind.split(".")[0]),
                    started_at=record.at,
                ),
            )
            step.status = StepStatus.WAITING
            if kind == "approval.requested" and key not in approvals:
                approvals[key] = ApprovalSummary(
                    step_id=record.step_id,
                    title=title,
                    group=data.get("group"),
                    quorum=int(data.get("quorum") or 1),
                    requested_at=record.at,
                )
            elif kind == "manual.requested" and key not in manual:
                manual[key] = ManualTaskSummary(
                    step_id=record.step_id,
                    title=title,
                    requested_at=record.at,
                    items=[str(item) for item in data.get("checklist") or []],
                )
        elif kind in FINAL_STEP_STATUS and record.step_id:
            status = FINAL_STEP_STATUS[kind]
            step = steps.setdefault(
                key,
                StepSummary(
                    run_id=record.run_id,
                    step_id=record.step_id,
                    title=str(data.get("title") or titles.get(key, record.step_id)),
                    phase=data.get("phase"),
                    kind=str(data.get("kind") or "action"),
                    action=data.get("action"),
                    evidence=bool(data.get("evidence")),
                    started_at=record.at,
                ),
            )
            step.status = status
            if status != StepStatus.UNDONE:
                step.finished_at = record.at
            if "attempts" in data:
                step.attempts = int(data["attempts"])
            if data.get("error"):
                step.error = str(data["error"])
            outputs = data.get("outputs") or {}
            if step.kind == "action" and isinstance(outputs, dict):
                step.outputs = dict(outputs)
            if key in approvals and status in (
                StepStatus.APPROVED,
                StepStatus.REJECTED,
                StepStatus.TIMED_OUT,
            ):
                approvals[key].outcome = status
                approvals[key].decided_at = record.at
            if key in manual and status in (
                StepStatus.DONE,
                StepStatus.TIMED_OUT,
                StepStatus.REJECTED,
            ):
                task = manual[key]
                task.status = status
                task.completed_by = outputs.get("completed_by")
                task.completed_at = _when(outputs.get("completed_at")) or record.at
                task.ticked = [str(item) for item in outputs.get("checklist") or []]
        elif kind == "step.undo_failed" and key in steps:
            steps[key].error = str(data.get("error", ""))
        elif kind == "decision.applied" and key in approvals:
            approvals[key].decisions.append(
                Decision(
                    actor=record.actor or "?",
                    decision=str(data.get("decision", "?")),
                    channel=str(data.get("channel", "?")),
                    at=record.at,
                    comment=str(data.get("comment") or ""),
                )
            )
        elif kind == "decision.refused":
            refused.append(
                RefusedDecision(
                    at=record.at,
                    step_id=record.step_id,
                    actor=record.actor,
                    channel=str(data.get("channel", "?")),
                    decision=str(data.get("decision", "?")),
                    reason=str(data.get("reason", "")),
                )
            )
        elif kind == "gateway.request_refused":  # a click or webhook that was not authentic
            claimed = data.get("claimed") or {}
            refused.append(
                RefusedDecision(
                    at=record.at,
                    step_id=claimed.get("step_id"),
                    actor=claimed.get("user"),
                    channel=str(data.get("source", "?")),
                    decision=str(claimed.get("decision") or "request"),
                    reason=str(data.get("reason", "")),
                )
            )
        elif kind == "approval.escalated" and key in approvals:
            approvals[key].escalated_to = data.get("to")
        elif kind == "message.sent":
            communications[str(data.get("channel", "?"))] += int(data.get("count") or 1)
        elif kind == "clock.started":
            deadline = _when(data.get("deadline_at"))
            if deadline is not None:
                clocks[(record.run_id, str(data.get("clock")))] = ClockSummary(
                    clock=str(data.get("clock")),
                    title=str(data.get("title", "")),
                    source=data.get("source"),
                    starts_at=_when(data.get("starts_at")),
                    deadline_at=deadline,
                )
        elif kind == "clock.stopped":
            found = clocks.get((record.run_id, str(data.get("clock"))))
            if found is not None:
                found.stopped_at = _when(data.get("stopped_at")) or record.at
                met = data.get("met")
                found.status = "not_required" if met is None else ("met" if met else "missed")
        elif kind == "audit.checkpoint_anchored":
            anchors.append(
                {"seq": data.get("seq"), "head": data.get("head"), "where": data.get("where")}
            )

    annexes = _annexes(
        list(steps.values()), declared_annexes() if annexed_outputs is None else annexed_outputs
    )
    moment = generated_at or datetime.now(UTC)
    for clock in clocks.values():
        if clock.status == "running" and moment > clock.deadline_at:
            clock.status = "overdue"
    for run in runs.values():
        if run.flow_run_id and run.flow_run_id in states:
            run.prefect_state = states[run.flow_run_id]
    contained = [
        s.finished_at
        for s in steps.values()
        if s.phase == "contain"
        and s.finished_at
        and s.status in (StepStatus.SUCCEEDED, StepStatus.DONE, StepStatus.APPROVED)
    ]
    started = [r.started_at for r in runs.values()]
    return IncidentReport(
        incident=incident,
        generated_at=moment,
        runs=list(runs.values()),
        steps=list(steps.values()),
        approvals=list(approvals.values()),
        manual_tasks=list(manual.values()),
        refused_decisions=refused,
        communications=dict(sorted(communications.items())),
        clocks=list(clocks.values()),
        timeline=timeline,
        verification=verification,
        anchors=anchors,
        triggered_at=min(started) if started else None,
        contained_at=max(contained) if contained else None,
        prefect_unavailable=prefect_unavailable,
        annexes=annexes,
    )


@cache
def declared_annexes() -> Mapping[str, str]:
    """The output each installed action adds to the report as an annex, by action name."""
    from tocsin.action_registry import ActionRegistry

    try:
        registry = ActionRegistry.discover()
    except TocsinError as exc:  # a broken plug-in must not stop the report
        _log.warning("the report has no annexes: %s", exc.message)
        return {}
    return {d.name: d.annex for d in registry if d.annex is not None}


def _annexes(steps: list[StepSummary], annexed: Mapping[str, str]) -> list[Annex]:
    """Mark each step's annexed output, and return the annexes of the succeeded steps."""
    found: list[Annex] = []
    for step in steps:
        output = annexed.get(step.action or "") if step.kind == "action" else None
        if output is None:
            continue
        step.annex = output
        document = step.outputs.get(output)
        if (
            step.status == StepStatus.SUCCEEDED
            and isinstance(document, str)
            and document.strip()
            and not document.startswith(REDACTED_PREFIX)
        ):
            found.append(
                Annex(step.run_id, step.step_id, step.title, step.action or "", output, document)
            )
    return found


def _detail(record: AuditRecord) -> str:
    """One short line of what a record says, for the timeline (data, not wording)."""
    data = record.data
    kind = record.kind
    if kind in ("run.started", "run.resumed"):
        return f"{data.get('runbook', '')} v{data.get('version', '')} via {data.get('via', '')}"
    if kind == "run.finished":
        return f"{data.get('status', '')}: {data.get('reason', '')}"
    if kind == "step.started":
        return str(data.get("action") or "")
    if kind in ("step.succeeded", "step.failed"):
        attempts = data.get("attempts")
        error = data.get("error")
        return f"{error}" if error else (f"attempts {attempts}" if attempts else "")
    if kind in ("step.attempt_failed", "step.undo_failed", "step.failure_ignored"):
        return str(data.get("error", ""))
    if kind == "step.retried":
        return f"attempt {data.get('attempt', '')}"
    if kind.startswith("decision."):
        parts = [str(data.get("decision", "")), str(data.get("channel", ""))]
        if data.get("reason"):
            parts.append(str(data["reason"]))
        elif data.get("comment"):
            parts.append(str(data["comment"]))
        return " · ".join(p for p in parts if p)
    if kind == "step.done":
        outputs = data.get("outputs") or {}
        return f"{len(outputs.get('checklist') or [])} items ticked"
    if kind == "message.sent":
        return f"{data.get('count', 1)} × {data.get('channel', '')}"
    if kind.startswith("clock."):
        return str(data.get("title", ""))
    if kind.startswith("audit."):
        return f"sha256:{str(data.get('head', ''))[:16]}… {data.get('where') or data.get('error') or ''}"
    if kind in REQUESTED:
        return str(data.get("group") or "")
    if kind == "announce.failed":
        return f"{data.get('announcer', '')} ({data.get('doing', '')}): {data.get('error', '')}"
    if kind in ("gateway.request_refused", "run.request_refused"):
        return str(data.get("reason", ""))
    if kind.endswith(".reminded"):
        return f"{data.get('minutes_left', '')} min left"
    return ""
