"""``tocsin integrations check slack``: the bot token works, and has the scopes Tocsin needs.

``auth.test`` (which needs no scope and changes nothing) says who the token signs in as;
Slack tells every call's token scopes in the ``x-oauth-scopes`` response header, which is
compared with the scopes the settings in force need (docs/gateway.md, "Setting up the
Slack app"). With ``slack.anchor_channel``, one message of its history is read, as
``tocsin audit verify`` does. The incident channel is not checked: only posting would
prove the bot may post there.
"""

from __future__ import annotations

from collections.abc import Sequence

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from tocsin.integration import CheckResult
from tocsin.integrations.slack import integration
from tocsin.integrations.slack.client import TOKEN_SECRET, SlackCredentials, api_error
from tocsin.settings import SecretStore, Settings

SIGNING_SECRET = "slack_signing_secret"
CHECK_TIMEOUT_SECONDS = 10.0

_GRANT = (
    "add them under the Slack app's OAuth & Permissions → Bot Token Scopes, then reinstall "
    "the app to the workspace (the bot token stays the same)"
)


def needed_scopes(settings: Settings) -> dict[str, str]:
    """The bot token scopes the settings in force need, each with what for."""
    slack = integration.settings_of(settings)
    needed = {
        "chat:write": "the incident thread, gate messages and private refusals",
        "usergroups:read": "who is in an approver user group",
        "users:read": "naming deciders in the audit trail",
    }
    if slack.channel_per_incident:
        needed["channels:manage"] = "a channel per incident (slack.channel_per_incident)"
    if slack.anchor_channel:
        needed["channels:history"] = "reading audit heads back (slack.anchor_channel)"
    return needed


OPTIONAL_SCOPES = {
    "commands": "the /tocsin slash command",
    "users:read.email": "finding who started a run from Jira by e-mail, and deciders' e-mail "
    "in the audit trail",
}
"""Scopes Tocsin works without, a feature less: said, not a problem."""


def is_configured(settings: Settings, secrets: SecretStore) -> bool:
    """Slack is set up when the bot token is set or a setting sends runs' messages there."""
    slack = integration.settings_of(settings)
    return bool(
        secrets.get(TOKEN_SECRET)
        or slack.incident_channel
        or slack.channel_per_incident
        or slack.anchor_channel
    )


def check(settings: Settings, secrets: SecretStore) -> Sequence[CheckResult]:
    """The bot token signs in (``auth.test``) and has the scopes needed; the signing secret is set."""
    results = [_signing_secret(secrets)]
    token = secrets.get(TOKEN_SECRET)
    if not token:
        results.insert(
            0,
            CheckResult(
                "bot token",
                False,
                f"the secret {TOKEN_SECRET} is not set",
                f"set TOCSIN_SECRET_{TOKEN_SECRET.upper()} to the app's bot token (xoxb-...)",
            ),
        )
        return results
    credentials = SlackCredentials.from_settings(
        settings, token, timeout_seconds=min(settings.http_timeout_seconds, CHECK_TIMEOUT_SECONDS)
    )
    client = credentials.get_client()
    client.retry_handlers = []  # a check says what is wrong at once; it does not wait it out
    try:
        response = client.auth_test()
    except SlackApiError as exc:
        return [
            CheckResult.problem("bot token", api_error("check", "auth.test", None, exc)),
            *results,
        ]
    except OSError as exc:  # refused, unresolvable, TLS, timed out: urllib's errors are OSErrors
        return [
            CheckResult(
                "bot token",
                False,
                f"Slack cannot be reached at {credentials.base_url}: {getattr(exc, 'reason', exc)}",
                "check the network, and slack.api_url / slack.ca_bundle "
                "(TOCSIN_SLACK__API_URL, TOCSIN_SLACK__CA_BUNDLE)",
            ),
            *results,
        ]
    who = f"@{response.get('user')} ({response.get('user_id')})"
    team = f"{response.get('team')} ({response.get('team_id')})"
    results.insert(0, CheckResult("bot token", True, f"signs in as {who} in workspace {team}"))
    header = _header(response.headers, "x-oauth-scopes")
    results.insert(1, _scopes(header, needed_scopes(settings)))
    anchor = integration.settings_of(settings).anchor_channel
    if anchor:
        results.insert(2, _anchor_channel(client, anchor))
    return results


def _anchor_channel(client: WebClient, channel: str) -> CheckResult:
    """The bot can read the anchor channel back (``conversations.history``, one message), as
    ``tocsin audit verify`` does; posting there is not tried, since it would change it."""
    try:
        client.conversations_history(channel=channel, limit=1)
    except SlackApiError as exc:
        found = CheckResult.problem(
            "anchor channel", api_error("check", "conversations.history", channel, exc)
        )
        if not channel.startswith(("C", "G")):
            return CheckResult(
                found.check,
                False,
                found.message,
                f"set slack.anchor_channel to the channel's id (C0...), not its name: Slack "
                f"reads a channel's history by id; {found.hint}",
            )
        return found
    except OSError as exc:
        return CheckResult(
            "anchor channel", False, f"Slack cannot be reached: {getattr(exc, 'reason', exc)}"
        )
    return CheckResult("anchor channel", True, f"the bot reads {channel} (audit heads)")


def _header(headers: object, name: str) -> str | None:
    if not isinstance(headers, dict):
        return None
    for key, value in headers.items():
        if str(key).lower() == name:
            return str(value[0] if isinstance(value, list) else value)
    return None


def _scopes(header: str | None, needed: dict[str, str]) -> CheckResult:
    if header is None:
        return CheckResult(
            "scopes",
            True,
            "not checked: Slack did not say the token's scopes (no x-oauth-scopes header); "
            f"it needs {', '.join(sorted(needed))}",
        )
    granted = {scope.strip() for scope in header.split(",") if scope.strip()}
    missing = [scope for scope in needed if scope not in granted]
    if missing:
        listed = "; ".join(f"{scope} ({needed[scope]})" for scope in missing)
        return CheckResult("scopes", False, f"the bot token lacks {listed}", _GRANT)
    message = f"the bot token has {', '.join(sorted(needed))}"
    lacking = [scope for scope in OPTIONAL_SCOPES if scope not in granted]
    if lacking:
        message += "; without " + "; ".join(f"{s} ({OPTIONAL_SCOPES[s]})" for s in lacking)
    return CheckResult("scopes", True, message)


def _signing_secret(secrets: SecretStore) -> CheckResult:
    if secrets.get(SIGNING_SECRET):
        return CheckResult("signing secret", True, f"{SIGNING_SECRET} is set")
    return CheckResult(
        "signing secret",
        False,
        f"the secret {SIGNING_SECRET} is not set: `tocsin gateway` refuses to start without "
        "it, so nobody can approve from Slack",
        f"set TOCSIN_SECRET_{SIGNING_SECRET.upper()} to the app's Signing Secret (Basic "
        "Information → App Credentials)",
    )
