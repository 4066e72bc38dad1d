"""A run's incident thread in Slack: the header, batched progress, gate messages with buttons.

``SlackIncidentAnnouncer`` is the Slack ``Announcer`` (see ``tocsin.announce``). When a run
starts it opens the incident's thread (a message in ``slack.incident_channel``, or a new
channel per incident with ``conversations.create``), posts finished steps there in
batches, and posts each approval gate as a Block Kit message with Approve and Reject
buttons, then keeps that message up to date with ``chat.update``: who approved, how many
approvals are still needed, and, once decided, the outcome without buttons.

Where the thread and each gate message are is kept in the journal (``posts``), so the
gateway, a resumed run or another runbook of the same incident update the same messages.

Every value that comes from a run (inputs, step outputs and errors, prompts and
checklists rendered with them, decision comments, names that are not Slack ids) is
shown as data: free text in ``plain_text`` objects, short values in mrkdwn through
``slack_text`` and inside a code span, so no value can mention ``@channel``, dress a
link up as a button or format the message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from slack_sdk.errors import SlackApiError

from tocsin.announce import FinishedStep, GateState, RefusedDecision, RunFacts, StepProgress
from tocsin.errors import IntegrationError
from tocsin.integrations.slack.client import SlackCredentials, api_error, slack_text
from tocsin.integrations.slack.posts import SlackPosts
from tocsin.integrations.slack.settings import SlackSettings
from tocsin.journal import Journal
from tocsin.statuses import RunStatus, StepStatus

APPROVE_ACTION = "tocsin_approve"
REJECT_ACTION = "tocsin_reject"
THREAD = "slack.thread"
GATE = "slack.gate"
PROGRESS = "slack.progress"
STATUS_ICONS: dict[str, str] = {
    StepStatus.SUCCEEDED: ":white_check_mark:",
    StepStatus.SKIPPED: ":fast_forward:",
    StepStatus.FAILED: ":x:",
    StepStatus.UNDONE: ":leftwards_arrow_with_hook:",
    StepStatus.APPROVED: ":white_check_mark:",
    StepStatus.DONE: ":ballot_box_with_check:",
    StepStatus.REJECTED: ":no_entry:",
    StepStatus.TIMED_OUT: ":hourglass:",
}
MAX_FIELD = 1900  # Slack's section text limit is 3000 characters; keep room


def gate_button_value(run: RunFacts, gate: GateState) -> str:
    """What a button carries back to the gateway: the gate it decides, as it was shown."""
    return json.dumps(
        {
            "ticket": run.ticket,
            "run": run.run_id,
            "step": gate.step_id,
            "hash": gate.request.gate_hash[:16],
        },
        separators=(",", ":"),
    )


def parse_button_value(value: str) -> dict[str, Any]:
    """The gate a clicked button names; ``ValueError`` when it is not one of Tocsin's."""
    data = json.loads(value)
    if not isinstance(data, dict) or not {"ticket", "run", "step", "hash"} <= set(data):
        raise ValueError("not a Tocsin gate button")
    return data


def mention(person: str) -> str:
    """A Slack mention for a user id (U...) or user group id (S...); other names as code."""
    if re.fullmatch(r"[UW][A-Z0-9]{2,}", person):
        return f"<@{person}>"
    if re.fullmatch(r"S[A-Z0-9]{2,}", person):
        return f"<!subteam^{person}>"
    return code(person)


def code(value: object) -> str:
    """``value`` as an inline code span in mrkdwn: shown as it is, on one line."""
    text = " ".join(str(value).split()) or " "
    return f"`{slack_text(text)}`"


def plain(text: str, limit: int = 0) -> dict[str, Any]:
    """A ``plain_text`` object: Slack shows it as it is, without mrkdwn or mentions."""
    return {"type": "plain_text", "text": _clip(text, limit) if limit else _clip(text)}


def _clip(text: str, limit: int = MAX_FIELD) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _when(iso: str) -> str:
    moment = datetime.fromisoformat(iso)
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|{moment:%Y-%m-%d %H:%M} UTC>"


