"""The incident's ticket kept up to date: comments on progress and gates, the report attached.

``TicketAnnouncer`` is the ticket ``Announcer`` (see ``tocsin.announce``) for any
``TicketSystem`` (Jira today). Support engineers live in their ticket tool, so it says
there when the runbook started, which steps finished (batched like the Slack thread),
what waits for whom, how it ended, and attaches the post-incident report at the end.

Comments are plain text, as ``TicketSystem.comment`` takes them: the ticket system makes
them literal (``JiraTickets`` escapes Jira's wiki markup), so an input, an error or a
decision comment quoted here can never become a link, a mention or a table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tocsin.announce import FinishedStep, GateState, RefusedDecision, RunFacts
from tocsin.statuses import RunStatus
from tocsin.tickets import TicketSystem

ReportMaker = Callable[[str], tuple[str, bytes, str]]
"""Given the ticket: (file name, content, media type) of the report to attach."""


class TicketAnnouncer:
    """Comments on the incident's ticket; see the module docstring."""

    def __init__(self, tickets: TicketSystem, report: ReportMaker | None = None) -> None:
        self.tickets = tickets
        self.name = tickets.name
        self.report = report

    def run_started(self, run: RunFacts) -> None:
        verb = "resumed" if run.resumed else "started"
        inputs = "\n".join(f"- {name}: {value}" for name, value in run.inputs.items())
        self.tickets.comment(
            run.ticket,
            f'Tocsin {verb} runbook "{run.runbook_title}" ({run.runbook} v{run.version}), '
            f"requested by {run.requested_by} via {run.requested_via}."
            + (f"\nInputs:\n{inputs}" if inputs else ""),
        )

    def steps_finished(self, run: RunFacts, steps: Sequence[FinishedStep]) -> None:
        lines = [
            f"- {s.step_id} ({s.title}): {s.status}" + (f" — {s.detail}" if s.detail else "")
            for s in steps
        ]
        self.tickets.comment(run.ticket, "Tocsin progress:\n" + "\n".join(lines))

    def gate_changed(self, run: RunFacts, gate: GateState) -> None:
        request = gate.request
        if gate.outcome is None:
            if gate.approved_by:
                return  # partial approvals are shown in Slack; the ticket hears the outcome
            if request.kind == "approval":
                what = (
                    f"waits for approval by {request.group} (quorum {request.quorum}) until "
                    f"{request.deadline_at:%Y-%m-%d %H:%M} UTC: {request.prompt}\n"
                    f"Approve in Slack, or: tocsin approve {run.ticket} {gate.step_id} --as YOUR_ID"
                )
            elif request.kind == "manual":
                what = (
                    f"is a manual task: {request.prompt}\nWhen done: tocsin done {run.ticket} "
                    f"{gate.step_id} --as YOUR_ID --all"
                )
            else:
                what = f"needs a decision after a crash: {request.prompt}"
            self.tickets.comment(run.ticket, f"Step {gate.step_id} ({gate.title}) {what}")
            return
        who = ", ".join(dict.fromkeys(gate.decided_by)) or "nobody"
        comment = f' — "{gate.comment}"' if gate.comment else ""
        self.tickets.comment(
            run.ticket, f"Step {gate.step_id} ({gate.title}): {gate.outcome} by {who}{comment}"
        )

    def reminder(self, run: RunFacts, gate: GateState, minutes_left: int) -> None:
        self.tickets.comment(
            run.ticket,
            f"Reminder: step {gate.step_id} still waits for {gate.request.group}; "
            f"{minutes_left} min left before its timeout.",
        )

    def decision_refused(self, run: RunFacts, refused: RefusedDecision) -> None:
        return None  # told to the person where they decided; the audit trail has it

    def run_finished(self, run: RunFacts, status: RunStatus, reason: str) -> None:
        text = f"Tocsin runbook {run.runbook} {status}: {reason}."
        if self.report is not None:
            filename, content, media_type = self.report(run.ticket)
            self.tickets.attach(run.ticket, filename, content, media_type)
            text += f"\nPost-incident report attached: {filename}"
        else:
            text += f"\nPost-incident report: tocsin report {run.ticket} -o {run.ticket}.pdf"
        self.tickets.comment(run.ticket, text)

    def anchor(self, run: RunFacts, seq: int, head: str, key_id: str) -> str:
        comment_id = self.tickets.comment(
            run.ticket,
            f"Audit checkpoint: record {seq}, head sha256:{head} (key {key_id}). Keep this "
            f"comment: `tocsin audit verify {run.ticket} --anchor sha256:{head}` proves later "
            "that the audit trail was not cut short.",
        )
        return f"{self.name}:{run.ticket}:comment:{comment_id}"

    def close(self) -> None:
        return None
