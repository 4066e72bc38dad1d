"""Microsoft's identity platform through msal, and Microsoft Graph through httpx.

``MicrosoftCredentials`` says who Tocsin signs in as (tenant, app, client secret or
certificate) and builds nothing else; ``Graph`` sends one action's calls:

- **tokens**: msal's ``ConfidentialClientApplication``, one per tenant, app and credential
  for the life of the process, so its token cache serves every step; one scope per API
  (Graph, Defender for Endpoint, Exchange Online: each host's ``/.default``). msal talks
  to the identity platform through ``HttpxTransport``, msal's documented ``http_client``
  seam, given the TLS context of ``microsoft.ca_bundle``. That is how the CA is trusted:
  msal's own ``verify=`` goes to a ``requests.Session`` whose ``REQUESTS_CA_BUNDLE``
  (set on many machines, this one included) overrides it, and setting that variable
  would change the trust of the whole process. Nothing here touches ``os.environ``;
- **throttling**: a 429 or 503 is sent again after its ``Retry-After`` (seconds, possibly
  fractional) or, without one, after a bounded exponential backoff with jitter; at most
  ``max_retries`` times, never waiting more than ``max_retry_wait_seconds`` at once;
- **``$batch``**: at most 20 requests per batch; each item's outcome is reported on its
  own (an outer 200 proves nothing), items throttled inside a batch are sent again;
- **errors** for the support engineer (``graph_error``): a 403 names the application
  permission the call needs and where to grant it; a user who does not exist, a user
  synchronised from on-premises AD or federated, a missing licence each say so.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import unquote

import httpx
import msal

from tocsin.errors import ConfigurationError, IntegrationError
from tocsin.integrations.microsoft import (
    CERTIFICATE_KEY_SECRET,
    CERTIFICATE_THUMBPRINT_SECRET,
    CLIENT_SECRET,
    integration,
)
from tocsin.integrations.microsoft.permissions import permission_for
from tocsin.outbound import BearerToken, BoundedResponse, ServiceEndpoint, trusting

if TYPE_CHECKING:
    from tocsin.actions import ActionContext
    from tocsin.integrations.microsoft.settings import MicrosoftSettings
    from tocsin.settings import SecretStore, Settings

SERVICE = "Microsoft 365"
BATCH_LIMIT = 20
"""Graph's limit of requests in one ``$batch``."""
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
_BACKOFF_BASE_SECONDS = 1.0
_RETRIED_STATUSES = (429, 503)
_CONSENT_PLACE = (
    "Entra admin centre → App registrations → the Tocsin app → API permissions → "
    "Add a permission → Microsoft Graph → Application permissions, then "
    "'Grant admin consent for <tenant>'"
)


# -- who Tocsin signs in as ---------------------------------------------------------------------