def who_may_decide(request: Any) -> str:
    people = [mention(group) for group in request.usergroups] + [
        mention(person) for person in request.approvers if person != request.requester
    ]
    shown = ", ".join(people[:12]) + (f" and {len(people) - 12} more" if len(people) > 12 else "")
    return f"group *{slack_text(request.group)}*: {shown or 'nobody listed'}"


def progress_text(progress: StepProgress) -> str:
    """``Sending <title>: 1,200 / 5,000 sent (24 %)`` with a bar; values escaped."""
    filled = progress.percent // 5
    bar = "█" * filled + "░" * (20 - filled)
    head = (
        ":white_check_mark: Done" if progress.done >= progress.total else ":hourglass_flowing_sand:"
    )
    return (
        f"{head} {code(progress.step_id)} {slack_text(progress.title)}: "
        f"{progress.done:,} / {progress.total:,} {slack_text(progress.what)} "
        f"({progress.percent} %)\n`{bar}`"
    )


def gate_blocks(run: RunFacts, gate: GateState) -> list[dict[str, Any]]:
    """The Block Kit message of a waiting step, as it should look now."""
    request = gate.request
    kind = {"approval": "Approval needed", "manual": "Manual task", "in_doubt": "Step in doubt"}[
        request.kind
    ]
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _clip(f"{kind}: {gate.title}", 150)},
        },
        {"type": "section", "text": plain(request.prompt or kind)},
    ]
    if request.guarded:
        lines = []
        for step_id, guarded in request.guarded.items():
            parameters = ", ".join(
                f"{name}={json.dumps(value, ensure_ascii=False, default=str)}"
                for name, value in (guarded.get("with") or {}).items()
            )
            touches = f" — {code(guarded['touches'])}" if guarded.get("touches") else ""
            shown = f": {code(parameters)}" if parameters else ""
            lines.append(f"• {code(step_id)} {slack_text(guarded.get('action'))}{touches}{shown}")
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": _clip("*What this approves:*\n" + "\n".join(lines)),
                },
            }
        )
        for step_id, guarded in request.guarded.items():
            if guarded.get("preview"):
                # plain_text: a rendered message sample shows as written, never as markup
                blocks.append(
                    {
                        "type": "section",
                        "text": plain(f"Preview of {step_id}:\n{guarded['preview']}"),
                    }
                )
    if request.checklist:
        items = "\n".join(f"{n}. {item}" for n, item in enumerate(request.checklist, start=1))
        blocks.append({"type": "section", "text": plain(f"Checklist:\n{items}")})
    context = [
        f"Incident *{slack_text(run.ticket)}* · runbook {code(run.runbook)} "
        f"v{slack_text(run.version)}"
    ]
    if request.kind == "approval":
        requester = (
            f"not {mention(request.requester)} (started the run)"
            if request.requester_known
            else f"{code(request.requester)} started the run and has no known Slack identity, "
            "so one more approval than usual is needed"
        )
        context.append(
            f"Who may decide: {who_may_decide(request)} · quorum {request.quorum} · {requester}"
        )
    context.append(f"Deadline {_when(request.deadline)}")
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(" · ".join(context))}]}
    )
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _status_line(gate)}})
    if gate.outcome is not None and gate.comment:
        blocks.append({"type": "context", "elements": [plain(f"“{_clip(gate.comment, 300)}”")]})
    if gate.outcome is None and request.kind == "approval":
        value = gate_button_value(run, gate)
        blocks.append(
            {
                "type": "actions",
                "block_id": f"gate:{gate.step_id}",
                "elements": [
                    {
                        "type": "button",
                        "action_id": APPROVE_ACTION,
                        "text": {"type": "plain_text", "text": "Approve"},
                        "style": "primary",
                        "value": value,
                    },
                    {
                        "type": "button",
                        "action_id": REJECT_ACTION,
                        "text": {"type": "plain_text", "text": "Reject"},
                        "style": "danger",
                        "value": value,
                        "confirm": {
                            "title": {"type": "plain_text", "text": "Reject this step?"},
                            "text": {
                                "type": "mrkdwn",
                                "text": _clip(
                                    f"Rejecting {code(gate.step_id)} stops the runbook for "
                                    f"{slack_text(run.ticket)}; the steps it guards will not run.",
                                    300,
                                ),
                            },
                            "confirm": {"type": "plain_text", "text": "Reject"},
                            "deny": {"type": "plain_text", "text": "Cancel"},
                            "style": "danger",
                        },
                    },
                ],
            }
        )
    elif gate.outcome is None:
        verb = "done" if request.kind == "manual" else "approve"
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": code(
                            f"tocsin {verb} {run.ticket} {gate.step_id} --as YOUR_ID"
                            f"{' --all' if request.checklist else ''}"
                        ),
                    }
                ],
            }
        )
    return blocks


