"""Who is in a Slack user group and who a Slack user is: what approvers are checked against.

``SlackDirectory`` is the Slack ``ApproverDirectory`` (``tocsin.integration``): the flow
asks it who is in a gate's user group when the gate opens. The gateway keeps the answers
for a short while (``UsergroupMembers``) and names deciders as Slack knows them
(``UserDirectory``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from tocsin.errors import TocsinError
from tocsin.integrations.slack.client import SlackCredentials, usergroup_members
from tocsin.settings import SecretStore, Settings

_log = logging.getLogger("tocsin.gateway")

MIN_REFRESH_SECONDS = 2.0
"""A user group is not looked up again sooner than this, whoever clicks."""


class SlackDirectory:
    """User groups as ``usergroups.users.list`` answers now (no cache)."""

    def __init__(self, settings: Settings, secrets: SecretStore) -> None:
        self.settings = settings
        self.secrets = secrets

    def members_of(self, usergroup: str) -> list[str]:
        credentials = SlackCredentials.from_secrets(self.settings, self.secrets)
        return usergroup_members(credentials, usergroup)


class UsergroupMembers:
    """Members of Slack user groups (``usergroups.users.list``), cached for a short while."""

    def __init__(
        self,
        lookup: Callable[[str], list[str]],
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lookup = lookup
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()

    def members(self, usergroup: str) -> frozenset[str] | None:
        """The group's members; None when Slack cannot say (the caller falls back to the list
        taken when the gate opened)."""
        return self._members(usergroup, refresh=False)

    def is_member(self, user: str, usergroup: str) -> bool:
        """Whether ``user`` is in the group. A member found in the cache is trusted for
        ``ttl_seconds``; someone not found is looked up again (at most every few seconds),
        so a person added to the group a moment ago can decide at once."""
        members = self._members(usergroup, refresh=False)
        if members is not None and user in members:
            return True
        refreshed = self._members(usergroup, refresh=True)
        return refreshed is not None and user in refreshed

    def _members(self, usergroup: str, *, refresh: bool) -> frozenset[str] | None:
        with self._lock:
            cached = self._cache.get(usergroup)
        if cached is not None:
            age = self.clock() - cached[0]
            fresh_enough = age < (
                min(self.ttl_seconds, MIN_REFRESH_SECONDS) if refresh else self.ttl_seconds
            )
            if fresh_enough:
                return cached[1]
        try:
            members = frozenset(self.lookup(usergroup))
        except TocsinError as exc:
            _log.warning("cannot list Slack user group %s: %s", usergroup, exc.message)
            return cached[1] if cached is not None else None
        with self._lock:
            self._cache[usergroup] = (self.clock(), members)
        return members


class UserDirectory:
    """Who a Slack user id is (``users.info``: name, real name, e-mail when the token may read
    it), cached for an hour, so the audit trail names approvers as Slack knew them."""

    def __init__(
        self,
        lookup: Callable[[str], dict[str, str]],
        ttl_seconds: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lookup = lookup
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self._cache: dict[str, tuple[float, dict[str, str]]] = {}
        self._lock = threading.Lock()

    def details(self, user: str) -> dict[str, str]:
        """What Slack says of ``user``; empty when it cannot say (never blocks a decision)."""
        with self._lock:
            cached = self._cache.get(user)
        if cached is not None and self.clock() - cached[0] < self.ttl_seconds:
            return cached[1]
        try:
            found = self.lookup(user)
        except Exception as exc:  # Slack down or the user unknown: the id is what counts
            _log.warning("cannot look up Slack user %s: %s", user, exc)
            return cached[1] if cached is not None else {}
        with self._lock:
            self._cache[user] = (self.clock(), found)
        return found


def slack_user_details(credentials: Any, user: str) -> dict[str, str]:
    """``users.info`` reduced to what identifies a person in an audit trail."""
    response = credentials.get_client().users_info(user=user)
    info = response.get("user") or {}
    profile = info.get("profile") or {}
    details = {
        "name": str(info.get("name") or ""),
        "real_name": str(info.get("real_name") or profile.get("real_name") or ""),
        "email": str(profile.get("email") or ""),
    }
    if info.get("deleted"):
        details["deleted"] = "true"
    if info.get("is_bot"):
        details["is_bot"] = "true"
    return {key: value for key, value in details.items() if value}
