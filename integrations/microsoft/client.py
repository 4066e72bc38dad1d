"""Microsoft's APIs through httpx, one action's calls at a time: ``MicrosoftApi`` (a token
of its own scope, each request sent again when throttled, paging, and ``error``, the hook
each API overrides to say its refusals its own way) and ``Graph``, Microsoft Graph v1.0.

Each job has its module: ``tokens`` (who Tocsin signs in as, msal and its token cache),
``throttling`` (Retry-After and backoff), ``batch`` (``$batch`` of at most 20, a mailbox's
items sequenced for Outlook's 4 concurrent requests), ``graph_errors`` (Graph's refusals
said for the support engineer), ``response`` (one answer). The names the actions use are
importable from here too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self

from tocsin.errors import IntegrationError
from tocsin.integrations.microsoft import SERVICE, integration
from tocsin.integrations.microsoft.batch import (
    BATCH_LIMIT,
    BatchItem,
    BatchOutcome,
    send_batches,
)
from tocsin.integrations.microsoft.graph_errors import graph_error, shown_path
from tocsin.integrations.microsoft.response import GraphResponse, parsed
from tocsin.integrations.microsoft.throttling import (
    RETRIED_STATUSES,
    backoff_seconds,
    retry_after_seconds,
)
from tocsin.integrations.microsoft.tokens import (
    MicrosoftCredentials,
    acquire_token,
    forget_tokens,
    scopes,
    token_roles,
)
from tocsin.outbound import BearerToken, ServiceEndpoint, trusting

if TYPE_CHECKING:
    from tocsin.actions import ActionContext
    from tocsin.integrations.microsoft.settings import MicrosoftSettings

__all__ = [
    "BATCH_LIMIT",
    "METHOD_KINDS",
    "SERVICE",
    "BatchItem",
    "BatchOutcome",
    "Graph",
    "GraphResponse",
    "MicrosoftApi",
    "MicrosoftCredentials",
    "acquire_token",
    "backoff_seconds",
    "graph_error",
    "retry_after_seconds",
    "scopes",
    "token_roles",
]

METHOD_KINDS = {
    "phoneMethods": "#microsoft.graph.phoneAuthenticationMethod",
    "emailMethods": "#microsoft.graph.emailAuthenticationMethod",
    "microsoftAuthenticatorMethods": "#microsoft.graph.microsoftAuthenticatorAuthenticationMethod",
    "fido2Methods": "#microsoft.graph.fido2AuthenticationMethod",
    "softwareOathMethods": "#microsoft.graph.softwareOathAuthenticationMethod",
    "temporaryAccessPassMethods": "#microsoft.graph.temporaryAccessPassAuthenticationMethod",
    "windowsHelloForBusinessMethods": "#microsoft.graph.windowsHelloForBusinessAuthenticationMethod",
}
"""The path segment of each kind of authentication method, by the ``@odata.type`` Graph gives it."""


class MicrosoftApi:
    """One of Microsoft's APIs for one action: its token (its own scope) and its calls,
    sent again when throttled within the settings' bounds."""

    api = "graph"
    """Which scope of ``scopes`` its tokens are for."""
    label = "Microsoft Graph"
    listing_limit: int | None = None
    """How many items ``pages`` yields at most when the caller sets no ``max_items``."""

    def __init__(
        self,
        credentials: MicrosoftCredentials,
        settings: MicrosoftSettings,
        action: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.credentials = credentials
        self.settings = settings
        self.action = action
        self.base_url = self.base_url_of(settings, credentials)
        self.scope = scopes(settings)[self.api]
        self._verify = trusting(settings.ca_bundle)
        self.sleep = sleep
        self._token: str | None = None

    def base_url_of(self, settings: MicrosoftSettings, credentials: MicrosoftCredentials) -> str:
        """Where the API's paths start."""
        raise NotImplementedError

    @classmethod
    def for_action(cls, context: ActionContext, action: str) -> Self:
        credentials = MicrosoftCredentials.from_context(context)
        return cls(credentials, integration.settings_of(context.settings), action)

    def token(self) -> str:
        if self._token is None:
            self._token = acquire_token(self.credentials, self.scope, self.action)
        return self._token

    def url(self, path_template: str, **values: Any) -> str:
        """The absolute URL of a path of the API, each ``{value}`` one encoded path segment."""
        return self._endpoint(None).url(path_template, **values)

    def _endpoint(self, token: str | None) -> ServiceEndpoint:
        return ServiceEndpoint(
            self.label,
            self.base_url,
            action=self.action,
            credential=BearerToken(token) if token else None,
            verify=self._verify,
        )

    def send(
        self,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        query: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> GraphResponse:
        """Send ``method url`` until it is not throttled (within the settings' bounds)."""
        renewed = False
        attempt = 0
        while True:
            token = self.token()
            raw = self._endpoint(token).send(
                method,
                url,
                json_body=json_body,
                query=query,
                headers={"Accept": "application/json", **(headers or {})},
                timeout=self.settings.timeout_seconds,
            )
            response = parsed(raw)
            if response.status == 401 and not renewed:
                # An expired or revoked token msal still had cached: drop it, sign in again once.
                forget_tokens(self.credentials)
                self._token = None
                renewed = True
                continue
            if response.status not in RETRIED_STATUSES:
                return response
            self._wait_before_retry(method, url, response, attempt)
            attempt += 1

    def _wait_before_retry(
        self, method: str, url: str, response: GraphResponse, attempt: int
    ) -> None:
        limit = self.settings.max_retry_wait_seconds
        asked = retry_after_seconds(response.headers.get("retry-after"))
        if attempt >= self.settings.max_retries or (asked is not None and asked > limit):
            reason = (
                f"asks to wait {asked:g} s, more than microsoft.max_retry_wait_seconds ({limit:g})"
                if asked is not None and asked > limit
                else f"still answers {response.status} after {attempt} retries"
            )
            raise IntegrationError(
                self.action,
                SERVICE,
                f"is throttling {method} {shown_path(url)}: it {reason}",
                f"retry the step in a few minutes; {self.label} limits each app per tenant and "
                "per mailbox",
                status_code=response.status,
                retryable=True,
                unapplied=True,  # throttled: Graph refused the call before acting on it
                retry_after=asked,
            )
        self.sleep(asked if asked is not None else backoff_seconds(attempt, limit))

    # -- one request -------------------------------------------------------------------------

    def call(
        self,
        method: str,
        path_template: str,
        /,
        *,
        json_body: Any = None,
        query: Mapping[str, str | int] | None = None,
        allow: Sequence[int] = (),
        what: str = "",
        **values: Any,
    ) -> GraphResponse:
        """Send one request (retried when throttled); a status >= 400 not in ``allow``
        raises ``error``'s ``IntegrationError``."""
        url = self.url(path_template, **values)
        response = self.send(method, url, json_body=json_body, query=query)
        if response.status >= 400 and response.status not in allow:
            raise self.error(method, url, response, what)
        return response

    # -- paging ------------------------------------------------------------------------------

    def pages(
        self,
        path_template: str,
        /,
        *,
        query: Mapping[str, str | int] | None = None,
        max_items: int | None = None,
        what: str = "",
        **values: Any,
    ) -> Iterator[dict[str, Any]]:
        """Every item of a collection, following ``@odata.nextLink`` (on this API's host
        only), up to ``max_items`` (by default the API's ``listing_limit``)."""
        url: str | None = self.url(path_template, **values)
        page_query = query
        limit = self.listing_limit if max_items is None else max_items
        seen = 0
        while url is not None:
            response = self.send("GET", url, query=page_query)
            if response.status >= 400:
                raise self.error("GET", url, response, what)
            body = response.body if isinstance(response.body, dict) else {}
            for item in body.get("value") or []:
                if limit is not None and seen >= limit:
                    return
                if isinstance(item, dict):
                    seen += 1
                    yield item
            next_link = body.get("@odata.nextLink")
            url = self._endpoint(None).resolve(next_link) if isinstance(next_link, str) else None
            page_query = None

    # -- errors: the hook each API overrides ------------------------------------------------

    def error(
        self, method: str, url: str, response: GraphResponse, what: str = ""
    ) -> IntegrationError:
        """What the API's refusal means; each API says it its own way, so each overrides
        this (and only this) to map its errors."""
        raise NotImplementedError


class Graph(MicrosoftApi):
    """Microsoft Graph v1.0 for one action: calls, ``$batch``, paging and errors."""

    listing_limit = 1000

    def base_url_of(self, settings: MicrosoftSettings, credentials: MicrosoftCredentials) -> str:
        return f"{settings.graph_url.rstrip('/')}/v1.0"

    def relative(self, path_template: str, **values: Any) -> str:
        """A Graph path as a ``$batch`` item gives it (from the version on), values encoded."""
        return self.url(path_template, **values)[len(self.base_url) :]

    # -- $batch ------------------------------------------------------------------------------

    def batch(self, items: Sequence[BatchItem], *, what: str = "") -> list[BatchOutcome]:
        """Send ``items`` in ``$batch`` requests of at most 20; one outcome per item, in order
        (``batch.send_batches``: throttled items sent again, a mailbox's items sequenced)."""
        return send_batches(self, items, what=what)

    # -- errors ------------------------------------------------------------------------------

    def error(
        self, method: str, url: str, response: GraphResponse, what: str = ""
    ) -> IntegrationError:
        """``graph_error`` for this action and app."""
        return graph_error(
            self.action,
            method,
            url,
            response,
            what=what,
            client_id=self.credentials.client_id,
            granted=token_roles(self._token) if self._token else [],
        )
