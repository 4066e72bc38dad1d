"""A fake of the Slack Web API (``https://slack.com/api/<method>``), close enough for slack_sdk.

What it does like Slack:

- every method is ``POST /api/<method>`` (GET with a query string works too); arguments
  come form-encoded, as JSON (``Content-Type: application/json``) or in the query;
- auth by ``Authorization: Bearer xoxb-...`` (or a ``token`` form field); no token answers
  ``not_authed``, an unknown one ``invalid_auth``, both with HTTP 200 as Slack does;
- each token has scopes; a method needing another one answers ``missing_scope`` with
  ``needed`` and ``provided``; every answer to a known token carries its scopes in the
  ``x-oauth-scopes`` header, and the method's own in ``x-accepted-oauth-scopes``, as Slack's
  do; ``auth.test`` needs no scope;
- rate limits per method: more than ``rate_limit`` calls within ``rate_window_seconds``
  answers HTTP 429 with ``Retry-After`` and ``{"ok": false, "error": "ratelimited"}``;
  ``rate_limit_next(k)`` forces that answer for the next k calls;
- a channel may list its members (``SlackChannel.members``; None means everyone is in it),
  and the workspace may have a user directory (``users=``); without one, any id shaped like
  a Slack user id (``U0ONCALL1``) is a made-up user, so the sandbox needs no directory;
- an interaction's ``response_url`` may point at ``<url>/actions/...`` or
  ``<url>/commands/...``: what is POSTed there is kept in ``responses``.

Methods: ``chat.postMessage``, ``chat.update``, ``chat.postEphemeral``,
``conversations.create``, ``conversations.invite``, ``conversations.open`` (a direct
message with one person), ``conversations.history``,
``conversations.replies``, ``auth.test``, ``users.info``, ``users.lookupByEmail``,
``usergroups.users.list``.

Adding a method is one function on ``SlackWebApiMethods`` (``fake_web_api``, which
``FakeSlack`` inherits) decorated with ``@slack_method(name, scope=...)``: it receives a
``SlackCall`` and returns the fields of the ``ok`` answer, or raises ``SlackError("code")``.
What the workspace holds (``SlackChannel``, ``SlackUser``, ``PostedSlackMessage``...) is in
``fake_workspace``; this module is the server: tokens, scopes, rate limits, what tests
inspect. Every name imported from here before still is.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from tocsin.integrations.slack.fake_web_api import SlackWebApiMethods
from tocsin.integrations.slack.fake_workspace import (
    _SPEC_ATTRIBUTE,
    BOT_ID,
    BOT_USER_ID,
    DEFAULT_SCOPES,
    SANDBOX_BOT_TOKEN,
    TEAM_ID,
    PostedEphemeral,
    PostedSlackMessage,
    ResponseUrlPost,
    SlackCall,
    SlackChannel,
    SlackError,
    SlackMethod,
    SlackUser,
    _MethodSpec,
    slack_method,
)
from tocsin.sandbox.fake_service import FakeService, ReceivedRequest, Reply

__all__ = [
    "BOT_ID",
    "BOT_USER_ID",
    "DEFAULT_SCOPES",
    "SANDBOX_BOT_TOKEN",
    "TEAM_ID",
    "FakeSlack",
    "PostedEphemeral",
    "PostedSlackMessage",
    "ResponseUrlPost",
    "SlackCall",
    "SlackChannel",
    "SlackError",
    "SlackMethod",
    "SlackUser",
    "slack_method",
]


class FakeSlack(SlackWebApiMethods, FakeService):
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
        users: Mapping[str, SlackUser] | None = None,
    ) -> None:
        """``tokens`` maps each accepted token to its scopes (default: the sandbox token, DEFAULT_SCOPES).

        ``users`` is the user directory keyed by id; without one, any id shaped like a Slack
        user id is answered with a made-up user.
        """
        super().__init__()
        self._initial_tokens = {
            token: frozenset(scopes)
            for token, scopes in (tokens or {SANDBOX_BOT_TOKEN: DEFAULT_SCOPES}).items()
        }
        self._initial_channels = {channel.id: channel for channel in channels}
        self._initial_limits = (rate_limit, rate_window_seconds, retry_after_seconds)
        self._initial_usergroups = {gid: list(users) for gid, users in (usergroups or {}).items()}
        self._initial_users = None if users is None else dict(users)
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
            self.users: dict[str, SlackUser] | None = (
                None if self._initial_users is None else dict(self._initial_users)
            )
            self._messages: list[PostedSlackMessage] = []
            self._ephemerals: list[PostedEphemeral] = []
            self._responses: list[ResponseUrlPost] = []
            self._created_channels = 0
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

    @property
    def ephemerals(self) -> list[PostedEphemeral]:
        """Ephemeral messages posted so far, oldest first."""
        with self.lock:
            return list(self._ephemerals)

    @property
    def responses(self) -> list[ResponseUrlPost]:
        """What was POSTed to response URLs on this fake, oldest first."""
        with self.lock:
            return list(self._responses)

    def message(self, channel: str, ts: str) -> PostedSlackMessage:
        """The message as it stands now, by channel id and ts; ``KeyError`` when there is none."""
        with self.lock:
            for posted in self._messages:
                if posted.channel == channel and posted.ts == ts:
                    return posted
        raise KeyError(f"no message {ts} in channel {channel}")

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
        granted: dict[str, str] = {}
        if request.method == "POST" and request.path.startswith(("/actions/", "/commands/")):
            return self._receive_response_url_post(request)
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
            granted = {
                "x-oauth-scopes": ",".join(sorted(scopes)),
                "x-accepted-oauth-scopes": spec.scope,
            }
            retry_after = self._count_call(method)
            if retry_after is not None:
                return Reply(
                    429,
                    {"ok": False, "error": "ratelimited"},
                    {"Retry-After": str(retry_after), **granted},
                )
            if spec.scope and spec.scope not in scopes:
                raise SlackError(
                    "missing_scope", needed=spec.scope, provided=",".join(sorted(scopes))
                )
            result = function(self, SlackCall(method, str(token), args))
        except SlackError as error:
            return _error(error.code, headers=granted, **error.fields)
        return Reply(200, {"ok": True, **result}, granted)

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

    def _receive_response_url_post(self, request: ReceivedRequest) -> Reply:
        try:
            payload = request.json()
        except ValueError:
            return Reply(400, b"invalid_payload", {"Content-Type": "text/plain"})
        with self.lock:
            self._responses.append(ResponseUrlPost(request.path, payload))
        return Reply(200, b"ok", {"Content-Type": "text/plain"})


def _method_table(cls: type[FakeSlack]) -> dict[str, tuple[_MethodSpec, SlackMethod]]:
    table: dict[str, tuple[_MethodSpec, SlackMethod]] = {}
    for klass in reversed(cls.__mro__):
        for value in vars(klass).values():
            spec = getattr(value, _SPEC_ATTRIBUTE, None)
            if isinstance(spec, _MethodSpec):
                table[spec.name] = (spec, value)
    return table


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


def _error(code: str, headers: Mapping[str, str] | None = None, **fields: Any) -> Reply:
    return Reply(200, {"ok": False, "error": code, **fields}, dict(headers or {}))
