"""Who Tocsin signs in as, and its access tokens: msal against Microsoft's identity platform.

``MicrosoftCredentials`` says who Tocsin signs in as (tenant, app, client secret or
certificate) and builds nothing else. ``acquire_token`` asks msal's
``ConfidentialClientApplication``, one per tenant, app and credential for the life of the
process, so its token cache serves every step; one scope per API (Graph, Defender for
Endpoint, Exchange Online: each host's ``/.default``). msal talks to the identity platform
through ``HttpxTransport``, msal's documented ``http_client`` seam, given the TLS context of
``microsoft.ca_bundle``. That is how the CA is trusted: msal's own ``verify=`` goes to a
``requests.Session`` whose ``REQUESTS_CA_BUNDLE`` (set on many machines, this one included)
overrides it, and setting that variable would change the trust of the whole process.
Nothing here touches ``os.environ``. The identity platform's refusals are said as what to
fix (a wrong or expired secret, an unknown app or tenant, a clock off).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import msal

from tocsin.errors import ConfigurationError, IntegrationError
from tocsin.integrations.microsoft import (
    CERTIFICATE_KEY_SECRET,
    CERTIFICATE_THUMBPRINT_SECRET,
    CLIENT_SECRET,
    SERVICE,
    integration,
)
from tocsin.outbound import trusting

if TYPE_CHECKING:
    from tocsin.actions import ActionContext
    from tocsin.integrations.microsoft.settings import MicrosoftSettings
    from tocsin.settings import SecretStore, Settings


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
        unapplied=True,  # no token, so no call was made
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
