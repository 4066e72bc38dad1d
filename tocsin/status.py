"""What the runs of an incident are doing and waiting for: `tocsin status` and `/tocsin status`."""

from __future__ import annotations

from tocsin.gates import WaitRequest
from tocsin.journal import Journal, now


def status_lines(journal: Journal, ticket: str | None) -> list[str]:
    """One line per run, then what each waiting step waits for and who may decide it."""
    runs = journal.runs_of(ticket)
    if not runs:
        return [f"no runs recorded{' for ' + ticket if ticket else ''}"]
    lines: list[str] = []
    for run in runs:
        lines.append(
            f"{run.incident}  {run.runbook_id} v{run.runbook_version}  {run.status}"
            f"  (started by {run.requested_by} via {run.requested_via}, "
            f"{run.created_at:%Y-%m-%d %H:%M} UTC)"
        )
        if run.status in ("running", "waiting") and not run.is_alive():
            lines.append(
                f"    no process is running it any more: run `tocsin run {run.runbook_id} "
                f"--ticket {run.incident}` again to continue where it stopped"
            )
        for record in journal.steps_of(run.id):
            if record.status != "waiting" or not record.request:
                continue
            request = WaitRequest.from_data(record.request)
            since = record.waiting_since or now()
            minutes = int((now() - since).total_seconds() // 60)
            if request.kind == "approval":
                approvals = [
                    d.actor
                    for d in journal.decisions_of(run.id, record.step_id)
                    if d.status == "applied" and d.kind == "approve"
                ]
                agreed = f": {', '.join(approvals)}" if approvals else ""
                what = f"approval by {request.group} ({len(approvals)} of {request.quorum}{agreed})"
            elif request.kind == "manual":
                what = f"manual task ({len(request.checklist)} checklist items)"
            else:
                what = "a decision about a step interrupted by a crash"
            lines.append(
                f"    waiting: {record.step_id} — {what}, for {minutes} min, until "
                f"{request.deadline_at:%Y-%m-%d %H:%M} UTC, hash {request.gate_hash[:12]}"
            )
            lines.append(f"      {request.prompt}")
            for number, item in enumerate(request.checklist, start=1):
                lines.append(f"      [{number}] {item}")
            if request.kind == "approval":
                lines.append(f"      may decide: {', '.join(request.approvers) or 'nobody yet'}")
    return lines