@dataclass(frozen=True)
class MicrosoftCredentials:
    """The tenant, the app registration and its credential (client secret or certificate)."""

    tenant_id: str
    client_id: str
    authority_host: str = "https://login.microsoftonline.com"
    client_secret: str | None = field(default=None, repr=False)
    certificate_key: str | None = field(default=None, repr=False)
    """PEM private key of the certificate uploaded to the app registration."""
    certificate_thumbprint: str | None = None
    """Its SHA-1 thumbprint (hex), as the app registration shows it."""
    ca_bundle: Path | None = None
    timeout_seconds: float = 30.0

    @property
    def authority(self) -> str:
        return f"{self.authority_host.rstrip('/')}/{self.tenant_id}"

    @classmethod
    def from_context(cls, context: ActionContext) -> MicrosoftCredentials:
        """From ``settings.microsoft`` and the secrets the action's context holds."""
        return cls.from_secrets(context.settings, context.secrets)

    @classmethod
    def from_secrets(cls, settings: Settings, secrets: SecretStore) -> MicrosoftCredentials:
        """From ``settings.microsoft`` and ``secrets``; ``ConfigurationError`` naming what to set."""
        microsoft = integration.settings_of(settings)
        missing = [
            f"TOCSIN_MICROSOFT__{name.upper()}"
            for name in ("tenant_id", "client_id")
            if not getattr(microsoft, name)
        ]
        if missing:
            raise ConfigurationError(
                f"Microsoft 365 is not configured: {' and '.join(missing)} not set",
                "set the tenant id and the application (client) id of the Tocsin app "
                "registration (docs/microsoft.md)",
            )
        secret = secrets.get(CLIENT_SECRET)
        key = secrets.get(CERTIFICATE_KEY_SECRET)
        thumbprint = secrets.get(CERTIFICATE_THUMBPRINT_SECRET)
        if not secret and not (key and thumbprint):
            raise ConfigurationError(
                "no credential is set for the Microsoft 365 app registration",
                f"set TOCSIN_SECRET_{CLIENT_SECRET.upper()} (the client secret's Value), or "
                f"TOCSIN_SECRET_{CERTIFICATE_KEY_SECRET.upper()} and "
                f"TOCSIN_SECRET_{CERTIFICATE_THUMBPRINT_SECRET.upper()} for a certificate",
            )
        assert microsoft.tenant_id is not None and microsoft.client_id is not None
        return cls(
            tenant_id=microsoft.tenant_id,
            client_id=microsoft.client_id,
            authority_host=microsoft.authority_host,
            client_secret=None if key and thumbprint else secret,
            certificate_key=key if key and thumbprint else None,
            certificate_thumbprint=thumbprint.replace(":", "").strip()
            if key and thumbprint
            else None,
            ca_bundle=microsoft.ca_bundle,
            timeout_seconds=microsoft.timeout_seconds,
        )

    def _credential(self) -> str | dict[str, str]:
        if self.certificate_key and self.certificate_thumbprint:
            return {"private_key": self.certificate_key, "thumbprint": self.certificate_thumbprint}
        assert self.client_secret is not None
        return self.client_secret

    def _cache_key(self) -> tuple[str, ...]:
        # The credential takes part in the key as a hash only: it is never kept in clear twice.
        credential = json.dumps(self._credential(), sort_keys=True).encode()
        return (
            self.authority,
            self.client_id,
            hashlib.sha256(credential).hexdigest(),
            str(self.ca_bundle or ""),
            str(self.timeout_seconds),
        )


def scopes(settings: MicrosoftSettings) -> dict[str, str]:
    """The token scope of each API Tocsin calls, for the cloud the settings name: Graph,
    Defender for Endpoint, Exchange Online (each host's ``/.default``: the app's consented
    application permissions on it)."""
    return {
        "graph": f"{settings.graph_url.rstrip('/')}/.default",
        "defender": f"{settings.defender_url.rstrip('/')}/.default",
        "exchange": f"{settings.exchange_url.rstrip('/')}/.default",
    }


class HttpxTransport:
    """msal's ``http_client`` over httpx, with the TLS context and timeout of the settings."""

    def __init__(self, ca_bundle: Path | None, timeout_seconds: float) -> None:
        verify = trusting(ca_bundle)
        self._client = httpx.Client(
            verify=verify if verify is not None else True,
            timeout=timeout_seconds,
            follow_redirects=False,
        )

    def post(
        self,
        url: str,
        params: Mapping[str, str] | None = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        **_: Any,
    ) -> httpx.Response:
        if isinstance(data, str | bytes):
            return self._client.post(url, params=params, content=data, headers=headers)
        # msal gives the certificate assertion as bytes, which httpx would send as "b'...'".
        form = {
            key: value.decode("ascii") if isinstance(value, bytes) else value
            for key, value in (data or {}).items()
        }
        return self._client.post(url, params=params, data=form, headers=headers)

    def get(
        self,
        url: str,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        **_: Any,
    ) -> httpx.Response:
        return self._client.get(url, params=params, headers=headers)

    def close(self) -> None:
        self._client.close()


