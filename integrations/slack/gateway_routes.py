"""Slack's routes on ``tocsin gateway``: Approve / Reject clicks and the ``/tocsin`` command.

- ``POST /slack/interactions``: clicks on gate buttons (``block_actions``);
- ``POST /slack/commands``: ``/tocsin run <runbook> <ticket> name=value...``,
  ``/tocsin status <ticket>``.

Each request's signature is checked first (``SlackInbound.check``: v0 HMAC-SHA256 with the
app's signing secret, timestamp within 5 minutes, the same signed request never twice:
not at this gateway process, remembered in memory, nor at any other on the same journal,
which holds each click's ``request_digest`` (unique in the click queue) and each
command's (a claimed delivery)); then the click or the command is read, checked for the
shape Slack gives it, and handed to the gateway's core. A click is queued in the journal
(committed) before Slack gets its answer, so an acknowledged click is never lost, and the
answer waits on nothing else: the gateway's judge (``tocsin.gateway.click_judge``) then
reads it again (``judge_queued``), looks the person up in Slack, judges and journals the
decision, wakes the flow or tells the clicker privately why the click did not count.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tocsin.access import ChatRequester
from tocsin.errors import TocsinError
from tocsin.gateway import Click, Gateway, RequestRefused
from tocsin.gateway.click_judge import Verdict
from tocsin.gateway.reading import lowered_headers, parse_form, parse_json
from tocsin.inputs import parse_assignments
from tocsin.integration import GatewayPart, InboundRoute
from tocsin.integrations.slack.client import slack_text
from tocsin.integrations.slack.inbound import SlackInbound
from tocsin.integrations.slack.incident_thread import APPROVE_ACTION, REJECT_ACTION
from tocsin.integrations.slack.refusal_notices import RefusalNotices
from tocsin.integrations.slack.response_url import ResponseUrls
from tocsin.integrations.slack.signature import REMEMBERED_FOR, REPLAYED, request_digest
from tocsin.journal.click_queue import ClickOutcome, QueuedClick
from tocsin.tickets import SAFE_KEY

_log = logging.getLogger("tocsin.gateway")

VIA = "slack"
COMMAND_ANSWER_SECONDS = 2.0
"""A command not done by then is answered "on it", its answer sent to its response_url."""
MAX_BUTTON_VALUE = 512
STEP_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
GATE_HASH_PATTERN = re.compile(r"^[0-9a-f]{8,64}$")
SLACK_USER_PATTERN = re.compile(r"^[UW][A-Z0-9]{2,31}$")
SLACK_CHANNEL_PATTERN = re.compile(r"^[A-Z0-9]{2,32}$")
KINDS = {APPROVE_ACTION: "approve", REJECT_ACTION: "reject"}
USAGE = (
    "Usage:\n"
    "• `/tocsin run <runbook> <ticket> name=value ...` — start a runbook for an incident\n"
    "• `/tocsin status <ticket>` — what its runs do and wait for\n"
    "Runbooks and their inputs: `tocsin list` on a support machine."
)


@dataclass(frozen=True)
class SlackClick:
    """A click on a gate button, and the channel it came from ("" when the payload does not
    say), where the clicker is told privately if it did not count."""

    click: Click
    channel: str


def _malformed(what: str) -> RequestRefused:
    return RequestRefused(400, f"malformed Slack interaction: {what}")


def click_from_payload(payload: Mapping[str, Any]) -> SlackClick | None:
    """The click a payload carries; None when it is not a click on a Tocsin gate button.

    ``RequestRefused`` (400) when it is a click on one, or a ``block_actions`` payload, that
    is not shaped as Slack sends them (what a hand-made request would get wrong).
    """
    if payload.get("type") != "block_actions":
        return None
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions:
        raise _malformed("block_actions without a list of actions")
    action = actions[0]
    if not isinstance(action, dict) or not isinstance(action.get("action_id"), str):
        raise _malformed("an action without an action_id")
    kind = KINDS.get(action["action_id"])
    if kind is None:
        return None  # another app's button, or one of ours Tocsin does not answer
    value = action.get("value")
    if not isinstance(value, str) or len(value) > MAX_BUTTON_VALUE:
        raise _malformed("a gate button without its value")
    gate = parse_json(value, "the gate button's value")
    if not isinstance(gate, dict):
        raise _malformed("the gate button's value is not an object")
    ticket, run, step, gate_hash = (gate.get(k) for k in ("ticket", "run", "step", "hash"))
    if not isinstance(ticket, str) or not SAFE_KEY.fullmatch(ticket):
        raise _malformed("the gate button names no ticket key")
    if type(run) is not int or not 0 < run < 2**63:
        raise _malformed("the gate button names no run number")
    if not isinstance(step, str) or not STEP_ID_PATTERN.match(step):
        raise _malformed("the gate button names no step id")
    if not isinstance(gate_hash, str) or not GATE_HASH_PATTERN.match(gate_hash):
        raise _malformed("the gate button carries no gate hash")
    user = payload.get("user")
    user_id = user.get("id") if isinstance(user, dict) else None
    if not isinstance(user_id, str) or not SLACK_USER_PATTERN.match(user_id):
        raise _malformed("no Slack user id in user.id")
    click = Click(
        user=user_id, kind=kind, ticket=ticket, run_id=run, step_id=step, gate_hash=gate_hash
    )
    return SlackClick(click, _channel_of(payload))


def _channel_of(payload: Mapping[str, Any]) -> str:
    channel = payload.get("channel")
    container = payload.get("container")
    for found in (
        channel.get("id") if isinstance(channel, dict) else None,
        container.get("channel_id") if isinstance(container, dict) else None,
    ):
        if isinstance(found, str) and SLACK_CHANNEL_PATTERN.match(found):
            return found
    return ""


def claimed_by(body: bytes) -> dict[str, Any]:
    """What a refused Slack request says it is (user, decision, ticket, step, command)."""
    fields = dict(parse_qsl(body.decode("utf-8", "replace"), max_num_fields=100))
    if "payload" in fields:
        return _claimed_click(parse_json(fields["payload"], "the payload"))
    if "command" in fields:
        return {
            "user": fields.get("user_id"),
            "command": f"{fields.get('command', '')} {fields.get('text', '')}",
        }
    return {}


def _claimed_click(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        return {}
    user = payload.get("user")
    actions = payload.get("actions")
    action = actions[0] if isinstance(actions, list) and actions else None
    action = action if isinstance(action, dict) else {}
    action_id = action.get("action_id")
    value = action.get("value")
    gate = parse_json(value, "the value") if isinstance(value, str) else None
    gate = gate if isinstance(gate, dict) else {}
    return {
        "user": user.get("id") if isinstance(user, dict) else None,
        "decision": KINDS.get(action_id) if isinstance(action_id, str) else None,
        "ticket": gate.get("ticket"),
        "step_id": gate.get("step"),
    }


def _answer(error: TocsinError) -> str:
    return f":warning: {error.message}" + (f"\n{error.hint}" if error.hint else "")


class SlackRoutes:
    """The two Slack routes, over the gateway's core and the Slack integration's inbound side."""

    def __init__(self, gateway: Gateway, slack: SlackInbound) -> None:
        self.gateway = gateway
        self.slack = slack
        self.responses = ResponseUrls(gateway.settings)
        self.notices = RefusalNotices()

    async def _signed_form(self, request: Request) -> tuple[dict[str, str], str]:
        """The fields of a request Slack signed, and its ``request_digest``; ``RequestRefused``
        otherwise (or when this gateway process accepted it before)."""
        body = await self.gateway.read_body(request)
        headers = lowered_headers(request)
        refusal = self.slack.check.refusal(body, headers)
        if refusal is not None:
            raise RequestRefused(401, refusal)
        return parse_form(body), request_digest(headers)

    def claim_request(self, digest: str) -> bool:
        """Record a signed request in the journal (``webhook_deliveries``): False when any
        gateway on the journal recorded it before (a replay)."""
        claimed = self.gateway.journal.claim_delivery(VIA, [digest], keep_for=REMEMBERED_FOR)
        return claimed is None

    async def interactions(self, request: Request) -> Response:
        form, digest = await self._signed_form(request)
        if "payload" not in form:
            raise _malformed("no payload field")
        payload = parse_json(form["payload"], "the interaction payload")
        if not isinstance(payload, dict):
            raise _malformed("the payload is not an object")
        if click_from_payload(payload) is None:
            return Response(status_code=200)  # another kind of interaction: nothing to do
        # Signed, fresh, not seen here, shaped as Slack sends it: queued, then answered. No
        # Slack look-up and no judging before the answer (Slack waits 3 s at most). The
        # queue refuses a signed request it holds already (sent to another gateway first).
        if await self.gateway.queue_click(VIA, form["payload"], digest) is None:
            raise RequestRefused(401, REPLAYED)
        return Response(status_code=200)

    def look_up_clickers(self, batch: Sequence[QueuedClick]) -> None:
        """Before a batch is judged: ask Slack who each clicker is, side by side
        (``users.info``, cached), and read the gates clicked at once: judging the clicks one
        by one then finds the answers there."""
        users = set()
        gates = set()
        for queued in batch:
            try:
                payload = parse_json(queued.payload, "the queued interaction payload")
                clicked = click_from_payload(payload) if isinstance(payload, dict) else None
            except RequestRefused:
                continue
            if clicked is not None:
                users.add(clicked.click.user)
                gates.add((clicked.click.run_id, clicked.click.step_id))
        self.gateway.read_gates(gates)
        if len(users) > 1:
            list(self.gateway.lookups.map(self.slack.details, sorted(users)))

    def judge_queued(self, queued: QueuedClick) -> Verdict:
        """Judge a click queued by ``interactions`` (on the gateway's judge thread)."""
        try:
            payload = parse_json(queued.payload, "the queued interaction payload")
            clicked = click_from_payload(payload) if isinstance(payload, dict) else None
        except RequestRefused as refused:  # checked at the door: only a changed row gets here
            return Verdict(ClickOutcome.UNREADABLE, refused.message)
        if clicked is None:
            return Verdict(ClickOutcome.UNREADABLE, "not a click on a Tocsin gate button")
        judged = self.gateway.decide(
            clicked.click, VIA, queued_at=queued.received_at if queued.attempts > 1 else None
        )
        if judged.accepted:
            return Verdict(ClickOutcome.ACCEPTED, judged.message, judged.deliver)
        return Verdict(
            ClickOutcome.REFUSED,
            judged.message,
            lambda: self.tell_clicker(clicked, judged.message),
        )

    def tell_clicker(self, clicked: SlackClick, message: str) -> None:
        """Say privately to the clicker why the click did not count."""
        if not clicked.channel:
            return
        click = clicked.click
        text = f":no_entry_sign: Your {click.kind} of {click.step_id} was not counted: {message}"
        self.notices.send(
            (clicked.channel, click.user, click.run_id, click.step_id, message),
            lambda: self.slack.tell(clicked.channel, click.user, text),
        )

    async def commands(self, request: Request) -> Response:
        form, digest = await self._signed_form(request)
        if not SLACK_USER_PATTERN.match(form.get("user_id", "")):
            raise RequestRefused(400, "malformed slash command: no Slack user id in user_id")
        if not await self.gateway.journalled(self.claim_request, digest):
            raise RequestRefused(401, REPLAYED)  # sent to another gateway first
        channel = form.get("channel_id", "")
        work = asyncio.ensure_future(
            run_in_threadpool(
                self.command,
                form.get("text", ""),
                form["user_id"],
                channel if SLACK_CHANNEL_PATTERN.match(channel) else "",
            )
        )
        response_url = form.get("response_url", "")
        try:
            # Slack waits 3 s for the answer: a slow start (Prefect busy) answers later.
            text = await asyncio.wait_for(asyncio.shield(work), COMMAND_ANSWER_SECONDS)
        except TimeoutError:
            if not self.responses.may_answer_at(response_url):
                text = await work  # nowhere to answer later: the answer may come too late
            else:
                work.add_done_callback(lambda done: self._answer_later(response_url, done))
                text = ":hourglass_flowing_sand: On it — the answer follows here in a moment."
        return JSONResponse({"response_type": "ephemeral", "text": text})

    def _answer_later(self, response_url: str, done: asyncio.Future[str]) -> None:
        """Send a slow command's answer to its response_url (on a background thread)."""
        error = done.exception()
        if error is not None:
            _log.error("a slash command failed after its first answer", exc_info=error)
            text = ":warning: That did not work: the gateway's log says why."
        else:
            text = done.result()
        self.gateway.background.submit(self.responses.answer, response_url, text)

    def command(self, text: str, user: str, channel: str) -> str:
        """The answer to ``/tocsin <text>`` (shown only to the person who typed it)."""
        words = text.split()
        if not words or words[0] in ("help", "-h", "--help"):
            return USAGE
        who = ChatRequester(user, channel)
        try:
            if words[0] == "status" and len(words) == 2:
                lines = self.gateway.incident_status(words[1], who, VIA)
                shown = [slack_text(line) for line in lines]
                return "```\n" + "\n".join(shown)[:2900] + "\n```"
            if words[0] == "run" and len(words) >= 3:
                loaded, key, where = self.gateway.start_run(
                    words[1], words[2], parse_assignments(words[3:]), user, VIA, who=who
                )
                return (
                    f":rocket: {loaded.runbook.title} (`{loaded.id}` v{loaded.runbook.version}) "
                    f"{where} for {key}; progress and approvals follow in the incident thread."
                )
        except TocsinError as error:
            return _answer(error)
        return f":warning: I do not understand `{text[:100]}`.\n{USAGE}"


def gateway_part(gateway: Gateway) -> GatewayPart:
    """Slack's part of the gateway: its two routes, and who people are (user groups)."""
    import slack_sdk.web  # noqa: F401  (imported now: the first clicks do not wait for it)

    slack = SlackInbound(gateway.settings, gateway.secrets, gateway.clock)
    routes = SlackRoutes(gateway, slack)
    gateway.judges_clicks_from(VIA, routes.judge_queued, routes.look_up_clickers)
    return GatewayPart(
        routes=(
            InboundRoute(
                "/slack/interactions",
                routes.interactions,
                "Slack interactivity request URL",
                claimed_by,
            ),
            InboundRoute(
                "/slack/commands", routes.commands, "Slack slash command /tocsin", claimed_by
            ),
        ),
        people=slack,
    )


__all__ = ["USAGE", "SlackClick", "SlackRoutes", "claimed_by", "click_from_payload", "gateway_part"]
