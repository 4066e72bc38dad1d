"""Microsoft Defender for Endpoint's API: machines and their response actions.

Not Graph: its own host (``microsoft.defender_url``, ``https://api.securitycenter.microsoft.com``),
its own token (scope ``{defender_url}/.default``, the application permissions of the
*WindowsDefenderATP* API, appId fc780465-2017-40d4-a0c5-307022471b92) and its own error
shape, ``{"error": {"code", "message", "target"}}``. Calls are throttled like Graph's
(100 per minute and 1,500 per hour per call): a 429 or 503 is sent again after its
``Retry-After``, within the same bounds (``MicrosoftApi.send``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from tocsin.errors import IntegrationError
from tocsin.integrations.microsoft import SERVICE
from tocsin.integrations.microsoft.client import MicrosoftApi
from tocsin.integrations.microsoft.graph_errors import missing_permission
from tocsin.integrations.microsoft.permissions import Needed
from tocsin.integrations.microsoft.response import GraphResponse
from tocsin.integrations.microsoft.tokens import MicrosoftCredentials, token_roles

if TYPE_CHECKING:
    from tocsin.integrations.microsoft.settings import MicrosoftSettings

_GRANT_DEFENDER = (
    "Entra admin centre → App registrations → the Tocsin app → API permissions → Add a "
    "permission → APIs my organization uses → WindowsDefenderATP → Application permissions, "
    "then 'Grant admin consent for <tenant>'"
)

# (method, path pattern after /api, what it needs); first match wins.
DEFENDER_ROUTES: tuple[tuple[str, re.Pattern[str], Needed], ...] = tuple(
    (method, re.compile(pattern), needed)
    for method, pattern, needed in (
        ("POST", r"^/machines/[^/]+/(isolate|unisolate)$", Needed(("Machine.Isolate",))),
        ("GET", r"^/machines", Needed(("Machine.Read.All",), also=("Machine.ReadWrite.All",))),
        (
            "GET",
            r"^/machineactions",
            Needed(("Machine.Read.All",), also=("Machine.ReadWrite.All",)),
        ),
    )
)


def defender_permission_for(method: str, path: str) -> Needed | None:
    """What ``method path`` (after ``/api``, query allowed) needs on WindowsDefenderATP."""
    bare = path.split("?", 1)[0]
    for route_method, pattern, needed in DEFENDER_ROUTES:
        if route_method == method.upper() and pattern.search(bare):
            return needed
    return None


class DefenderForEndpoint(MicrosoftApi):
    """Defender for Endpoint's API for one action: ``MicrosoftApi``'s calls and paging,
    Defender's own error mapping."""

    api = "defender"
    label = "Defender for Endpoint"

    def base_url_of(self, settings: MicrosoftSettings, credentials: MicrosoftCredentials) -> str:
        return f"{settings.defender_url.rstrip('/')}/api"

    def error(
        self, method: str, url: str, response: GraphResponse, what: str = ""
    ) -> IntegrationError:
        """What Defender's refusal means, a 403 naming the permission to grant."""
        status, code, message = response.status, response.error_code, response.error_message
        path = url[len(self.base_url) :] if url.startswith(self.base_url) else url
        doing = what or f"{method} {path}"
        said = f"{code}: {message}" if code else f"HTTP {status}"
        retryable = False
        if status == 403:
            needed = defender_permission_for(method, path)
            if needed is not None:
                text, hint = missing_permission(
                    doing,
                    said,
                    needed,
                    token_roles(self._token) if self._token else [],
                    self.credentials.client_id,
                    grant_place=_GRANT_DEFENDER,
                    api="WindowsDefenderATP",
                )
            else:
                text = f"refused to {doing} ({said})"
                hint = f"check the app's WindowsDefenderATP permissions: {_GRANT_DEFENDER}"
            if code == "DisabledFeature":
                hint = "the tenant has no Defender for Endpoint licence, or the feature is off"
        elif status == 401:
            text = f"refused Tocsin's token for {doing} ({said})"
            hint = (
                "check that TOCSIN_MICROSOFT__DEFENDER_URL and TOCSIN_MICROSOFT__AUTHORITY_HOST "
                "are of the same cloud"
            )
        elif status == 429 or status >= 500:
            text = f"failed to {doing} ({said})"
            hint = "Defender for Endpoint is throttling or failing; retry the step in a few minutes"
            retryable = True
        else:
            text = f"refused to {doing} ({said})"
            hint = "see the error code in the Defender for Endpoint API documentation"
        return IntegrationError(
            self.action, SERVICE, text, hint, status_code=status, retryable=retryable
        )