def _status_line(gate: GateState) -> str:
    approvers = ", ".join(mention(p) for p in dict.fromkeys(gate.approved_by))
    if gate.outcome is None:
        if gate.request.kind != "approval":
            return ":hourglass_flowing_sand: Waiting"
        done = f"Approved by {approvers}. " if approvers else ""
        needed = gate.still_needed
        return f":hourglass_flowing_sand: {done}{needed} more approval{'s' if needed != 1 else ''} needed."
    deciders = ", ".join(mention(p) for p in dict.fromkeys(gate.decided_by)) or "nobody"
    icon = STATUS_ICONS.get(gate.outcome, ":grey_question:")
    words: dict[str, str] = {
        StepStatus.APPROVED: f"Approved by {deciders}",
        StepStatus.REJECTED: f"Rejected by {deciders}",
        StepStatus.TIMED_OUT: "No decision before the deadline",
        StepStatus.DONE: f"Done by {deciders}",
        StepStatus.FAILED: f"Not done ({deciders})",
    }
    said = words.get(gate.outcome, gate.outcome)
    return f"{icon} *{said}*"  # the comment follows in a plain_text block


def gate_text(run: RunFacts, gate: GateState) -> str:
    """The notification text (and screen-reader fallback) of a gate message."""
    if gate.outcome is not None:
        return slack_text(f"{run.ticket} {gate.step_id}: {gate.outcome}")
    return slack_text(f"{run.ticket}: {gate.title} — {gate.request.prompt}"[:300])