_apps: dict[tuple[str, ...], msal.ConfidentialClientApplication] = {}
_apps_lock = threading.Lock()

# The identity platform's errors that are the configuration's (no retry helps).
_CREDENTIAL_ERRORS = {
    7000215: "the client secret is wrong: give its Value (not its Secret ID), and check it has not expired",
    7000222: "the client secret has expired: add a new one to the app registration",
    700016: "no app with this client id exists in the tenant: check TOCSIN_MICROSOFT__CLIENT_ID",
    90002: "the tenant does not exist: check TOCSIN_MICROSOFT__TENANT_ID",
    700027: "the certificate's signature does not match one uploaded to the app registration",
    700024: "the certificate assertion is not valid now: check this machine's clock",
    7000112: "the app registration is disabled",
}


def _unreachable(
    action: str, credentials: MicrosoftCredentials, exc: httpx.HTTPError
) -> ConfigurationError | IntegrationError:
    """The sign-in host failing at the network or TLS level, said as what to check."""
    if "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return ConfigurationError(
            f"Microsoft 365 sign-in host {credentials.authority_host} presented a certificate "
            f"this machine does not trust: {exc}",
            "behind a TLS-inspecting proxy, set TOCSIN_MICROSOFT__CA_BUNDLE to its CA "
            "certificate (PEM); otherwise check TOCSIN_MICROSOFT__AUTHORITY_HOST",
        )
    return IntegrationError(
        action,
        SERVICE,
        f"sign-in host {credentials.authority_host} cannot be reached: {exc}",
        "check the network and TOCSIN_MICROSOFT__AUTHORITY_HOST; the step can be retried",
        retryable=True,
    )


def application(
    credentials: MicrosoftCredentials, action: str = "microsoft"
) -> msal.ConfidentialClientApplication:
    """The process's msal app for these credentials (and its token cache), made once."""
    key = credentials._cache_key()
    with _apps_lock:
        app = _apps.get(key)
        if app is None:
            try:
                app = msal.ConfidentialClientApplication(
                    credentials.client_id,
                    client_credential=credentials._credential(),
                    authority=credentials.authority,
                    instance_discovery=False,
                    http_client=HttpxTransport(credentials.ca_bundle, credentials.timeout_seconds),
                )
            except ValueError as exc:  # the authority's discovery or a malformed key
                raise ConfigurationError(
                    f"Microsoft 365 sign-in cannot be set up at {credentials.authority}: {exc}",
                    "check TOCSIN_MICROSOFT__AUTHORITY_HOST (https only) and "
                    "TOCSIN_MICROSOFT__TENANT_ID, and the certificate key if one is set",
                ) from None
            except httpx.HTTPError as exc:
                raise _unreachable(action, credentials, exc) from None
            _apps[key] = app
        return app


def acquire_token(credentials: MicrosoftCredentials, scope: str, action: str) -> str:
    """An access token for ``scope`` (``https://graph.microsoft.com/.default``), from msal's
    cache while it is valid; the identity platform's refusal said as what to fix."""
    app = application(credentials, action)
    try:
        result = app.acquire_token_for_client(scopes=[scope])
    except httpx.HTTPError as exc:
        raise _unreachable(action, credentials, exc) from None
    except ValueError as exc:  # msal refusing a credential it cannot use (a malformed key)
        raise ConfigurationError(
            f"Microsoft 365 sign-in refused the credential: {exc}",
            f"check TOCSIN_SECRET_{CERTIFICATE_KEY_SECRET.upper()} (a PEM private key)",
        ) from None
    token = result.get("access_token") if isinstance(result, dict) else None
    if token:
        return str(token)
    error = result.get("error", "unknown_error") if isinstance(result, dict) else "no answer"
    description = str(result.get("error_description", "")) if isinstance(result, dict) else ""
    codes = result.get("error_codes") or [] if isinstance(result, dict) else []
    first_line = description.splitlines()[0] if description else error
    for code in codes:
        if code in _CREDENTIAL_ERRORS:
            raise ConfigurationError(
                f"Microsoft 365 refused Tocsin's sign-in for tenant {credentials.tenant_id}: "
                f"{first_line}",
                _CREDENTIAL_ERRORS[code]
                + f" (app {credentials.client_id}; secret TOCSIN_SECRET_{CLIENT_SECRET.upper()})",
            )
    if error in ("invalid_client", "unauthorized_client", "invalid_scope", "invalid_request"):
        raise ConfigurationError(
            f"Microsoft 365 refused Tocsin's sign-in for tenant {credentials.tenant_id}: {first_line}",
            "check the tenant id, the client id and the credential of the app registration",
        )
    raise IntegrationError(
        action,
        SERVICE,
        f"sign-in failed ({error}): {first_line}",
        "retry the step; if it keeps failing, see https://login.microsoftonline.com/error",
        retryable=True,
    )


