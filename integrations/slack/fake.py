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

Adding a method is one function on ``FakeSlack`` decorated with ``@slack_method(name,
scope=...)``: it receives a ``SlackCall`` and returns the fields of the ``ok`` answer, or
raises ``SlackError("code")``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
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
DEFAULT_SCOPES = frozenset(
    {
        "chat:write",
        "usergroups:read",
        "users:read",
        "channels:manage",
        "channels:history",
        "im:write",
    }
)

_WORKSPACE_CREATED = 1_700_000_000
"""When the fake workspace's channels were created (epoch seconds); ts values count from here."""
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_CHANNEL_NAME = re.compile(r"^[a-z0-9_-]+$")
_CHANNEL_NAME_MAX_LENGTH = 80


@dataclass(frozen=True)
class SlackChannel:
    """A channel of the fake workspace."""

    id: str
    name: str
    bot_is_member: bool = True
    members: frozenset[str] | None = None
    """User ids in the channel; None means everyone is a member."""
    is_private: bool = False
    created: int = _WORKSPACE_CREATED
    creator: str = ""


@dataclass(frozen=True)
class SlackUser:
    """A person of the fake workspace's user directory."""

    id: str
    name: str
    real_name: str
    email: str = ""
    tz: str = "UTC"


_BOT_USER = SlackUser(BOT_USER_ID, "tocsin", "Tocsin")


@dataclass(frozen=True)
class PostedSlackMessage:
    """A message the fake accepted, as Slack stores it; ``edits`` counts its chat.update calls."""

    channel: str
    ts: str
    text: str | None
    blocks: list[Any] | None
    thread_ts: str | None
    edits: int = 0


@dataclass(frozen=True)
class PostedEphemeral:
    """An ephemeral message the fake accepted: only ``user`` sees it, Slack does not keep it."""

    channel: str
    user: str
    text: str | None
    blocks: list[Any] | None
    message_ts: str
    thread_ts: str | None


