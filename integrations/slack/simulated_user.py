"""A simulated Slack user: sends Tocsin's gateway the signed requests Slack sends an app.

When someone clicks a button on a message, Slack POSTs a ``block_actions`` payload to the
app's interactivity Request URL; when someone types a slash command, it POSTs the
command's fields to the command's Request URL. Both are form-encoded and signed with the
app's signing secret (``X-Slack-Signature``, ``X-Slack-Request-Timestamp``)::

    with FakeSlack() as slack, SimulatedSlack(gateway_url, secret, fake_slack=slack) as user:
        ...  # a run posts an approval message with buttons
        response = user.click("U0ALICE", slack.messages[-1], "approve")

``click`` and ``slash_command`` can also forge a request (another secret), replay one (an
old timestamp) or leave it unsigned, to test that the gateway refuses them.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import time
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlencode

import httpx

from tocsin.integrations.slack.fake import (
    BOT_ID,
    BOT_USER_ID,
    TEAM_ID,
    FakeSlack,
    PostedSlackMessage,
)

SLACK_USER_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"
SANDBOX_APP_ID = "A0TOCSIN"
SANDBOX_VERIFICATION_TOKEN = "tocsin-sandbox-verification-token"
"""The deprecated ``token`` field Slack still puts in every payload."""

_FORM = "application/x-www-form-urlencoded"


def sign_slack_request(
    signing_secret: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """The headers with which Slack signs ``body`` (timestamp: now unless given)."""
    when = int(time.time()) if timestamp is None else timestamp
    base = f"v0:{when}:".encode() + body
    digest = hmac.new(signing_secret.encode("utf-8"), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(when), "X-Slack-Signature": f"v0={digest}"}


class SimulatedSlack:
    """Acts as Slack towards Tocsin's gateway: button clicks and slash commands, signed."""

    def __init__(
        self,
        gateway_url: str,
        signing_secret: str,
        *,
        team_id: str = TEAM_ID,
        team_domain: str = "tocsin-sandbox",
        api_app_id: str = SANDBOX_APP_ID,
        verification_token: str = SANDBOX_VERIFICATION_TOKEN,
        fake_slack: FakeSlack | None = None,
        timeout: float = 10.0,
    ) -> None:
        """``fake_slack``, when given, names users and channels and receives response_url posts."""
        self.gateway_url = gateway_url.rstrip("/")
        self._signing_secret = signing_secret
        self.team_id = team_id
        self.team_domain = team_domain
        self.api_app_id = api_app_id
        self.verification_token = verification_token
        self.fake_slack = fake_slack
        self._client = httpx.Client(timeout=timeout)
        self._sequence = itertools.count(1)

    def __repr__(self) -> str:  # the signing secret stays out of reprs
        return f"SimulatedSlack(gateway_url={self.gateway_url!r}, team_id={self.team_id!r})"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- what a user does ----------------------------------------------------

    def click(
        self,
        user_id: str,
        message: PostedSlackMessage,
        action_id: str,
        *,
        channel: str | None = None,
        signing_secret: str | None = None,
        timestamp: int | None = None,
        signed: bool = True,
    ) -> httpx.Response:
        """Click the button ``action_id`` of ``message``: POST a block_actions payload to /slack/interactions.

        ``ValueError`` (listing the action_ids there are) when the message has no such button.
        """
        return self._send(
            "/slack/interactions",
            self.click_body(user_id, message, action_id, channel=channel),
            signing_secret=signing_secret,
            timestamp=timestamp,
            signed=signed,
        )

    def click_body(
        self,
        user_id: str,
        message: PostedSlackMessage,
        action_id: str,
        *,
        channel: str | None = None,
    ) -> bytes:
        """The body ``click`` sends (form-encoded ``payload``), to be signed and sent later
        (``signed_headers``): a load generator builds its clicks before it sends them."""
        blocks = _with_block_ids(message.blocks or [])
        block_id, button = _find_button(blocks, action_id)
        channel_id = channel or message.channel
        action: dict[str, Any] = {
            "action_id": action_id,
            "block_id": block_id,
            "text": button.get("text"),
        }
        if "value" in button:
            action["value"] = button["value"]
        action["type"] = "button"
        if "style" in button:
            action["style"] = button["style"]
        action["action_ts"] = f"{time.time():.6f}"
        container: dict[str, Any] = {
            "type": "message",
            "message_ts": message.ts,
            "channel_id": channel_id,
            "is_ephemeral": False,
        }
        if message.thread_ts is not None:
            container["thread_ts"] = message.thread_ts
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": {
                "id": user_id,
                "username": self._user_name(user_id),
                "name": self._user_name(user_id),
                "team_id": self.team_id,
            },
            "api_app_id": self.api_app_id,
            "token": self.verification_token,
            "container": container,
            "trigger_id": self._trigger_id(),
            "team": {"id": self.team_id, "domain": self.team_domain},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel_id, "name": self._channel_name(channel_id)},
            "message": self._message_object(message, blocks),
            "state": {"values": {}},
            "response_url": self._response_url("actions"),
            "actions": [action],
        }
        return urlencode({"payload": json.dumps(payload, separators=(",", ":"))}).encode()

    def slash_command(
        self,
        user_id: str,
        text: str,
        *,
        channel_id: str = "C0INCIDENTS",
        command: str = "/tocsin",
        signing_secret: str | None = None,
        timestamp: int | None = None,
        signed: bool = True,
        response_url: str | None = None,
    ) -> httpx.Response:
        """Type ``/tocsin <text>`` in a channel: POST the command's fields to /slack/commands
        (``response_url``: another than Slack's, as a forged request would carry)."""
        fields = {
            "token": self.verification_token,
            "team_id": self.team_id,
            "team_domain": self.team_domain,
            "channel_id": channel_id,
            "channel_name": self._channel_name(channel_id),
            "user_id": user_id,
            "user_name": self._user_name(user_id),
            "command": command,
            "text": text,
            "api_app_id": self.api_app_id,
            "is_enterprise_install": "false",
            "response_url": response_url or self._response_url("commands"),
            "trigger_id": self._trigger_id(),
        }
        return self._send(
            "/slack/commands",
            urlencode(fields).encode(),
            signing_secret=signing_secret,
            timestamp=timestamp,
            signed=signed,
        )

    def post_raw(self, path: str, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
        """POST exactly ``body`` with exactly ``headers`` to ``path`` on the gateway."""
        return self._client.post(f"{self.gateway_url}{path}", content=body, headers=dict(headers))

    # -- building requests ---------------------------------------------------

    def _send(
        self,
        path: str,
        body: bytes,
        *,
        signing_secret: str | None,
        timestamp: int | None,
        signed: bool,
    ) -> httpx.Response:
        if signed:
            headers = self.signed_headers(body, signing_secret, timestamp)
        else:
            headers = {"Content-Type": _FORM, "User-Agent": SLACK_USER_AGENT}
        return self.post_raw(path, body, headers)

    def signed_headers(
        self, body: bytes, signing_secret: str | None = None, timestamp: int | None = None
    ) -> dict[str, str]:
        """The headers Slack sends ``body`` with, signed (with the app's signing secret
        unless another is given; timestamp: now unless given)."""
        secret = self._signing_secret if signing_secret is None else signing_secret
        return {
            "Content-Type": _FORM,
            "User-Agent": SLACK_USER_AGENT,
            **sign_slack_request(secret, body, timestamp),
        }

    def _user_name(self, user_id: str) -> str:
        if self.fake_slack is not None:
            try:
                return self.fake_slack.user(user_id).name
            except KeyError:
                pass
        return user_id.lower()

    def _channel_name(self, channel_id: str) -> str:
        if self.fake_slack is not None:
            with self.fake_slack.lock:
                known = self.fake_slack.channels.get(channel_id)
            if known is not None:
                return known.name
        return channel_id.lower()

    def _message_object(self, message: PostedSlackMessage, blocks: list[Any]) -> dict[str, Any]:
        """The clicked message as Slack sends it in the payload."""
        sent: dict[str, Any] = {
            "bot_id": BOT_ID,
            "type": "message",
            "text": message.text or "",
            "user": BOT_USER_ID,
            "ts": message.ts,
            "team": self.team_id,
            "blocks": blocks,
        }
        if message.thread_ts is not None:
            sent["thread_ts"] = message.thread_ts
        return sent

    def _response_url(self, kind: str) -> str:
        """Where the app may answer; on the fake when there is one, so the answer is recorded."""
        base = "https://hooks.slack.com" if self.fake_slack is None else self.fake_slack.url
        return f"{base}/{kind}/{self.team_id}/{next(self._sequence)}/{secrets.token_hex(12)}"

    def _trigger_id(self) -> str:
        return f"{next(self._sequence)}.{int(time.time())}.{secrets.token_hex(16)}"


def _with_block_ids(blocks: list[Any]) -> list[Any]:
    """A copy of ``blocks`` where each block has a block_id, as Slack assigns one when missing."""
    copied = json.loads(json.dumps(blocks))
    for index, block in enumerate(copied):
        if isinstance(block, dict) and not block.get("block_id"):
            block["block_id"] = f"block-{index}"
    return list(copied)


def _elements(block: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The interactive elements of a block: an actions block's elements, a section's accessory."""
    for element in block.get("elements") or []:
        if isinstance(element, dict):
            yield element
    accessory = block.get("accessory")
    if isinstance(accessory, dict):
        yield accessory


def _find_button(blocks: list[Any], action_id: str) -> tuple[str, Mapping[str, Any]]:
    """The block_id and the button element with ``action_id``; ``ValueError`` otherwise."""
    present: list[str] = []
    for block in blocks:
        if not isinstance(block, dict):
            continue
        for element in _elements(block):
            if "action_id" not in element:
                continue
            if element["action_id"] == action_id and element.get("type") == "button":
                return str(block["block_id"]), element
            present.append(str(element["action_id"]))
    listed = ", ".join(present) if present else "none"
    raise ValueError(f"the message has no button {action_id!r}; its action_ids: {listed}")