def forget_tokens(credentials: MicrosoftCredentials) -> None:
    """Drop the cached tokens (one Graph refused as expired or revoked)."""
    application(credentials).remove_tokens_for_client()


def token_roles(token: str) -> list[str]:
    """The application permissions (``roles``) a JWT access token carries; [] if unreadable."""
    parts = token.split(".")
    if len(parts) != 3:
        return []
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return []
    roles = payload.get("roles") if isinstance(payload, dict) else None
    return [str(role) for role in roles] if isinstance(roles, list) else []


# -- Graph --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphResponse:
    """One Graph answer: its status, its JSON body (None when empty) and headers."""

    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def error_code(self) -> str:
        error = self.body.get("error") if isinstance(self.body, dict) else None
        return str(error.get("code", "")) if isinstance(error, dict) else ""

    @property
    def error_message(self) -> str:
        error = self.body.get("error") if isinstance(self.body, dict) else None
        return str(error.get("message", "")) if isinstance(error, dict) else ""


@dataclass(frozen=True)
class BatchItem:
    """One request of a ``$batch``: ``url`` is relative to the version (``/users/{id}``)."""

    id: str
    method: str
    url: str
    body: Any = None


@dataclass(frozen=True)
class BatchOutcome:
    """What became of one item of a ``$batch``; ``error`` says why when it failed."""

    id: str
    method: str
    url: str
    status: int
    body: Any
    error: IntegrationError | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds (fractional accepted, an HTTP date too); None if absent."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds)


