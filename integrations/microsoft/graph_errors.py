"""Graph's refusals said for the support engineer (``graph_error``): a 403 names the
application permission the call needs and where to grant it; a user who does not exist, a
user synchronised from on-premises AD or federated, a missing licence each say so."""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import unquote

from tocsin.errors import IntegrationError
from tocsin.integrations.microsoft import SERVICE
from tocsin.integrations.microsoft.permissions import Needed, permission_for
from tocsin.integrations.microsoft.response import GraphResponse
from tocsin.integrations.microsoft.throttling import retry_after_seconds

_CONSENT_PLACE = (
    "Entra admin centre → App registrations → the Tocsin app → API permissions → "
    "Add a permission → Microsoft Graph → Application permissions, then "
    "'Grant admin consent for <tenant>'"
)


def shown_path(url: str) -> str:
    """A Graph URL as shown in messages: its path from the version on."""
    match = re.search(r"/v1\.0(/.*)$", url)
    return match.group(1) if match else url


_LICENCE_CODES = {
    "Authentication_RequestFromNonPremiumTenantOrB2CTenant": (
        "the tenant has no Entra ID P1 or P2 licence, which the sign-in logs API needs",
        "read the sign-ins in the Entra admin centre (7 days on Entra ID Free), or license the tenant",
    ),
    "MailboxNotEnabledForRESTAPI": (
        "the user has no Exchange Online mailbox (no licence with Exchange, or the mailbox is on-premises)",
        "check the user's licences in the Microsoft 365 admin centre; an on-premises mailbox is "
        "cleaned with Exchange's own tools",
    ),
}


def missing_permission(
    doing: str,
    said: str,
    needed: Needed,
    granted: Sequence[str],
    client_id: str,
    *,
    grant_place: str,
    api: str = "",
) -> tuple[str, str]:
    """A 403's text and hint for a call that needs ``needed``: the application permission
    (of ``api``, when not Graph's), what the token lacks, and where to grant it."""
    missing = [p for p in needed.permissions if p not in granted]
    text = (
        f"refused to {doing} ({said}): the app needs the {api + ' ' if api else ''}application "
        f"permission {needed.describe()}"
        + (f"; its token lacks {', '.join(missing)}" if granted and missing else "")
    )
    hint = (
        f"grant {' and '.join(missing or needed.permissions)} to the app "
        f"{client_id or '(TOCSIN_MICROSOFT__CLIENT_ID)'}: {grant_place}"
        + (f". {needed.note}" if needed.note else "")
        + "; the permission applies to new tokens, within minutes"
    )
    return text, hint


def graph_error(
    action: str,
    method: str,
    url: str,
    response: GraphResponse,
    *,
    what: str = "",
    client_id: str = "",
    granted: Sequence[str] = (),
) -> IntegrationError:
    """An ``IntegrationError`` saying what Graph's refusal means and what to do about it."""
    status, code, message = response.status, response.error_code, response.error_message
    path = shown_path(url)
    doing = what or f"{method} {path}"
    said = f"{code}: {message}" if code else f"HTTP {status}"
    retryable = False
    if code in _LICENCE_CODES:
        meaning, hint = _LICENCE_CODES[code]
        text = f"cannot {doing}: {meaning} ({code})"
    elif status == 404 and re.match(r"^/users/[^/]+$", path.split("?")[0]):
        user = path.split("/")[2].split("?")[0]
        text = f"has no user {_decoded(user)} (Request_ResourceNotFound)"
        hint = "check the user's sign-in address (UPN) or object id, and that it is in this tenant"
    elif status == 400 and re.search(r"on-premises mastered|federat", message, re.IGNORECASE):
        text = (
            f"cannot {doing}: the user is synchronised from on-premises Active Directory or "
            f"signs in through a federated domain, so the cloud cannot change it ({message})"
        )
        hint = (
            "do it in on-premises AD (Active Directory Users and Computers, or Set-ADAccountPassword / "
            "Disable-ADAccount), then let Entra Connect sync; reset the password twice on-premises"
        )
    elif status == 403 and re.search(r"licen[cs]e|premium", message, re.IGNORECASE):
        needed = permission_for(method, path)
        text = f"cannot {doing}: the tenant lacks the licence it needs ({said})"
        hint = (needed.note + "; " if needed and needed.note else "") + (
            "check the tenant's licences in the Microsoft 365 admin centre"
        )
    elif status == 403:
        needed = permission_for(method, path)
        if needed is not None:
            text, hint = missing_permission(
                doing, said, needed, granted, client_id, grant_place=_CONSENT_PLACE
            )
        else:
            text = f"refused to {doing} ({said})"
            hint = f"check the app's API permissions and their admin consent: {_CONSENT_PLACE}"
    elif status == 401:
        text = f"refused Tocsin's token for {doing} ({said})"
        hint = (
            "check that TOCSIN_MICROSOFT__GRAPH_URL and TOCSIN_MICROSOFT__AUTHORITY_HOST are of the "
            "same cloud, and that the app registration is enabled"
        )
    elif status == 429 or status >= 500:
        text = f"failed to {doing} ({said})"
        hint = "Microsoft Graph is throttling or failing; retry the step in a few minutes"
        retryable = True
    else:
        text = f"refused to {doing} ({said})"
        hint = "see the error code in the Microsoft Graph documentation of this call"
    return IntegrationError(
        action,
        SERVICE,
        text,
        hint,
        status_code=status,
        retryable=retryable,
        # Throttled (a $batch item's own 429 or 503, with its Retry-After): refused before
        # Graph acted on it, and the service says when to ask again.
        unapplied=status in (429, 503),
        retry_after=retry_after_seconds(response.headers.get("retry-after")) if retryable else None,
    )


def _decoded(segment: str) -> str:
    return unquote(segment)
