"""``tocsin integrations check http``: each named service answers at its base URL.

A ``HEAD`` of the base URL, without credentials and without following redirects: any HTTP
answer (even 401, 404 or 405) proves the service is reachable and its certificate trusted;
nothing is sent that could change anything. The secrets a service needs are named by the
runbooks' steps (``bearer_token_secret``), not here; an integration of its own (platform)
says which ones it needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

import httpx

from tocsin.integration import CheckResult
from tocsin.integrations.http import integration
from tocsin.outbound import trusting
from tocsin.settings import SecretStore, Settings

CHECK_TIMEOUT_SECONDS = 10.0


def is_configured(settings: Settings, secrets: SecretStore) -> bool:
    """Configured once a service is named (``http.services``)."""
    return bool(integration.settings_of(settings).services)


def check(settings: Settings, secrets: SecretStore) -> Sequence[CheckResult]:
    """One result per named service: does it answer a ``HEAD`` of its base URL."""
    http = integration.settings_of(settings)
    verify = trusting(http.ca_bundle)
    timeout = min(settings.http_timeout_seconds, CHECK_TIMEOUT_SECONDS)
    results = []
    with httpx.Client(
        verify=verify if verify is not None else True, timeout=timeout, follow_redirects=False
    ) as client:
        for name, url in sorted(http.services.items()):
            results.append(_reachable(client, name, url, timeout))
    return results


def _shown(url: str) -> str:
    """``url`` without a user or password it may carry (they are secrets)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _reachable(client: httpx.Client, name: str, given: str, timeout: float) -> CheckResult:
    check = f"service {name}"
    url = _shown(given)
    fix = (
        f"check that {url} is the service's base URL (TOCSIN_HTTP__SERVICES__{name.upper()}) "
        "and that this machine can reach it"
    )
    try:
        response = client.head(given)
    except httpx.TimeoutException:
        return CheckResult(check, False, f"{url} did not answer within {timeout:g} s", fix)
    except httpx.HTTPError as exc:
        reason = (str(exc) or type(exc).__name__).replace(given, url)
        if "CERTIFICATE_VERIFY_FAILED" in reason:
            fix = (
                "set http.ca_bundle (TOCSIN_HTTP__CA_BUNDLE) to the PEM of the CA that signed "
                "the service's certificate"
            )
        return CheckResult(check, False, f"{url} cannot be reached: {reason}", fix)
    if response.status_code >= 500:
        return CheckResult(
            check,
            False,
            f"{url} answers {response.status_code} (the service is failing or down)",
            "retry later; ask the service's operator if it lasts",
        )
    return CheckResult(check, True, f"{url} answers (HTTP {response.status_code} to HEAD)")
