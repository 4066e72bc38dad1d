"""Posting a staff briefing to a Slack channel (``tocsin.channel_posts``: ``notify.staff``).

The text is the rendered message of a template: it is shown as text, so nothing in it
becomes a mention (``<!channel>``), a link or formatting.
"""

from __future__ import annotations

from slack_sdk.errors import SlackApiError

from tocsin.errors import ConfigurationError
from tocsin.integrations.slack.client import (
    SlackCredentials,
    api_error,
    slack_text,
    slack_value,
)
from tocsin.settings import SecretStore, Settings

CHANNEL_PATTERN = r"^(#[a-z0-9][a-z0-9._-]{0,79}|[CG][A-Z0-9]{2,})$"


class SlackChannelPoster:
    """The ``slack`` channel poster: chat.postMessage with the bot token."""

    name = "slack"

    def __init__(self, credentials: SlackCredentials) -> None:
        self._client = credentials.get_client()

    @classmethod
    def from_settings(cls, settings: Settings, secrets: SecretStore) -> SlackChannelPoster:
        return cls(SlackCredentials.from_secrets(settings, secrets))

    def post(self, channel: str, text: str) -> str:
        return self._post(channel, slack_value(text))

    def post_with_command(self, channel: str, text: str, command: str) -> str:
        """``text`` as ``post`` shows it, then ``command`` in a code span, exactly as written
        (someone copies it), still unable to mention, link or leave the span."""
        return self._post(channel, f"{slack_value(text)}\n`{slack_text(command)}`")

    def _post(self, channel: str, mrkdwn: str) -> str:
        import re

        if not re.match(CHANNEL_PATTERN, channel):
            raise ConfigurationError(
                f"{channel!r} is not a Slack channel",
                "name a channel as #name or by its id (C0123ABCD)",
            )
        try:
            response = self._client.chat_postMessage(
                channel=channel, text=mrkdwn, unfurl_links=False, unfurl_media=False
            )
        except SlackApiError as exc:
            raise api_error("notify.staff", "chat.postMessage", channel, exc) from None
        return f"slack:{response.get('channel') or channel}:{response.get('ts')}"


def channel_poster(settings: Settings, secrets: SecretStore) -> SlackChannelPoster:
    return SlackChannelPoster.from_settings(settings, secrets)
