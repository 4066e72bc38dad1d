"""A fake of the Slack Web API (``https://slack.com/api/<method>``), close enough for slack_sdk.

What it does like Slack:

- every method is ``POST /api/<method>`` (GET with a query string works too); arguments
  come form-encoded, as JSON (``Content-Type: application/json``) or in the query;
- auth by ``Authorization: Bearer xoxb-...`` (or a ``token`` form field); no token answers
  ``not_authed``, an unknown one ``invalid_auth``, both with HTTP 200 as Slack does;
- each token has scopes; a method needing another one answers ``missing_scope`` with
  ``needed`` and ``provided``;
- rate limits per method: more than ``rate_limit`` calls within ``rate_window_seconds``
  answers HTTP 429 with ``Retry-After`` and ``{"ok": false, "error": "ratelimited"}``;
  ``rate_limit_next(k)`` forces that answer for the next k calls.

Adding a method is one function on ``FakeSlack`` decorated with ``@slack_method(name,
scope=...)``: it receives a ``SlackCall`` and returns the fields of the ``ok`` answer, or
raises ``SlackError("code")``.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from tocsin.sandbox.fake_service import FakeService, ReceivedRequest, Reply

SANDBOX_BOT_TOKEN = "xoxb-tocsin-sandbox"
"""The bot token the sandbox's FakeSlack accepts unless told otherwise."""

TEAM_ID = "T0SANDBOX"
BOT_USER_ID = "U0TOCSINBOT"
BOT_ID = "B0TOCSIN"
DEFAULT_SCOPES = frozenset({"chat:write", "usergroups:read"})


@dataclass(frozen=True)
class SlackChannel:
    """A channel of the fake workspace."""

    id: str
    name: str
    bot_is_member: bool = True


@dataclass(frozen=True)
class PostedSlackMessage:
    """A message the fake accepted, as Slack stores it."""

    channel: str
    ts: str
    text: str | None
    blocks: list[Any] | None
    thread_ts: str | None


@dataclass(frozen=True)
class SlackCall:
    """One authenticated call of a Web API method."""

    method: str
    token: str
    args: Mapping[str, Any]


class SlackError(Exception):
    """Raised by a method to answer ``{"ok": false, "error": code, **fields}``."""

    def __init__(self, code: str, **fields: Any) -> None:
        super().__init__(code)
        self.code = code
        self.fields = fields


@dataclass(frozen=True)
class _MethodSpec:
    name: str
    scope: str


SlackMethod = Callable[["FakeSlack", SlackCall], dict[str, Any]]
M = TypeVar("M", bound=SlackMethod)
_SPEC_ATTRIBUTE = "__slack_method__"


def slack_method(name: str, *, scope: str) -> Callable[[M], M]:
    """Make a ``FakeSlack`` function answer the Web API method ``name``, for tokens with ``scope``."""

    def register(function: M) -> M:
        setattr(function, _SPEC_ATTRIBUTE, _MethodSpec(name, scope))
        return function

    return register


def _method_table(cls: type[FakeSlack]) -> dict[str, tuple[_MethodSpec, SlackMethod]]:
    table: dict[str, tuple[_MethodSpec, SlackMethod]] = {}
    for klass in reversed(cls.__mro__):
        for value in vars(klass).values():
            spec = getattr(value, _SPEC_ATTRIBUTE, None)
            if isinstance(spec, _MethodSpec):
                table[spec.name] = (spec, value)
    return table


