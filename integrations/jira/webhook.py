"""Jira's route on ``tocsin gateway``: ``POST /webhooks/jira``, a webhook starting the
runbook a ticket names.

The request is checked by the ticket system (``JiraTickets.verify_webhook``: the shared
secret, ``X-Hub-Signature``); its body's ``timestamp`` must be within
``gateway.jira_event_max_age_seconds``, and the same signed body is handled once
(remembered in the journal, by delivery id and by body). Then the gateway's core starts
the run (``Gateway.start_from_ticket``), or says on the ticket why it did not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tocsin.errors import InputError
from tocsin.gateway import Gateway, RequestRefused, claim_text
from tocsin.gateway.reading import lowered_headers, parse_json
from tocsin.integration import GatewayPart, InboundRoute
from tocsin.tickets import TicketSystem

PATH = "/webhooks/jira"
JIRA_CLOCK_SKEW_SECONDS = 300
"""A Jira event may be dated this much in the future (the two clocks differ a little)."""


def _delivery_digests(body: bytes, delivery_id: str | None) -> list[str]:
    """What identifies a webhook delivery: its delivery id (if any), then its signed body."""
    digests = [hashlib.sha256(b"jira-body:" + body).hexdigest()]
    if delivery_id:
        by_id = hashlib.sha256(b"jira-delivery:" + delivery_id.encode("utf-8", "replace"))
        digests.insert(0, by_id.hexdigest())
    return digests


def claimed_by(body: bytes) -> dict[str, Any]:
    """What a refused Jira webhook says it is: the issue key."""
    document = parse_json(body, "the body")
    issue = document.get("issue") if isinstance(document, dict) else None
    return {"ticket": issue.get("key") if isinstance(issue, dict) else None}


class JiraWebhook:
    """The route's handler, over the gateway's core and its ticket system."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    @property
    def tickets(self) -> TicketSystem | None:
        tickets = self.gateway.tickets
        return tickets if tickets is not None and tickets.name == "jira" else None

    def event_refusal(self, document: Mapping[str, Any]) -> str | None:
        """Why a signed Jira event is too old (or dated in the future) to act on; None: it is
        fresh. Its ``timestamp`` (milliseconds) is in the signed body."""
        stamp = document.get("timestamp")
        if isinstance(stamp, bool) or not isinstance(stamp, (int, float)) or not 0 < stamp < 1e15:
            return "malformed Jira webhook: no timestamp (milliseconds) in the body"
        age = self.gateway.clock() - stamp / 1000
        window = self.gateway.settings.gateway.jira_event_max_age_seconds
        if age > window:
            return (
                f"stale Jira event: sent {int(age)} s ago, more than {window:g} s "
                "(setting gateway.jira_event_max_age_seconds): a replay, or a delivery Jira "
                "kept retrying that long"
            )
        if age < -JIRA_CLOCK_SKEW_SECONDS:
            return (
                f"Jira event dated {int(-age)} s in the future: this machine's clock or "
                "Jira's is wrong"
            )
        return None

    def claim_delivery(self, body: bytes, delivery_id: str | None) -> str | None:
        """Remember a Jira delivery (its signed body, and its delivery id) in the journal:
        ``"delivery"`` when that delivery was handled before (Jira retrying it), ``"body"``
        when the same signed body came before under another id (a replay), None: new."""
        digests = _delivery_digests(body, delivery_id)
        max_age = self.gateway.settings.gateway.jira_event_max_age_seconds
        keep_for = timedelta(seconds=max_age + 2 * JIRA_CLOCK_SKEW_SECONDS)
        seen = self.gateway.journal.claim_delivery("jira", digests, keep_for=keep_for)
        if seen is None:
            return None
        return "body" if seen == digests[-1] else "delivery"

    def release_delivery(self, body: bytes, delivery_id: str | None) -> None:
        """Forget a delivery the gateway failed to handle, so that Jira's retry is handled."""
        self.gateway.journal.release_delivery(_delivery_digests(body, delivery_id))

    async def handle(self, request: Request) -> Response:
        tickets = self.tickets
        if tickets is None:
            return JSONResponse(
                {"ok": False, "error": "Jira is not configured (settings jira.url)"},
                status_code=404,
            )
        body = await self.gateway.read_body(request)
        headers = lowered_headers(request)
        if not tickets.verify_webhook(headers, body):
            raise RequestRefused(
                401, "bad or missing X-Hub-Signature: not signed with the shared webhook secret"
            )
        document = parse_json(body, "the Jira webhook body")
        if not isinstance(document, dict):
            raise RequestRefused(400, "malformed Jira webhook: the body is not a JSON object")
        stale = self.event_refusal(document)
        if stale is not None:
            raise RequestRefused(400 if stale.startswith("malformed") else 401, stale)
        delivery = headers.get("x-atlassian-webhook-identifier", "")[:200] or None
        try:
            trigger = tickets.parse_webhook(body, delivery_id=delivery)
        except InputError as error:
            raise RequestRefused(400, error.message, error.hint) from None
        if not tickets.keys.matches(trigger.ticket):
            raise RequestRefused(
                400,
                f"malformed Jira webhook: the issue key {claim_text(trigger.ticket)!r} "
                "is not a ticket key",
            )
        seen = await self.gateway.journalled(self.claim_delivery, body, trigger.delivery_id)
        if seen == "delivery":  # Jira retrying a delivery it thinks failed: handled once
            return JSONResponse({"ok": True, "duplicate": True})
        if seen == "body":
            raise RequestRefused(
                401,
                "replayed Jira webhook: this signed body was already received, under another "
                "delivery id; nothing started",
            )
        try:
            status, message = await run_in_threadpool(self.gateway.start_from_ticket, trigger)
        except BaseException:
            await self.gateway.journalled(self.release_delivery, body, trigger.delivery_id)
            raise
        return JSONResponse({"ok": status < 400, "message": message}, status_code=status)


def gateway_part(gateway: Gateway) -> GatewayPart:
    """Jira's part of the gateway: the webhook route."""
    webhook = JiraWebhook(gateway)
    note = "" if webhook.tickets else "(Jira not configured)"
    route = InboundRoute(PATH, webhook.handle, "Jira webhook", claimed_by, note=note)
    return GatewayPart(routes=(route,))


__all__ = ["PATH", "JiraWebhook", "claimed_by", "gateway_part"]
