"""What the runs of an incident are doing and waiting for: `tocsin status` and `/tocsin status`;
and what is stuck (`tocsin status --stuck`, ``tocsin.watchdog``).

Every value shown (names, prompts, checklist items, the requester) goes through
``terminal_text``: an input holding ANSI escape sequences or other control characters
cannot recolour, move the cursor, retitle or clear the terminal of whoever reads it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from tocsin.gates import WaitRequest
from tocsin.journal import Journal, now
from tocsin.statuses import ACTIVE_RUN, DecisionStatus, StepStatus

if TYPE_CHECKING:
    from tocsin.settings import Settings
    from tocsin.watchdog import Finding

# C0 and C1 control characters (ESC, BEL, CR, backspace, CSI...), DEL, and the Unicode
# line separators and bidirectional overrides that reorder what a line shows.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def terminal_text(value: object) -> str:
    """``value`` on one line without control characters: a tab is a space, the others ``?``."""
    return _CONTROL.sub("?", str(value).replace("\t", " "))


def status_lines(journal: Journal, ticket: str | None) -> list[str]:
    """One line per run, then what each waiting step waits for and who may decide it."""
    t = terminal_text
    runs = journal.runs_of(ticket)
    if not runs:
        return [f"no runs recorded{' for ' + t(ticket) if ticket else ''}"]
    lines: list[str] = []
    for run in runs:
        lines.append(
            f"{t(run.incident)}  {t(run.runbook_id)} v{t(run.runbook_version)}  {t(run.status)}"
            f"  (started by {t(run.requested_by)} via {t(run.requested_via)}, "
            f"{run.created_at:%Y-%m-%d %H:%M} UTC)"
        )
        if run.status in ACTIVE_RUN and not run.is_alive():
            lines.append(
                f"    no process is running it any more: run `tocsin run {t(run.runbook_id)} "
                f"--ticket {t(run.incident)}` again to continue where it stopped"
            )
        for record in journal.steps_of(run.id):
            if record.status != StepStatus.WAITING or not record.request:
                continue
            request = WaitRequest.from_data(record.request)
            since = record.waiting_since or now()
            minutes = int((now() - since).total_seconds() // 60)
            if request.kind == "approval":
                approvals = [
                    d.actor
                    for d in journal.decisions_of(run.id, record.step_id)
                    if d.status == DecisionStatus.APPLIED and d.kind == "approve"
                ]
                agreed = f": {t(', '.join(approvals))}" if approvals else ""
                what = (
                    f"approval by {t(request.group)} ({len(approvals)} of {request.quorum}{agreed})"
                )
            elif request.kind == "manual":
                what = f"manual task ({len(request.checklist)} checklist items)"
            else:
                what = "a decision about a step interrupted by a crash"
            lines.append(
                f"    waiting: {t(record.step_id)} — {what}, for {minutes} min, until "
                f"{request.deadline_at:%Y-%m-%d %H:%M} UTC, hash {request.gate_hash[:12]}"
            )
            lines += [f"      {t(line)}" for line in request.prompt.splitlines()]
            for number, item in enumerate(request.checklist, start=1):
                lines.append(f"      [{number}] {t(item)}")
            if request.kind == "approval":
                lines.append(f"      may decide: {t(', '.join(request.approvers)) or 'nobody yet'}")
    return lines


def stuck_findings(
    settings: Settings, journal: Journal, ticket: str | None
) -> tuple[list[Finding], bool]:
    """What is stuck now (of ``ticket``, or every incident), and whether Prefect's flow run
    states could be read (they only matter for runs owned by another machine)."""
    from tocsin.watchdog import active_flow_run_ids, find_stuck, prefect_states_for

    states = prefect_states_for(settings, active_flow_run_ids(journal, ticket))
    findings = find_stuck(
        journal,
        now(),
        states,
        rules=settings.watchdog,
        incident=ticket,
        live=settings.mode == "live",
    )
    return findings, states is not None


def stuck_lines(findings: list[Finding], ticket: str | None) -> list[str]:
    """Each finding: its kind, incident and step, what is wrong, and what to do."""
    t = terminal_text
    if not findings:
        return [f"nothing stuck{' for ' + t(ticket) if ticket else ''}"]
    lines: list[str] = []
    for finding in findings:
        where = f" {t(finding.step)}" if finding.step else ""
        lines.append(f"{t(finding.kind)}  {t(finding.incident)}  {t(finding.runbook)}{where}")
        lines.append(f"    {t(finding.summary)}")
        lines.append(f"    to do: {t(finding.what_to_do)}")
    return lines


def stuck_data(findings: list[Finding], prefect_read: bool) -> dict[str, Any]:
    """``tocsin status --stuck --json``."""
    return {
        "stuck": len(findings),
        "prefect_states_read": prefect_read,
        "findings": [finding.as_data() for finding in findings],
    }
