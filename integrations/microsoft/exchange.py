"""Exchange Online's admin API: what Graph cannot reach (mailbox forwarding).

The Exchange Online PowerShell module (V3) runs its cmdlets through a REST endpoint::

    POST {exchange_url}/adminapi/beta/{tenant}/InvokeCommand
    {"CmdletInput": {"CmdletName": "Set-Mailbox", "Parameters": {"Identity": "...", ...}}}

with a token for ``{exchange_url}/.default`` (the ``Exchange.ManageAsApp`` application
permission of the Office 365 Exchange Online API, and an Exchange role assigned to the
app) and an ``X-AnchorMailbox`` header routing the call to the mailbox's server. It answers
``{"value": [...]}`` (``@odata.nextLink`` when there is more, ``@adminapi.warnings`` for
the cmdlet's warnings) or ``{"error": {...}}`` whose ``details`` carry the cmdlet's error.

**This is not a documented public API** (beta): peer tools (CIPP, Microsoft Extractor Suite,
Rewst's "Invoke Command") use it, and the shapes here are the ones they rely on. It is kept
in this module alone, so that a change on Microsoft's side is fixed in one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tocsin.errors import IntegrationError
from tocsin.integrations.microsoft import SERVICE
from tocsin.integrations.microsoft.client import MicrosoftApi
from tocsin.integrations.microsoft.response import GraphResponse
from tocsin.integrations.microsoft.tokens import MicrosoftCredentials

if TYPE_CHECKING:
    from collections.abc import Mapping

    from tocsin.integrations.microsoft.settings import MicrosoftSettings

SYSTEM_MAILBOX = "SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}"
"""The mailbox peer tools anchor calls that name no user's mailbox to."""
_GRANT_EXCHANGE = (
    "grant the app the Exchange.ManageAsApp application permission (Entra admin centre → App "
    "registrations → the Tocsin app → API permissions → Add a permission → APIs my "
    "organization uses → Office 365 Exchange Online → Application permissions), grant admin "
    "consent, then give the app an Exchange role (Roles and administrators → Exchange "
    "Administrator → Add assignments → the app)"
)


class ExchangeOnline(MicrosoftApi):
    """Exchange Online's ``InvokeCommand`` for one action: a cmdlet and its parameters."""

    api = "exchange"
    label = "Exchange Online"

    def base_url_of(self, settings: MicrosoftSettings, credentials: MicrosoftCredentials) -> str:
        return f"{settings.exchange_url.rstrip('/')}/adminapi/beta/{credentials.tenant_id}"

    def invoke(
        self,
        cmdlet: str,
        parameters: Mapping[str, Any],
        *,
        mailbox: str | None = None,
        what: str = "",
    ) -> list[dict[str, Any]]:
        """Run ``cmdlet`` with ``parameters``; the objects it returns, every page of them.

        ``mailbox`` (a UPN) anchors the call to that mailbox's server.
        """
        anchor = (
            f"UPN:{mailbox}" if mailbox else f"APP:{SYSTEM_MAILBOX}@{self.credentials.tenant_id}"
        )
        body = {"CmdletInput": {"CmdletName": cmdlet, "Parameters": dict(parameters)}}
        headers = {"X-AnchorMailbox": anchor, "Prefer": "odata.maxpagesize=1000"}
        url: str | None = self.url("/InvokeCommand")
        found: list[dict[str, Any]] = []
        while url is not None:
            response = self.send("POST", url, json_body=body, headers=headers)
            if response.status >= 400:
                raise self.error("POST", url, response, what or cmdlet)
            answer = response.body if isinstance(response.body, dict) else {}
            found.extend(item for item in answer.get("value") or [] if isinstance(item, dict))
            next_link = answer.get("@odata.nextLink")
            url = self._endpoint(None).resolve(next_link) if isinstance(next_link, str) else None
        return found

    def error(
        self, method: str, url: str, response: GraphResponse, what: str = ""
    ) -> IntegrationError:
        """What Exchange's refusal means, the cmdlet's own error included."""
        status = response.status
        said = cmdlet_error(response) or response.error_message or f"HTTP {status}"
        retryable = False
        if status in (401, 403):
            text = f"refused to {what} ({said}): the app may not run Exchange cmdlets"
            hint = f"{_GRANT_EXCHANGE}; the app is {self.credentials.client_id}"
        elif "ManagementObjectNotFoundException" in _raw_cmdlet_error(response):
            text = f"has no mailbox for {what} ({said})"
            hint = "check the user's sign-in address and that they have an Exchange Online mailbox"
        elif status == 429 or status >= 500:
            text = f"failed to {what} ({said})"
            hint = "Exchange Online is throttling or failing; retry the step in a few minutes"
            retryable = True
        else:
            text = f"refused to {what} ({said})"
            hint = "the cmdlet's error above says what it refused"
        return IntegrationError(
            self.action, SERVICE, text, hint, status_code=status, retryable=retryable
        )


def _raw_cmdlet_error(response: GraphResponse) -> str:
    error = response.body.get("error") if isinstance(response.body, dict) else None
    if not isinstance(error, dict):
        return ""
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("message"):
            return str(detail["message"])
    inner = error.get("innererror")
    internal = inner.get("internalException") if isinstance(inner, dict) else None
    if isinstance(internal, dict) and internal.get("message"):
        return str(internal["message"])
    return ""


def cmdlet_error(response: GraphResponse) -> str:
    """The cmdlet's error message without its ``Ex6F9304|Microsoft...Exception|`` prefix."""
    return _raw_cmdlet_error(response).rsplit("|", 1)[-1].strip()
