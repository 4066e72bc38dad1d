"""What the gateway needs from Slack for the requests Slack sends it.

The gateway's Slack routes verify each request with ``check`` (``SlackRequestCheck``),
ask ``members`` whether the clicker is in the gate's user group (cached briefly), name
the decider as Slack knows them (``people``), find the author of a ticket in Slack by
e-mail, and tell a clicker privately why a click did not count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from tocsin.errors import ConfigurationError
from tocsin.integrations.slack import integration
from tocsin.integrations.slack.client import TOKEN_SECRET, SlackCredentials, usergroup_members
from tocsin.integrations.slack.directory import (
    UserDirectory,
    UsergroupMembers,
    slack_user_details,
)
from tocsin.integrations.slack.signature import SIGNING_SECRET, SlackRequestCheck
from tocsin.model import is_slack_user_id
from tocsin.settings import SecretStore, Settings

if TYPE_CHECKING:
    from slack_sdk import WebClient

_log = logging.getLogger("tocsin.gateway")

ANSWER_TIMEOUT_SECONDS = 5
"""Private replies and e-mail look-ups: within Slack's 3 seconds is not needed, but soon."""
LOOKUP_TIMEOUT_SECONDS = 2
"""User-group and user look-ups, made while a click waits for its answer."""


class SlackInbound:
    """The gateway's side of Slack; see the module docstring."""

    def __init__(
        self, settings: Settings, secrets: SecretStore, clock: Callable[[], float] = time.time
    ) -> None:
        signing_secret = secrets.get(SIGNING_SECRET)
        if not signing_secret:
            raise ConfigurationError(
                "the gateway needs the Slack app's signing secret to check Slack's requests",
                f"set TOCSIN_SECRET_{SIGNING_SECRET.upper()} (Slack app settings, Basic "
                "Information, App Credentials, Signing Secret)",
            )
        self.check = SlackRequestCheck(signing_secret, clock)
        token = secrets.get(TOKEN_SECRET)
        self.credentials: SlackCredentials | None = (
            SlackCredentials.from_settings(settings, token, timeout_seconds=ANSWER_TIMEOUT_SECONDS)
            if token
            else None
        )
        self._telling: WebClient | None = None  # made at the first notice, then kept
        lookup_credentials = (
            SlackCredentials.from_settings(settings, token, timeout_seconds=LOOKUP_TIMEOUT_SECONDS)
            if token
            else None
        )

        def lookup(usergroup: str) -> list[str]:
            if lookup_credentials is None:
                raise ConfigurationError("no Slack bot token to list user groups")
            return usergroup_members(lookup_credentials, usergroup)

        def describe(user: str) -> dict[str, str]:
            if lookup_credentials is None:
                return {}
            return slack_user_details(lookup_credentials, user)

        self.members = UsergroupMembers(
            lookup, integration.settings_of(settings).usergroup_cache_seconds
        )
        self.people = UserDirectory(describe)

    # -- who people are (``tocsin.integration.GatewayPeople``) --

    def is_member(self, user: str, usergroup: str) -> bool:
        """Whether the user is in the user group (``usergroups.users.list``, cached briefly)."""
        return self.members.is_member(user, usergroup)

    def details(self, user: str) -> dict[str, str]:
        """The user's name and e-mail as Slack says (``users.info``, cached)."""
        return self.people.details(user)

    def tell(self, channel: str, user: str, text: str) -> None:
        """Say ``text`` to ``user`` alone, in ``channel`` (``chat.postEphemeral``); best effort."""
        if self.credentials is None:
            return
        from slack_sdk.errors import SlackApiError

        if self._telling is None:
            # A notice is not worth waiting out a rate limit (``refusal_notices``).
            self._telling = self.credentials.get_client(wait_out_rate_limits=False)
        try:
            self._telling.chat_postEphemeral(channel=channel, user=user, text=text)
        except (SlackApiError, OSError) as exc:
            _log.warning("cannot tell %s why the click was refused: %s", user, exc)

    def user_with_email(self, email: str) -> str | None:
        """The Slack user id of the person with this e-mail (``users.lookupByEmail``), if found."""
        if self.credentials is None:
            return None
        from slack_sdk.errors import SlackApiError

        try:
            found = self.credentials.get_client().users_lookupByEmail(email=email)
        except (SlackApiError, OSError) as exc:
            _log.warning("cannot find %s in Slack: %s", email, exc)
            return None
        user_id = (found.get("user") or {}).get("id")
        return user_id if isinstance(user_id, str) and is_slack_user_id(user_id) else None