def backoff_seconds(attempt: int, limit: float) -> float:
    """The wait before retry ``attempt`` (0-based) without Retry-After: 1, 2, 4... s, capped
    at ``limit``, with jitter (half to all of it) so that many callers do not retry at once."""
    ceiling = min(limit, _BACKOFF_BASE_SECONDS * (2**attempt))
    return random.uniform(ceiling / 2, ceiling)


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
        self._sleep = sleep
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
            response = _parsed(raw)
            if response.status == 401 and not renewed:
                # An expired or revoked token msal still had cached: drop it, sign in again once.
                forget_tokens(self.credentials)
                self._token = None
                renewed = True
                continue
            if response.status not in _RETRIED_STATUSES:
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
                f"is throttling {method} {_shown(url)}: it {reason}",
                f"retry the step in a few minutes; {self.label} limits each app per tenant and "
                "per mailbox",
                status_code=response.status,
                retryable=True,
            )
        self._sleep(asked if asked is not None else backoff_seconds(attempt, limit))

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
        """Send ``items`` in ``$batch`` requests of at most 20; one outcome per item, in order.

        Items throttled inside a batch (their own 429) are sent again in the next batch after
        the longest Retry-After among them, within the same bounds as ``send``.
        """
        ids = [item.id for item in items]
        if len(set(ids)) != len(ids):
            raise ValueError("batch item ids must be unique")
        outcomes: dict[str, BatchOutcome] = {}
        for start in range(0, len(items), BATCH_LIMIT):
            pending = list(items[start : start + BATCH_LIMIT])
            attempt = 0
            while pending:
                answered = self._one_batch(pending)
                throttled = [
                    item for item in pending if answered[item.id].status in _RETRIED_STATUSES
                ]
                for item in pending:
                    if item not in throttled or attempt >= self.settings.max_retries:
                        outcomes[item.id] = self._outcome(item, answered[item.id], what)
                pending = throttled if attempt < self.settings.max_retries else []
                if pending:
                    waits = [
                        retry_after_seconds(answered[item.id].headers.get("retry-after"))
                        for item in pending
                    ]
                    asked = max((w for w in waits if w is not None), default=None)
                    limit = self.settings.max_retry_wait_seconds
                    if asked is not None and asked > limit:
                        for item in pending:
                            outcomes[item.id] = self._outcome(item, answered[item.id], what)
                        break
                    self._sleep(asked if asked is not None else backoff_seconds(attempt, limit))
                    attempt += 1
        return [outcomes[item.id] for item in items]

    def _one_batch(self, items: Sequence[BatchItem]) -> dict[str, GraphResponse]:
        requests: list[dict[str, Any]] = []
        for item in items:
            request: dict[str, Any] = {"id": item.id, "method": item.method, "url": item.url}
            if item.body is not None:
                request["body"] = item.body
                request["headers"] = {"Content-Type": "application/json"}
            requests.append(request)
        url = self.url("/$batch")
        response = self.send("POST", url, json_body={"requests": requests})
        if response.status >= 400:
            raise self.error("POST", url, response, "a $batch request")
        answered: dict[str, GraphResponse] = {}
        body = response.body if isinstance(response.body, dict) else {}
        for entry in body.get("responses") or []:
            if not isinstance(entry, dict) or str(entry.get("id")) not in {i.id for i in items}:
                continue
            headers = entry.get("headers") if isinstance(entry.get("headers"), dict) else {}
            answered[str(entry["id"])] = GraphResponse(
                int(entry.get("status", 500)),
                entry.get("body"),
                {str(k).lower(): str(v) for k, v in (headers or {}).items()},
            )
        for item in items:
            answered.setdefault(
                item.id,
                GraphResponse(
                    500, {"error": {"code": "missing", "message": "no response in the batch"}}
                ),
            )
        return answered

    def _outcome(self, item: BatchItem, response: GraphResponse, what: str) -> BatchOutcome:
        error = None
        if response.status >= 400:
            error = self.error(item.method, self.base_url + item.url, response, what)
        return BatchOutcome(item.id, item.method, item.url, response.status, response.body, error)

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


def _parsed(raw: BoundedResponse) -> GraphResponse:
    body: Any = None
    if raw.content:
        try:
            body = json.loads(raw.content)
        except ValueError:
            body = {"error": {"code": "notJson", "message": raw.text[:200]}}
    return GraphResponse(raw.status_code, body, {k.lower(): v for k, v in raw.headers.items()})


def _shown(url: str) -> str:
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
    path = _shown(url)
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
            missing = [p for p in needed.permissions if p not in granted]
            text = (
                f"refused to {doing} ({said}): the app needs the application permission "
                f"{needed.describe()}"
                + (f"; its token lacks {', '.join(missing)}" if granted and missing else "")
            )
            hint = (
                f"grant {' and '.join(missing or needed.permissions)} to the app "
                f"{client_id or '(TOCSIN_MICROSOFT__CLIENT_ID)'}: {_CONSENT_PLACE}"
                + (f". {needed.note}" if needed.note else "")
                + "; the permission applies to new tokens, within minutes"
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
    return IntegrationError(action, SERVICE, text, hint, status_code=status, retryable=retryable)


def _decoded(segment: str) -> str:
    return unquote(segment)
