"""``tocsin integrations check microsoft``: the app signs in, and its tokens carry the
application permissions the actions need.

For each API the actions call (Graph, Exchange Online; Defender for Endpoint once an action
calls it) the app signs in with msal for that API's scope, exactly as a run does, and the
token's ``roles`` claim (the application permissions an admin consented to) is compared
with those the calls need (``permissions.ROUTES``; Exchange.ManageAsApp for Exchange). The
token is only read here, not trusted: its signature is not checked, since nothing is
granted on the strength of it. Nothing is called besides the sign-in.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from tocsin.errors import TocsinError
from tocsin.integration import CheckResult
from tocsin.integrations.microsoft import integration
from tocsin.integrations.microsoft.permissions import ROUTES, Needed
from tocsin.integrations.microsoft.tokens import (
    MicrosoftCredentials,
    acquire_token,
    scopes,
    token_roles,
)
from tocsin.settings import SecretStore, Settings


@dataclass(frozen=True)
class ApiNeeds:
    """One API the actions call: its key in ``client.scopes``, its name in the portal's
    "Add a permission" list, and what each of its calls needs."""

    api: str
    portal_name: str
    where: str
    """Where it is found under "Add a permission"."""
    calls: tuple[tuple[str, Needed], ...]


def _shown(pattern: re.Pattern[str]) -> str:
    """``^/users/[^/]+/authentication/`` as ``/users/{id}/authentication/…``."""
    text = pattern.pattern.removeprefix("^").replace("[^/]+", "{id}")
    return text.removesuffix("$") if text.endswith("$") else text + "…"


GRAPH = ApiNeeds(
    "graph",
    "Microsoft Graph",
    "Microsoft Graph",
    tuple((f"{method} {_shown(pattern)}", needed) for method, pattern, needed in ROUTES),
)
EXCHANGE = ApiNeeds(
    "exchange",
    "Office 365 Exchange Online",
    "APIs my organization uses → Office 365 Exchange Online",
    (
        (
            "InvokeCommand (mailbox forwarding)",
            Needed(("Exchange.ManageAsApp",), note="and an Exchange role assigned to the app"),
        ),
    ),
)
# Defender for Endpoint: no action of this version calls it; its device actions add theirs here.
APIS: tuple[ApiNeeds, ...] = (GRAPH, EXCHANGE)


def is_configured(settings: Settings, secrets: SecretStore) -> bool:
    """Configured once the tenant or the app is named."""
    microsoft = integration.settings_of(settings)
    return bool(microsoft.tenant_id or microsoft.client_id)


def check(settings: Settings, secrets: SecretStore) -> Sequence[CheckResult]:
    """One result per API: signed in, and the permissions its calls need consented."""
    try:
        credentials = MicrosoftCredentials.from_secrets(settings, secrets)
    except TocsinError as exc:
        return [CheckResult.problem("sign-in", exc)]
    api_scopes = scopes(integration.settings_of(settings))
    return [
        *(_api(credentials, api, api_scopes[api.api]) for api in APIS),
        _password_channel(settings, secrets),
    ]


def _password_channel(settings: Settings, secrets: SecretStore) -> CheckResult:
    """Whether the channel for temporary passwords is one Tocsin can use (read, not sent)."""
    from tocsin.integrations.microsoft.password_delivery import password_delivery

    microsoft = integration.settings_of(settings)
    if not (microsoft.password_channel or microsoft.password_folder):
        return CheckResult(
            "password channel",
            True,
            "none set: microsoft.reset_password is refused until "
            "TOCSIN_MICROSOFT__PASSWORD_CHANNEL (slack-dm:U0123ABCD) or "
            "TOCSIN_MICROSOFT__PASSWORD_FOLDER is",
        )
    try:
        password_delivery(microsoft, settings, secrets)
    except TocsinError as exc:
        return CheckResult.problem("password channel", exc)
    where = microsoft.password_channel or f"folder:{microsoft.password_folder}"
    return CheckResult("password channel", True, f"temporary passwords go to {where}")


def missing_permissions(roles: Sequence[str], api: ApiNeeds) -> dict[str, list[str]]:
    """Each permission the token lacks, with the calls that need it (none: all is there)."""
    held = set(roles)
    missing: dict[str, list[str]] = {}
    for call, needed in api.calls:
        if all(p in held for p in needed.permissions) or any(p in held for p in needed.also):
            continue
        for permission in needed.permissions:
            if permission not in held:
                missing.setdefault(permission, []).append(call)
    return missing


def _api(credentials: MicrosoftCredentials, api: ApiNeeds, scope: str) -> CheckResult:
    name = api.portal_name
    try:
        token = acquire_token(credentials, scope, "check")
    except TocsinError as exc:
        found = CheckResult.problem(name, exc)
        return CheckResult(name, False, f"sign-in for {scope}: {found.message}", found.hint)
    roles = token_roles(token)
    missing = missing_permissions(roles, api)
    how = "client secret" if credentials.client_secret else "certificate"
    signed_in = (
        f"signed in to tenant {credentials.tenant_id} as app {credentials.client_id} ({how})"
    )
    if not missing:
        note = (
            "; the Exchange role is not in the token: a forwarding step's 403 says if it is missing"
            if api is EXCHANGE
            else ""
        )
        return CheckResult(
            name, True, f"{signed_in}; the token has every permission the actions need{note}"
        )
    listed = "; ".join(f"{p} ({', '.join(calls)})" for p, calls in missing.items())
    empty = " (the token carries no application permission at all)" if not roles else ""
    return CheckResult(
        name,
        False,
        f"{signed_in}, but the token lacks {listed}{empty}",
        f"Entra admin centre → App registrations → the app {credentials.client_id} → API "
        f"permissions → Add a permission → {api.where} → Application permissions: add "
        f"{', '.join(missing)}; then Grant admin consent for the tenant (a Privileged Role "
        "Administrator or Global Administrator); new tokens carry them within minutes "
        "(docs/microsoft.md, The app registration)",
    )
