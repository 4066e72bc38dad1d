"""Slack's Web API through slack_sdk's ``WebClient`` and its own retry handlers.

``SlackCredentials`` only builds the client (a bot token, the API's URL, the CA to trust);
``api_error`` turns Slack's error codes into what to do about them; ``slack_text`` and
``slack_value`` make a value literal text in mrkdwn.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    RetryHandler,
)

from tocsin.errors import ConfigurationError, IntegrationError
from tocsin.integrations.slack import integration
from tocsin.outbound import trusting
from tocsin.retry_after import retry_after_of

if TYPE_CHECKING:
    from tocsin.actions import ActionContext
    from tocsin.settings import SecretStore, Settings

SERVICE = "Slack"
TOKEN_SECRET = "slack_bot_token"
RATE_LIMIT_RETRIES = 2
"""How many times a call answered 429 is sent again, after Slack's Retry-After."""
_INERT_BACKTICK = "\u02cb"  # MODIFIER LETTER GRAVE ACCENT: looks like ` but opens no code span


def slack_text(value: object) -> str:
    """``value`` as literal text inside Slack mrkdwn: no mention, link, date or code span.

    Slack's rules: ``&``, ``<`` and ``>`` become ``&amp;``, ``&lt;``, ``&gt;``, so
    ``<!channel>``, ``<@U123>`` and ``<https://evil|Approve>`` are shown, not parsed.
    A backtick cannot be escaped in mrkdwn, so it is replaced by a look-alike (U+02CB)
    and the value can sit inside a code span without closing it. ``*``, ``_`` and ``~``
    have no escape either: put free text in a ``plain_text`` object or in a code span.
    """
    text = str(value)
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("`", _INERT_BACKTICK)
    )


_INERT_FORMATTING = str.maketrans({"*": "\u2217", "_": "\u02cd", "~": "\u223c"})


def slack_value(value: object) -> str:
    """``value`` placed in mrkdwn someone else wrote (a runbook's ``slack.post_message``
    text): ``slack_text``, and ``*``, ``_`` and ``~``, which mrkdwn cannot escape, replaced
    by look-alikes (∗ ˍ ∼) so that the value cannot bold, italicise or strike anything."""
    return slack_text(value).translate(_INERT_FORMATTING)


@dataclass(frozen=True)
class SlackCredentials:
    """A bot token and where Slack's Web API is; builds the ``WebClient`` every action uses."""

    token: str = field(repr=False)
    base_url: str = WebClient.BASE_URL
    timeout_seconds: float = 30.0
    ca_bundle: Path | None = None
    """CA certificates trusted besides the system's (``slack.ca_bundle``)."""

    def get_client(
        self, logger: logging.Logger | None = None, *, wait_out_rate_limits: bool = True
    ) -> WebClient:
        """A ``WebClient`` that waits out rate limits (unless told not to: a 429 is then
        raised at once) and retries a dropped connection once (logging to ``logger`` when
        given, else slack_sdk's own)."""
        handlers: list[RetryHandler] = [ConnectionErrorRetryHandler()]
        if wait_out_rate_limits:
            handlers.append(RateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES))
        return WebClient(
            logger=logger,
            token=self.token,
            base_url=self.base_url,
            timeout=max(1, math.ceil(self.timeout_seconds)),
            ssl=trusting(self.ca_bundle),
            retry_handlers=handlers,
        )

    @classmethod
    def from_context(cls, context: ActionContext) -> SlackCredentials:
        """The bot token from the secret ``slack_bot_token`` and the API URL from the settings."""
        return cls.from_settings(context.settings, context.secret(TOKEN_SECRET))

    @classmethod
    def from_settings(
        cls, settings: Settings, token: str, *, timeout_seconds: float | None = None
    ) -> SlackCredentials:
        """``token`` and where Slack is (``settings.slack``); the timeout is
        ``http_timeout_seconds`` unless given."""
        slack = integration.settings_of(settings)
        return cls(
            token=token,
            base_url=slack.api_url,
            timeout_seconds=settings.http_timeout_seconds
            if timeout_seconds is None
            else timeout_seconds,
            ca_bundle=slack.ca_bundle,
        )

    @classmethod
    def from_secrets(
        cls, settings: Settings, secrets: SecretStore, *, timeout_seconds: float | None = None
    ) -> SlackCredentials:
        """The bot token from ``secrets``; ``ConfigurationError`` naming the variable when unset."""
        token = secrets.get(TOKEN_SECRET)
        if not token:
            raise ConfigurationError(
                f"secret {TOKEN_SECRET!r} is not set",
                f"set the environment variable TOCSIN_SECRET_{TOKEN_SECRET.upper()}",
            )
        return cls.from_settings(settings, token, timeout_seconds=timeout_seconds)


def api_error(
    action: str, method: str, channel: str | None, exc: SlackApiError
) -> IntegrationError:
    """An ``IntegrationError`` saying what to do about Slack's error code."""
    code = str(exc.response.get("error") or f"HTTP {exc.response.status_code}")
    status = exc.response.status_code
    retryable = False
    place = f" in {channel}" if channel else ""
    if code in ("invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"):
        hint = (
            f"check TOCSIN_SECRET_{TOKEN_SECRET.upper()}: it must be the bot token (xoxb-...) "
            "of the Tocsin app installed in this workspace"
        )
    elif code == "missing_scope":
        needed = exc.response.get("needed") or "the scope this method needs"
        hint = (
            f"grant the bot the {needed} scope (Slack app settings, OAuth & Permissions), "
            "then reinstall the app to the workspace"
        )
    elif code in ("channel_not_found", "not_in_channel"):
        target = channel or "the channel"
        hint = (
            f"invite the bot to {target} (/invite @Tocsin in the channel), or check the channel id"
        )
    elif code == "is_archived":
        hint = f"{channel or 'the channel'} is archived: unarchive it or post elsewhere"
    elif code == "ratelimited" or status == 429:
        hint = f"Slack still rate limits {method} after {RATE_LIMIT_RETRIES} retries; retry the step in a minute"
        retryable = True
    elif status >= 500:
        hint = "Slack failed; retry the step later (https://slack-status.com)"
        retryable = True
    else:
        hint = f"see https://api.slack.com/methods/{method}#errors for {code!r}"
    return IntegrationError(
        action,
        SERVICE,
        f"refused {method}{place}: {code}",
        hint,
        status_code=status,
        retryable=retryable,
        unapplied=code == "ratelimited" or status in (429, 503),
        retry_after=(
            retry_after_of(exc.response.headers)
            if code == "ratelimited" or status in (429, 503)
            else None
        ),
    )


def usergroup_members(credentials: SlackCredentials, usergroup: str) -> list[str]:
    """Slack user ids of the members of a user group (``usergroups.users.list``)."""
    client = credentials.get_client()
    try:
        response = client.usergroups_users_list(usergroup=usergroup)
    except SlackApiError as exc:
        raise api_error("approval", "usergroups.users.list", None, exc) from None
    except OSError as exc:
        raise IntegrationError(
            "approval",
            SERVICE,
            f"cannot be reached at {client.base_url}: {getattr(exc, 'reason', exc)}",
            "the gate still waits; people listed by id can decide, the group can once Slack answers",
            retryable=True,
        ) from None
    users: list[Any] = list(response.get("users") or [])
    return [str(user) for user in users]
