"""Audit heads in Slack: publishing each run's final head in ``slack.anchor_channel``, and
reading the published heads back (that channel, the incident thread) for ``tocsin audit
verify``. Only the bot's own messages count: anyone in a channel could post a look-alike.
"""

from __future__ import annotations

from typing import Any

from slack_sdk.errors import SlackApiError

from tocsin.audit import AnchorPlace, PublishedHead, heads_in_text
from tocsin.errors import IntegrationError, message_of
from tocsin.integration import HeadsQuery
from tocsin.integrations.slack import integration
from tocsin.integrations.slack.client import TOKEN_SECRET, SlackCredentials, api_error
from tocsin.integrations.slack.incident_thread import THREAD
from tocsin.integrations.slack.posts import SlackPosts
from tocsin.settings import SecretStore, Settings

READ_TIMEOUT_SECONDS = 10.0
"""A person waits for verify: a slow Slack becomes a note, not minutes of waiting."""


class AnchorChannel:
    """The channel (``slack.anchor_channel``) where each run's final audit head is posted."""

    def __init__(self, settings: Settings, secrets: SecretStore, channel: str) -> None:
        self.settings = settings
        self.secrets = secrets
        self.place = channel

    def publish(self, text: str) -> str:
        client = SlackCredentials.from_secrets(self.settings, self.secrets).get_client()
        response = client.chat_postMessage(channel=self.place, text=text)
        return f"slack:{response.get('channel', self.place)}:{response.get('ts', '')}"


def anchor_channel(settings: Settings, secrets: SecretStore) -> AnchorChannel | None:
    """The anchor channel, when one is configured."""
    channel = integration.settings_of(settings).anchor_channel
    return AnchorChannel(settings, secrets, channel) if channel else None


def published_heads(query: HeadsQuery) -> list[AnchorPlace]:
    """The heads published in the anchor channel and the incident thread, read back."""
    thread = SlackPosts(query.journal).post(query.ticket, THREAD)
    in_thread = thread.channel if thread else None
    # Real Slack reads a channel's history by id: when the setting is a #name, read the
    # channels the trail recorded posting heads to (the thread is read as a thread).
    recorded_ids = list(
        dict.fromkeys(
            where.split(":")[1]
            for where in query.recorded
            if where.startswith("slack:") and where.split(":")[1] != in_thread
        )
    )
    setting = integration.settings_of(query.settings).anchor_channel
    if setting and not setting.startswith("#"):
        channels = [(f"Slack channel {setting}", setting)]
    elif setting and recorded_ids:
        channels = [(f"Slack channel {setting} ({channel})", channel) for channel in recorded_ids]
    elif setting:
        channels = [(f"Slack channel {setting}", setting)]
    else:
        channels = [(f"Slack channel {channel}", channel) for channel in recorded_ids]
    wanted: list[tuple[str, str, str | None]] = [(p, c, None) for p, c in channels]
    if thread is not None:
        wanted.append(
            (f"the Slack incident thread ({thread.channel} {thread.ts})", thread.channel, thread.ts)
        )
    if not wanted:
        return []
    token = query.secrets.get(TOKEN_SECRET)
    if not token:
        return [
            AnchorPlace(
                place,
                reachable=False,
                error="no Slack bot token here (TOCSIN_SECRET_SLACK_BOT_TOKEN)",
            )
            for place, _, _ in wanted
        ]
    credentials = SlackCredentials.from_settings(
        query.settings,
        token,
        timeout_seconds=min(query.settings.http_timeout_seconds, READ_TIMEOUT_SECONDS),
    )
    places = []
    for place, channel, thread_ts in wanted:
        try:
            messages = bot_messages(credentials, channel, thread_ts=thread_ts)
        except Exception as exc:  # a place out of reach is a note, never a crash of verify
            error = message_of(exc)
            if channel.startswith("#"):
                error += " (Slack reads a channel's history by id: set slack.anchor_channel to it)"
            places.append(AnchorPlace(place, reachable=False, error=error))
            continue
        heads = [
            PublishedHead(head, seq, f"Slack {channel} message {ts}")
            for ts, text in messages
            for seq, head in heads_in_text(text, query.ticket)
        ]
        places.append(AnchorPlace(place, reachable=True, heads=heads))
    return places


def bot_messages(
    credentials: SlackCredentials,
    channel: str,
    *,
    thread_ts: str | None = None,
    max_messages: int = 10_000,
) -> list[tuple[str, str]]:
    """(ts, text) of the messages Tocsin's bot posted in ``channel`` (or in thread ``thread_ts``).

    ``tocsin audit verify`` reads the audit heads published there back with
    ``conversations.history`` / ``conversations.replies``; messages of other people
    are left out, since anyone in the channel could post a look-alike.
    """
    client = credentials.get_client()
    method = "conversations.replies" if thread_ts else "conversations.history"
    try:
        me = client.auth_test()
        bot_user, bot_id = me.get("user_id"), me.get("bot_id")
        found: list[tuple[str, str]] = []
        seen = 0
        cursor: str | None = None
        while seen < max_messages:
            arguments: dict[str, Any] = {"channel": channel, "limit": 200}
            if thread_ts:
                arguments["ts"] = thread_ts
            if cursor:
                arguments["cursor"] = cursor
            response = client.api_call(method, params=arguments)
            messages = response.get("messages") or []
            seen += len(messages)
            for message in messages:
                mine = (bot_id and message.get("bot_id") == bot_id) or (
                    bot_user and message.get("user") == bot_user
                )
                if mine:
                    found.append((str(message.get("ts") or ""), str(message.get("text") or "")))
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor or not messages:
                break
    except SlackApiError as exc:
        raise api_error("audit.verify", method, channel, exc) from None
    except OSError as exc:  # urllib's URLError, a refused connection, a timeout
        raise IntegrationError(
            "audit.verify",
            "Slack",
            f"cannot be reached at {client.base_url}: {getattr(exc, 'reason', exc)}",
            "check the network and settings.slack.api_url",
            retryable=True,
        ) from None
    return found
