"""A secret (a temporary password) sent as a direct message from Tocsin's bot to one named
person (``slack-dm:U0123ABCD``), who hands it over by phone or in person.

``stage`` opens the conversation (``conversations.open``, scope ``im:write``) before the
secret is used: a person who does not exist, or a bot without the scope, fails the step
before the password changes. ``commit`` posts the note (``chat.postMessage``). The client
here logs nothing: slack_sdk's debug log would print the message body, secret included.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from tocsin.errors import ConfigurationError, IntegrationError
from tocsin.integrations.slack.client import SERVICE, TOKEN_SECRET, SlackCredentials, api_error
from tocsin.secret_delivery import SecretNote
from tocsin.settings import SecretStore, Settings

SCHEME = "slack-dm"
_PERSON = re.compile(r"^[UW][A-Z0-9]{2,}$")

_SILENT = logging.getLogger("tocsin.slack.secret_dm")
_SILENT.addHandler(logging.NullHandler())
_SILENT.propagate = False
_SILENT.setLevel(logging.CRITICAL + 1)


class SlackDirectMessage:
    """Direct messages from the bot to ``person`` (a Slack user id)."""

    def __init__(self, settings: Settings, secrets: SecretStore, person: str) -> None:
        if not _PERSON.match(person):
            raise ConfigurationError(
                f"{SCHEME}:{person} does not name a Slack user: give their user id",
                "in Slack, open the person's profile → ⋮ → Copy member ID (U0123ABCD)",
            )
        token = secrets.get(TOKEN_SECRET)
        if not token:
            raise ConfigurationError(
                f"secrets go to Slack ({SCHEME}:{person}) but secret {TOKEN_SECRET!r} is not set",
                f"set TOCSIN_SECRET_{TOKEN_SECRET.upper()} to the bot token (xoxb-...)",
            )
        self.person = person
        self.credentials = SlackCredentials.from_settings(settings, token)

    def _client(self) -> WebClient:
        return self.credentials.get_client(logger=_SILENT)

    def stage(self, note: SecretNote) -> StagedMessage:
        client = self._client()
        try:
            opened = client.conversations_open(users=self.person)
        except SlackApiError as exc:
            error = api_error("secret delivery", "conversations.open", self.person, exc)
            raise ConfigurationError(
                f"cannot send secrets to {self.person} on Slack: {error.message}",
                "check the person's member id and that the bot has the im:write scope; "
                f"{error.hint}; nothing was changed",
            ) from None
        except OSError as exc:
            raise IntegrationError(
                "secret delivery",
                SERVICE,
                f"cannot be reached at {client.base_url} to send a secret: {exc}",
                "nothing was changed; run the step again when Slack answers",
                retryable=True,
            ) from None
        channel = opened.get("channel") or {}
        return StagedMessage(client, str(channel.get("id", "")), self.person, note)


@dataclass
class StagedMessage:
    client: WebClient = field(repr=False)
    channel: str
    person: str
    note: SecretNote

    def commit(self) -> str:
        try:
            self.client.chat_postMessage(channel=self.channel, text=self.note.text())
        except (SlackApiError, OSError) as exc:
            said = exc.response.get("error") if isinstance(exc, SlackApiError) else str(exc)
            raise IntegrationError(
                "secret delivery",
                SERVICE,
                f"could not send the {self.note.what.lower()} to {self.person}: {said}",
                "it is set but nobody knows it; run the step again to set a new one once "
                "Slack answers",
            ) from None
        return f"Slack direct message to {self.person}"

    def discard(self) -> None:
        """Nothing was posted: the conversation stays as it was."""


def slack_dm(settings: Settings, secrets: SecretStore, person: str) -> SlackDirectMessage:
    """The ``slack-dm:`` channel for ``tocsin.secret_delivery``."""
    return SlackDirectMessage(settings, secrets, person)
