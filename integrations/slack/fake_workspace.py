"""What the fake Slack workspace holds (channels, users, the messages posted) and how one of
its Web API methods is declared (``slack_method``), for ``fake`` and ``fake_web_api``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from tocsin.integrations.slack.fake import FakeSlack


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