@dataclass(frozen=True)
class ResponseUrlPost:
    """What an app POSTed to an interaction's ``response_url`` (path, and the JSON body)."""

    path: str
    payload: Any


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
    """Make a ``FakeSlack`` function answer the Web API method ``name``, for tokens with
    ``scope`` ("": any token)."""

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

    def user(self, user_id: str) -> SlackUser:
        """The user with that id (made up when there is no directory); ``KeyError`` when unknown."""
        if user_id == BOT_USER_ID:
            return _BOT_USER
        with self.lock:
            if self.users is not None:
                return self.users[user_id]
        if not _USER_ID.match(user_id):
            raise KeyError(f"no user {user_id}")
        name = user_id.lower()
        return SlackUser(user_id, name, f"Sandbox user {user_id}", f"{name}@sandbox.example.com")

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
        text, blocks = _message_content(call.args)
        thread_ts = call.args.get("thread_ts") or None
        posted = PostedSlackMessage(
            channel=channel.id,
            ts=self._new_ts(),
            text=text,
            blocks=blocks,
            thread_ts=None if thread_ts is None else str(thread_ts),
        )
        with self.lock:
            self._messages.append(posted)
        return {"channel": channel.id, "ts": posted.ts, "message": _message_object(posted)}

    @slack_method("chat.update", scope="chat:write")
    def chat_update(self, call: SlackCall) -> dict[str, Any]:
        channel = self._channel(call.args.get("channel"))
        ts = str(call.args.get("ts") or "")
        with self.lock:
            index = next(
                (
                    i
                    for i, posted in enumerate(self._messages)
                    if posted.channel == channel.id and posted.ts == ts
                ),
                None,
            )
            if index is None:
                raise SlackError("message_not_found")
            text, blocks = _message_content(call.args)
            updated = dataclasses.replace(
                self._messages[index],
                text=text,
                blocks=blocks,
                edits=self._messages[index].edits + 1,
            )
            self._messages[index] = updated
        return {
            "channel": channel.id,
            "ts": updated.ts,
            "text": updated.text or "",
            "message": _message_object(updated),
        }

    @slack_method("chat.postEphemeral", scope="chat:write")
    def chat_post_ephemeral(self, call: SlackCall) -> dict[str, Any]:
        channel = self._channel(call.args.get("channel"))
        user = str(call.args.get("user") or "")
        if not self._is_member(channel, user):
            raise SlackError("user_not_in_channel")
        text, blocks = _message_content(call.args)
        thread_ts = call.args.get("thread_ts") or None
        posted = PostedEphemeral(
            channel=channel.id,
            user=user,
            text=text,
            blocks=blocks,
            message_ts=self._new_ts(),
            thread_ts=None if thread_ts is None else str(thread_ts),
        )
        with self.lock:
            self._ephemerals.append(posted)
        return {"message_ts": posted.message_ts}

    def _is_member(self, channel: SlackChannel, user_id: str) -> bool:
        try:
            self.user(user_id)
        except KeyError:
            return False
        return channel.members is None or user_id in channel.members

    @slack_method("conversations.create", scope="channels:manage")
    def conversations_create(self, call: SlackCall) -> dict[str, Any]:
        name = str(call.args.get("name") or "")
        if not name:
            raise SlackError("invalid_name_required")
        if len(name) > _CHANNEL_NAME_MAX_LENGTH:
            raise SlackError("invalid_name_maxlength")
        if not _CHANNEL_NAME.match(name):
            raise SlackError("invalid_name_specials")
        if not name.strip("-_"):
            raise SlackError("invalid_name_punctuation")
        with self.lock:
            if any(channel.name == name for channel in self.channels.values()):
                raise SlackError("name_taken")
            channel_id = self._new_channel_id()
            channel = SlackChannel(
                id=channel_id,
                name=name,
                bot_is_member=True,
                members=frozenset({BOT_USER_ID}),
                is_private=_flag(call.args.get("is_private")),
                created=int(time.time()),
                creator=BOT_USER_ID,
            )
            self.channels[channel_id] = channel
        return {"channel": _conversation_object(channel)}

    def _new_channel_id(self) -> str:
        with self.lock:
            while True:
                self._created_channels += 1
                channel_id = f"C1{self._created_channels:09d}"
                if channel_id not in self.channels:
                    return channel_id

    @slack_method("conversations.invite", scope="channels:manage")
    def conversations_invite(self, call: SlackCall) -> dict[str, Any]:
        with self.lock:  # read, check and replace the channel as one step
            channel = self._channel(call.args.get("channel"))
            user_ids = _id_list(call.args.get("users"))
            if not user_ids:
                raise SlackError("no_user")
            if not channel.bot_is_member:
                raise SlackError("not_in_channel")
            if BOT_USER_ID in user_ids:
                raise SlackError("cant_invite_self")
            for user_id in user_ids:
                try:
                    self.user(user_id)
                except KeyError:
                    raise SlackError("user_not_found") from None
            if channel.members is None or set(user_ids) <= channel.members:
                raise SlackError("already_in_channel")
            channel = dataclasses.replace(channel, members=channel.members | set(user_ids))
            self.channels[channel.id] = channel
        return {"channel": _conversation_object(channel)}

    @slack_method("conversations.open", scope="im:write")
    def conversations_open(self, call: SlackCall) -> dict[str, Any]:
        """A direct message with one person (group DMs are not faked): Slack answers the same
        ``D`` channel each time, with ``already_open`` once it exists."""
        users = [u.strip() for u in str(call.args.get("users") or "").split(",") if u.strip()]
        if call.args.get("channel"):
            return {"channel": {"id": self._channel(call.args["channel"]).id}}
        if len(users) != 1:
            raise SlackError("users_list_not_supplied" if not users else "not_supported")
        try:
            person = self.user(users[0])
        except KeyError:
            raise SlackError("user_not_found") from None
        if person.id == BOT_USER_ID:
            raise SlackError("cannot_dm_bot")
        channel_id = "D" + person.id[1:]
        with self.lock:
            already = channel_id in self.channels
            if not already:
                self.channels[channel_id] = SlackChannel(
                    id=channel_id,
                    name=channel_id,
                    members=frozenset({person.id, BOT_USER_ID}),
                    is_private=True,
                )
        answer: dict[str, Any] = {"channel": {"id": channel_id}}
        if already:
            answer.update(no_op=True, already_open=True)
        return answer

    @slack_method("auth.test", scope="")  # Slack asks no scope of auth.test
    def auth_test(self, call: SlackCall) -> dict[str, Any]:
        return {
            "url": "https://sandbox.slack.example/",
            "team": "Sandbox",
            "user": _BOT_USER.name,
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
        }

    @slack_method("conversations.history", scope="channels:history")
    def conversations_history(self, call: SlackCall) -> dict[str, Any]:
        """A channel's messages, newest first, without thread replies; paged by ``cursor``."""
        channel = self._channel(call.args.get("channel"))
        with self.lock:
            found = [
                m for m in self._messages if m.channel == channel.id and m.thread_ts in (None, m.ts)
            ]
        return _page(list(reversed(found)), call.args)

    @slack_method("conversations.replies", scope="channels:history")
    def conversations_replies(self, call: SlackCall) -> dict[str, Any]:
        """A thread: its parent message, then the replies, oldest first; paged by ``cursor``."""
        channel = self._channel(call.args.get("channel"))
        ts = str(call.args.get("ts") or "")
        with self.lock:
            found = [
                m
                for m in self._messages
                if m.channel == channel.id and (m.ts == ts or m.thread_ts == ts)
            ]
        if not any(m.ts == ts for m in found):
            raise SlackError("thread_not_found")
        return _page(found, call.args)

    @slack_method("users.info", scope="users:read")
    def users_info(self, call: SlackCall) -> dict[str, Any]:
        try:
            user = self.user(str(call.args.get("user") or ""))
        except KeyError:
            raise SlackError("user_not_found") from None
        profile: dict[str, Any] = {
            "real_name": user.real_name,
            "real_name_normalized": user.real_name,
            "display_name": user.name,
            "display_name_normalized": user.name,
        }
        with self.lock:
            may_read_email = "users:read.email" in self.tokens.get(call.token, frozenset())
        if may_read_email and user.email:
            profile["email"] = user.email
        is_bot = user.id == BOT_USER_ID
        if is_bot:
            profile["bot_id"] = BOT_ID
        return {
            "user": {
                "id": user.id,
                "team_id": TEAM_ID,
                "name": user.name,
                "deleted": False,
                "real_name": user.real_name,
                "tz": user.tz,
                "is_admin": False,
                "is_owner": False,
                "is_bot": is_bot,
                "is_app_user": False,
                "profile": profile,
            }
        }

    @slack_method("users.lookupByEmail", scope="users:read.email")
    def users_lookup_by_email(self, call: SlackCall) -> dict[str, Any]:
        email = str(call.args.get("email") or "").strip().lower()
        with self.lock:
            directory = None if self.users is None else list(self.users.values())
        if directory is not None:
            found = next((u for u in directory if u.email.lower() == email), None)
        else:  # made-up users: u0abc@sandbox.example.com is U0ABC
            local, _, domain = email.partition("@")
            found = (
                self.user(local.upper())
                if domain == "sandbox.example.com" and _USER_ID.match(local.upper())
                else None
            )
        if found is None or not email:
            raise SlackError("users_not_found")
        return {
            "user": {
                "id": found.id,
                "team_id": TEAM_ID,
                "name": found.name,
                "deleted": False,
                "real_name": found.real_name,
                "is_bot": False,
                "profile": {"real_name": found.real_name, "email": found.email},
            }
        }