class FakeSlack(FakeService):
    """A Slack workspace with a bot; see the module docstring."""

    name = "fake Slack"

    def __init__(
        self,
        *,
        tokens: Mapping[str, Iterable[str]] | None = None,
        channels: Iterable[SlackChannel] = (SlackChannel("C0INCIDENTS", "incidents"),),
        rate_limit: int | None = None,
        rate_window_seconds: float = 60.0,
        retry_after_seconds: int = 1,
        usergroups: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        """``tokens`` maps each accepted token to its scopes (default: the sandbox token, chat:write)."""
        super().__init__()
        self._initial_tokens = {
            token: frozenset(scopes)
            for token, scopes in (tokens or {SANDBOX_BOT_TOKEN: DEFAULT_SCOPES}).items()
        }
        self._initial_channels = {channel.id: channel for channel in channels}
        self._initial_limits = (rate_limit, rate_window_seconds, retry_after_seconds)
        self._initial_usergroups = {gid: list(users) for gid, users in (usergroups or {}).items()}
        self._methods = _method_table(type(self))
        self._restore()

    def _restore(self) -> None:
        with self.lock:
            self.tokens: dict[str, frozenset[str]] = dict(self._initial_tokens)
            self.channels: dict[str, SlackChannel] = dict(self._initial_channels)
            self.rate_limit, self.rate_window_seconds, self.retry_after_seconds = (
                self._initial_limits
            )
            self.usergroups: dict[str, list[str]] = {
                gid: list(users) for gid, users in self._initial_usergroups.items()
            }
            self._messages: list[PostedSlackMessage] = []
            self._calls: dict[str, deque[float]] = {}
            self._next_ts = 100

    def reset(self) -> None:
        """Back to the state given to the constructor: no messages, no calls, no faults."""
        with self.lock:
            super().reset()
            self._restore()

    # -- inspection and test switches --------------------------------------

    @property
    def messages(self) -> list[PostedSlackMessage]:
        """Messages posted so far, oldest first."""
        with self.lock:
            return list(self._messages)

    def calls_of(self, method: str) -> list[ReceivedRequest]:
        """Requests received for one Web API method (``chat.postMessage``)."""
        return [request for request in self.requests if request.path == f"/api/{method}"]

    def rate_limit_next(self, count: int) -> None:
        """Answer the next ``count`` calls with 429 ``ratelimited`` and ``Retry-After``."""
        self.fail_next(
            count,
            429,
            {"ok": False, "error": "ratelimited"},
            {"Retry-After": str(self.retry_after_seconds)},
        )

    # -- the Web API ---------------------------------------------------------

    def handle(self, request: ReceivedRequest) -> Reply:
        method = request.path.removeprefix("/api/")
        if not request.path.startswith("/api/") or method not in self._methods:
            return _error("unknown_method", req_method=method)
        spec, function = self._methods[method]
        try:
            args = _arguments(request)
            token = request.bearer_token() or args.pop("token", None)
            if not token:
                raise SlackError("not_authed")
            with self.lock:
                scopes = self.tokens.get(str(token))
            if scopes is None:
                raise SlackError("invalid_auth")
            retry_after = self._count_call(method)
            if retry_after is not None:
                return Reply(
                    429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)}
                )
            if spec.scope not in scopes:
                raise SlackError(
                    "missing_scope", needed=spec.scope, provided=",".join(sorted(scopes))
                )
            result = function(self, SlackCall(method, str(token), args))
        except SlackError as error:
            return _error(error.code, **error.fields)
        return Reply(200, {"ok": True, **result})

    def _count_call(self, method: str) -> int | None:
        """Count a call; the Retry-After seconds when it exceeds the method's rate limit."""
        now = time.monotonic()
        with self.lock:
            if self.rate_limit is None:
                return None
            calls = self._calls.setdefault(method, deque())
            while calls and calls[0] <= now - self.rate_window_seconds:
                calls.popleft()
            if len(calls) >= self.rate_limit:
                return max(1, math.ceil(calls[0] + self.rate_window_seconds - now))
            calls.append(now)
            return None

    def _channel(self, reference: Any) -> SlackChannel:
        """The channel named by an id, ``#name`` or ``name``; ``channel_not_found`` otherwise."""
        text = str(reference or "")
        with self.lock:
            if text in self.channels:
                return self.channels[text]
            for channel in self.channels.values():
                if channel.name == text.removeprefix("#"):
                    return channel
        raise SlackError("channel_not_found")

    def _new_ts(self) -> str:
        with self.lock:
            counter = self._next_ts
            self._next_ts += 100
        seconds, micros = divmod(counter, 1_000_000)
        return f"{1_700_000_000 + seconds}.{micros:06d}"

    @slack_method("usergroups.users.list", scope="usergroups:read")
    def usergroups_users_list(self, call: SlackCall) -> dict[str, Any]:
        group = str(call.args.get("usergroup") or "")
        with self.lock:
            if group not in self.usergroups:
                raise SlackError("no_such_subteam")
            return {"users": list(self.usergroups[group])}

    @slack_method("chat.postMessage", scope="chat:write")
    def chat_post_message(self, call: SlackCall) -> dict[str, Any]:
        channel = self._channel(call.args.get("channel"))
        if not channel.bot_is_member:
            raise SlackError("not_in_channel")
        text = call.args.get("text")
        blocks = call.args.get("blocks")
        if isinstance(blocks, str):  # form-encoded bodies carry blocks as a JSON string
            try:
                blocks = json.loads(blocks)
            except ValueError:
                raise SlackError("invalid_blocks") from None
        if blocks is not None and not isinstance(blocks, list):
            raise SlackError("invalid_blocks")
        if not text and not blocks:
            raise SlackError("no_text")
        thread_ts = call.args.get("thread_ts") or None
        posted = PostedSlackMessage(
            channel=channel.id,
            ts=self._new_ts(),
            text=None if text is None else str(text),
            blocks=copy.deepcopy(blocks),
            thread_ts=None if thread_ts is None else str(thread_ts),
        )
        with self.lock:
            self._messages.append(posted)
        message: dict[str, Any] = {
            "type": "message",
            "text": posted.text or "",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "team": TEAM_ID,
            "ts": posted.ts,
        }
        if posted.blocks is not None:
            message["blocks"] = posted.blocks
        if posted.thread_ts is not None:
            message["thread_ts"] = posted.thread_ts
        return {"channel": channel.id, "ts": posted.ts, "message": message}


def _arguments(request: ReceivedRequest) -> dict[str, Any]:
    """Query string, then the form or JSON body, merged as Slack does."""
    args: dict[str, Any] = {name: values[-1] for name, values in request.query.items()}
    content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
    if not request.body:
        return args
    if content_type == "application/json":
        try:
            body = request.json()
        except ValueError:
            raise SlackError("invalid_json") from None
        if not isinstance(body, dict):
            raise SlackError("invalid_json")
        args.update(body)
    elif content_type == "application/x-www-form-urlencoded":
        args.update(parse_qsl(request.body.decode("utf-8"), keep_blank_values=True))
    else:
        raise SlackError("invalid_form_data")
    return args


def _error(code: str, **fields: Any) -> Reply:
    return Reply(200, {"ok": False, "error": code, **fields})