class SlackIncidentAnnouncer:
    """The incident thread (or channel) in Slack; see the module docstring."""

    name = "slack"

    def __init__(
        self, credentials: SlackCredentials, settings: SlackSettings, journal: Journal
    ) -> None:
        self.credentials = credentials
        self.settings = settings
        self.journal = journal
        self.posts = SlackPosts(journal)
        self.client = credentials.get_client()

    # the thread -------------------------------------------------------------------------

    def _call(self, method: str, **arguments: Any) -> Any:
        try:
            return self.client.api_call(method, json=arguments)
        except SlackApiError as exc:
            raise api_error("announce", method, arguments.get("channel"), exc) from None

    def thread(self, ticket: str) -> tuple[str, str] | None:
        """(channel, ts) of the incident's thread, if one was opened."""
        post = self.posts.post(ticket, THREAD)
        return (post.channel, post.ts) if post else None

    def _open_channel(self, ticket: str) -> str:
        base = re.sub(r"[^a-z0-9_-]", "-", f"{self.settings.channel_prefix}{ticket}".lower())[:76]
        for attempt in range(1, 6):
            name = base if attempt == 1 else f"{base}-{attempt}"
            try:
                response = self.client.conversations_create(name=name, is_private=False)
            except SlackApiError as exc:
                if exc.response.get("error") == "name_taken":
                    continue
                raise api_error("announce", "conversations.create", name, exc) from None
            return str(response["channel"]["id"])
        raise IntegrationError(
            "announce",
            "Slack",
            f"refused conversations.create: channel {base} and its variants -2 to -5 exist",
            "archive or rename the old incident channels, or set slack.channel_prefix",
        )

    def run_started(self, run: RunFacts) -> None:
        if self.thread(run.ticket) is None:
            self._open_thread(run)
            return
        verb = "resumed" if run.resumed else "started"
        self._reply(
            run,
            f":arrow_forward: Runbook *{slack_text(run.runbook_title)}* ({code(run.runbook)} "
            f"v{slack_text(run.version)}) {verb} by {mention(run.requested_by)} "
            f"from {slack_text(run.requested_via)}.",
        )

    def _open_thread(self, run: RunFacts) -> tuple[str, str] | None:
        """Post the incident's header message (in a new channel if so configured)."""
        if self.settings.channel_per_incident:
            channel = self._open_channel(run.ticket)
        elif self.settings.incident_channel:
            channel = self.settings.incident_channel
        else:
            return None
        response = self._call(
            "chat.postMessage",
            channel=channel,
            text=slack_text(f"Incident {run.ticket}: {run.runbook_title}"),
            blocks=self._header_blocks(run),
        )
        where = str(response["channel"]), str(response["ts"])
        self.posts.set_post(run.ticket, THREAD, channel=where[0], ts=where[1])
        return where

    def _header_blocks(self, run: RunFacts) -> list[dict[str, Any]]:
        ticket = slack_text(run.ticket)
        if run.ticket_url:  # the ticket system's own address for a checked ticket key
            ticket = f"<{slack_text(run.ticket_url).replace('|', '%7C')}|{ticket}>"
        title = f" — {run.incident_title}" if run.incident_title else ""
        inputs = "\n".join(
            f"• {slack_text(name)}: {code(json.dumps(value, ensure_ascii=False, default=str))}"
            for name, value in run.inputs.items()
        )
        fields = [
            {"type": "mrkdwn", "text": f"*Ticket*\n{ticket}"},
            {"type": "mrkdwn", "text": f"*Severity*\n{slack_text(run.severity)}"},
            {
                "type": "mrkdwn",
                "text": f"*Runbook*\n{code(run.runbook)} v{slack_text(run.version)}",
            },
            {
                "type": "mrkdwn",
                "text": f"*Requested by*\n{mention(run.requested_by)} "
                f"({slack_text(run.requested_via)})",
            },
        ]
        blocks: list[dict[str, Any]] = [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": _clip(f"Incident {run.ticket}{title}", 150)},
            },
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f":rotating_light: *{slack_text(run.runbook_title)}*",
                },
                "fields": fields,
            },
        ]
        if inputs:
            blocks.append(
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": _clip(f"*Inputs*\n{inputs}")},
                }
            )
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": "Progress, approvals and the audit head follow in this thread.",
                    }
                ],
            }
        )
        return blocks

    def _reply(
        self,
        run: RunFacts,
        text: str,
        *,
        blocks: list[dict[str, Any]] | None = None,
        broadcast: bool = False,
    ) -> tuple[str, str] | None:
        """Post in the incident's thread, opening it first if Slack could not be reached before."""
        where = self.thread(run.ticket) or self._open_thread(run)
        if where is None:
            return None
        channel, thread_ts = where
        arguments: dict[str, Any] = {"channel": channel, "text": text, "thread_ts": thread_ts}
        if blocks is not None:
            arguments["blocks"] = blocks
        if broadcast:
            arguments["reply_broadcast"] = True
        response = self._call("chat.postMessage", **arguments)
        return str(response["channel"]), str(response["ts"])

    # progress and gates -------------------------------------------------------------------

    def steps_finished(self, run: RunFacts, steps: Sequence[FinishedStep]) -> None:
        lines = [
            f"{STATUS_ICONS.get(s.status, ':grey_question:')} {code(s.step_id)} "
            f"{slack_text(s.title)}: {slack_text(s.status)}"
            + (f" — {code(s.detail)}" if s.detail else "")
            for s in steps
        ]
        self._reply(run, _clip("\n".join(lines), 3000))

    def step_progress(self, run: RunFacts, progress: StepProgress) -> None:
        """One message per long step in the thread, edited as it goes (a resumed run edits
        the same message: its place is in the journal's posts)."""
        key = progress.step_id
        text = progress_text(progress)
        post = self.posts.post(run.ticket, PROGRESS, key)
        if post is not None:
            self._call("chat.update", channel=post.channel, ts=post.ts, text=text)
            return
        where = self._reply(run, text)
        if where is not None:
            self.posts.set_post(run.ticket, PROGRESS, key=key, channel=where[0], ts=where[1])

    def gate_changed(self, run: RunFacts, gate: GateState) -> None:
        key = f"{run.run_id}:{gate.step_id}"
        blocks = gate_blocks(run, gate)
        text = gate_text(run, gate)
        post = self.posts.post(run.ticket, GATE, key)
        if post is not None and (post.data or {}).get("gate_hash") == gate.request.gate_hash:
            if gate.request.escalated and not (post.data or {}).get("escalated"):
                self._announce_escalation(run, gate)
                self.posts.set_post(
                    run.ticket,
                    GATE,
                    key=key,
                    channel=post.channel,
                    ts=post.ts,
                    data={**(post.data or {}), "escalated": True},
                )
            self._call(
                "chat.update",
                channel=post.channel,
                ts=post.ts,
                text=text,
                blocks=blocks,
            )
            return
        if post is not None:  # the gate was shown for another version: that message is stale
            stale = gate_text(
                run, GateState(gate.step_id, gate.title, gate.request, outcome="replaced")
            )
            self._call("chat.update", channel=post.channel, ts=post.ts, text=stale, blocks=[])
        where = self._reply(run, text, blocks=blocks, broadcast=gate.outcome is None)
        if where is not None:
            channel, ts = where
            self.posts.set_post(
                run.ticket,
                GATE,
                key=key,
                channel=channel,
                ts=ts,
                data={"gate_hash": gate.request.gate_hash},
            )

    def _announce_escalation(self, run: RunFacts, gate: GateState) -> None:
        request = gate.request
        self._reply(
            run,
            f":rotating_light: {code(gate.step_id)} got no decision in time and is escalated: "
            f"{who_may_decide(request)} may now decide, until {_when(request.deadline)}.",
            broadcast=True,
        )

    def reminder(self, run: RunFacts, gate: GateState, minutes_left: int) -> None:
        request = gate.request
        people = " ".join(
            [mention(g) for g in request.usergroups]
            + [mention(p) for p in request.approvers if p != request.requester][:10]
        )
        needed = gate.still_needed if request.kind == "approval" else 1
        self._reply(
            run,
            f":alarm_clock: {code(gate.step_id)} still needs {needed} decision"
            f"{'s' if needed != 1 else ''}; {minutes_left} min left before its timeout. {people}",
            broadcast=True,
        )

    def watchdog_found(self, run: RunFacts, text: str, command: str) -> None:
        """Something of this incident is stuck (``tocsin.watchdog``): said in the thread and
        broadcast to the channel, the command to fix it as code."""
        self._reply(
            run,
            slack_text(f"Watchdog: {text}"[:300]),
            blocks=[
                {"type": "section", "text": plain(f"🚨 Watchdog: {text}")},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": code(command)}]},
            ],
            broadcast=True,
        )

    def decision_refused(self, run: RunFacts, refused: RefusedDecision) -> None:
        if refused.channel != "slack":
            return
        post = self.posts.post(run.ticket, GATE, f"{run.run_id}:{refused.step_id}")
        where = (post.channel, post.ts) if post else self.thread(run.ticket)
        if where is None:
            return
        self._call(
            "chat.postEphemeral",
            channel=where[0],
            user=refused.actor,
            text=":no_entry_sign: "
            + slack_text(
                f"Your {refused.decision} of {refused.step_id} was not counted: {refused.reason}"
            ),
        )

    def run_finished(self, run: RunFacts, status: RunStatus, reason: str) -> None:
        icon = ":white_check_mark:" if status == RunStatus.SUCCEEDED else ":x:"
        outcome = f"{icon} Runbook {code(run.runbook)} {slack_text(status)}"
        report = f"Report: {code(f'tocsin report {run.ticket} -o {run.ticket}.pdf')}"
        self._reply(
            run,
            f"{outcome}: {slack_text(reason)}. {report}",
            blocks=[
                {"type": "section", "text": {"type": "mrkdwn", "text": f"{outcome}:"}},
                {"type": "section", "text": plain(f"{reason}.")},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": report}]},
            ],
            broadcast=True,
        )

    def anchor(self, run: RunFacts, seq: int, head: str, key_id: str) -> str:
        where = self._reply(
            run,
            f":lock: Audit checkpoint for {slack_text(run.ticket)}: record {seq}, head "
            f"{code(f'sha256:{head}')} (key {slack_text(key_id)}). Keep this message: "
            f"{code(f'tocsin audit verify {run.ticket} --anchor sha256:{head}')} proves later "
            "that the audit trail was not cut short.",
        )
        return f"slack:{where[0]}:{where[1]}" if where else ""

    def close(self) -> None:
        return None