def _page(messages: list[PostedSlackMessage], args: Mapping[str, Any]) -> dict[str, Any]:
    """One page of ``messages`` as conversations.* answer it (cursor: where the next starts)."""
    try:
        start = int(str(args.get("cursor") or "0").removeprefix("next:"))
        limit = max(1, min(1000, int(args.get("limit") or 100)))
    except ValueError:
        raise SlackError("invalid_cursor") from None
    page = messages[start : start + limit]
    more = start + limit < len(messages)
    return {
        "messages": [_message_object(m) for m in page],
        "has_more": more,
        "response_metadata": {"next_cursor": f"next:{start + limit}" if more else ""},
    }


def _message_content(args: Mapping[str, Any]) -> tuple[str | None, list[Any] | None]:
    """The text and blocks of a chat.* call; ``invalid_blocks`` or ``no_text`` when unusable."""
    text = args.get("text")
    blocks = args.get("blocks")
    if isinstance(blocks, str):  # form-encoded bodies carry blocks as a JSON string
        try:
            blocks = json.loads(blocks)
        except ValueError:
            raise SlackError("invalid_blocks") from None
    if blocks is not None and not isinstance(blocks, list):
        raise SlackError("invalid_blocks")
    if not text and not blocks:
        raise SlackError("no_text")
    return (None if text is None else str(text)), copy.deepcopy(blocks)


def _message_object(posted: PostedSlackMessage) -> dict[str, Any]:
    """The message as Slack describes it in chat.* answers and interaction payloads."""
    message: dict[str, Any] = {
        "type": "message",
        "text": posted.text or "",
        "user": BOT_USER_ID,
        "bot_id": BOT_ID,
        "team": TEAM_ID,
        "ts": posted.ts,
    }
    if posted.blocks is not None:
        message["blocks"] = copy.deepcopy(posted.blocks)
    if posted.thread_ts is not None:
        message["thread_ts"] = posted.thread_ts
    return message


def _conversation_object(channel: SlackChannel) -> dict[str, Any]:
    """A channel as the conversations.* methods describe it."""
    conversation: dict[str, Any] = {
        "id": channel.id,
        "name": channel.name,
        "is_channel": True,
        "is_group": False,
        "is_im": False,
        "is_mpim": False,
        "is_private": channel.is_private,
        "created": channel.created,
        "creator": channel.creator,
        "is_archived": False,
        "is_general": channel.name == "general",
        "unlinked": 0,
        "name_normalized": channel.name,
        "is_shared": False,
        "is_ext_shared": False,
        "is_org_shared": False,
        "pending_shared": [],
        "is_pending_ext_shared": False,
        "is_member": channel.bot_is_member,
        "topic": {"value": "", "creator": "", "last_set": 0},
        "purpose": {"value": "", "creator": "", "last_set": 0},
        "previous_names": [],
    }
    if channel.members is not None:
        conversation["num_members"] = len(channel.members)
    return conversation


def _flag(value: Any) -> bool:
    """A boolean argument: JSON true, or "true"/"1" in a form or query."""
    if isinstance(value, bool):
        return value
    return str(value or "").strip().lower() in {"true", "1"}


def _id_list(value: Any) -> list[str]:
    """A list of ids given comma-separated (form) or as a JSON array."""
    items = value if isinstance(value, list) else str(value or "").split(",")
    return [str(item).strip() for item in items if str(item).strip()]


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
