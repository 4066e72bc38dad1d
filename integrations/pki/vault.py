"""HashiCorp Vault's PKI secrets engine, the first ``CertificateAuthority``.

Every call goes to ``{vault_url}/v1/...`` through ``tocsin.outbound.ServiceEndpoint`` (the
token bound to Vault's host, no redirect followed), with the token in ``X-Vault-Token`` and,
for Vault Enterprise, the namespace in ``X-Vault-Namespace``:

- ``POST {mount}/issue/:role`` (the CA makes the key), ``POST {mount}/sign/:role`` (a CSR),
  ``POST {mount}/revoke``, ``GET {mount}/crl`` (DER), ``GET {mount}/ca/pem``,
  ``GET {mount}/certs?list=true`` (LIST), ``GET {mount}/cert/:serial``,
  ``GET {mount}/roles/:role`` and ``POST sys/capabilities-self`` (checks only),
  ``GET auth/token/lookup-self``;
- **retries**: 412 (a performance standby not yet consistent), 429 and 503 (nothing was
  done) are sent again, and so are 500, 502 and 504 for calls that are safe to repeat
  (reads, revoke); issuing and signing are not repeated on those, since the certificate may
  have been made. At most ``max_retries`` times, after 0.5, 1, 2... s (``Retry-After``
  when Vault gives one), never more than ``max_retry_wait_seconds`` at once;
- **errors** (``{"errors": [...]}``) said for the support engineer: a 403 names the
  capability and the path the token's policy must grant, and whether the token itself is
  wrong (``lookup-self`` is asked, and its policies named); a 400 gives Vault's own
  sentences; an unknown role, serial or mount says which.

Neither the token nor a private key is ever logged or put in a message: requests and
answers are not logged here, and errors carry only Vault's ``errors`` list.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cryptography import x509

from tocsin.errors import ConfigurationError, IntegrationError
from tocsin.integrations.pki import VAULT_TOKEN, integration
from tocsin.integrations.pki.authority import (
    CertificateFacts,
    CertificateRecord,
    IssuedCertificate,
    Revocation,
    normal_serial,
)
from tocsin.outbound import BoundedResponse, ServiceEndpoint, trusting
from tocsin.retry_after import retry_after_of

if TYPE_CHECKING:
    from tocsin.actions import ActionContext
    from tocsin.integrations.pki.settings import PkiSettings
    from tocsin.settings import SecretStore, Settings

SERVICE = "Vault PKI"
_NOT_DONE = (412, 429, 503)
"""Statuses after which Vault did nothing: any call may be sent again."""
_MAYBE_DONE = (500, 502, 504)
"""Statuses after which only a call safe to repeat is sent again."""
_BACKOFF_BASE_SECONDS = 0.5


@dataclass(frozen=True)
class VaultToken:
    """``X-Vault-Token: <token>`` (a ``tocsin.outbound.Credential``)."""

    secret: str = field(repr=False)

    def headers(self) -> Mapping[str, str]:
        return {"X-Vault-Token": self.secret}


@dataclass(frozen=True)
class VaultAnswer:
    """One answer of Vault: status, JSON body (or raw bytes for the DER CRL), headers."""

    status: int
    body: Any
    content: bytes
    headers: Mapping[str, str]

    @property
    def errors(self) -> list[str]:
        found = self.body.get("errors") if isinstance(self.body, dict) else None
        return [str(e).strip() for e in found] if isinstance(found, list) else []

    @property
    def data(self) -> dict[str, Any]:
        found = self.body.get("data") if isinstance(self.body, dict) else None
        return found if isinstance(found, dict) else {}


@dataclass(frozen=True)
class Capability:
    """What a Vault policy must grant for one call: ``update`` on ``pki/issue/office-device``."""

    capability: str
    path: str

    def policy(self) -> str:
        return f'path "{self.path}" {{ capabilities = ["{self.capability}"] }}'


def backoff_seconds(attempt: int, limit: float) -> float:
    """0.5, 1, 2... s before retry ``attempt`` (0-based), capped, with jitter."""
    ceiling = min(limit, _BACKOFF_BASE_SECONDS * (2**attempt))
    return random.uniform(ceiling / 2, ceiling)


class VaultPKI:
    """One action's calls to a Vault PKI engine (a ``CertificateAuthority``)."""

    def __init__(
        self,
        settings: PkiSettings,
        token: str,
        action: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not settings.vault_url:
            raise ConfigurationError(
                "Vault PKI is not configured: TOCSIN_PKI__VAULT_URL is not set",
                "set the Vault server's URL (https://vault.example:8200), the engine's mount "
                "and role (docs/pki.md)",
            )
        self.settings = settings
        self.action = action
        self.mount = settings.mount.strip("/")
        self.vault_url = settings.vault_url.rstrip("/")
        self.name = f"Vault PKI at {self.vault_url} (mount {self.mount})"
        namespace = (settings.namespace or "").strip("/")
        self.namespace = namespace or None
        self.authority_id = (
            f"vault:{self.vault_url}/{namespace + '/' if namespace else ''}{self.mount}"
        )
        self._token = token
        self._endpoint = ServiceEndpoint(
            SERVICE,
            f"{self.vault_url}/v1",
            action=action,
            credential=VaultToken(token),
            verify=trusting(settings.ca_bundle),
            limit_hint="a CRL this large is not expected from one office's CA",
        )
        self._sleep = sleep

    @classmethod
    def from_secrets(
        cls, settings: Settings, secrets: SecretStore, action: str, **options: Any
    ) -> VaultPKI:
        token = secrets.get(VAULT_TOKEN)
        if not token:
            raise ConfigurationError(
                f"secret {VAULT_TOKEN!r} is not set",
                f"set TOCSIN_SECRET_{VAULT_TOKEN.upper()} to a Vault token whose policy grants "
                "the PKI paths (docs/pki.md, The Vault policy)",
            )
        return cls(integration.settings_of(settings), token, action, **options)

    @classmethod
    def for_action(cls, context: ActionContext, action: str) -> VaultPKI:
        return cls.from_secrets(context.settings, context.secrets, action)

    @property
    def role(self) -> str:
        if not self.settings.role:
            raise ConfigurationError(
                "no Vault PKI role is set, so no certificate can be issued",
                "set TOCSIN_PKI__ROLE to the role device certificates are issued under",
            )
        return self.settings.role

    # -- the CertificateAuthority calls ----------------------------------------------------

    def issue(
        self, common_name: str, alt_names: Sequence[str], ttl: str | None
    ) -> IssuedCertificate:
        answer = self.call(
            "POST",
            f"/{self.mount}/issue/{{role}}",
            role=self.role,
            json_body=_naming(common_name, alt_names, ttl),
            repeatable=False,
            needs=Capability("update", f"{self.mount}/issue/{self.role}"),
            what=f"issue a certificate for {common_name}",
        )
        return self._issued(answer, with_key=True, what=f"issue {common_name}")

    def sign(
        self, csr: str, common_name: str, alt_names: Sequence[str], ttl: str | None
    ) -> IssuedCertificate:
        answer = self.call(
            "POST",
            f"/{self.mount}/sign/{{role}}",
            role=self.role,
            json_body={"csr": csr, **_naming(common_name, alt_names, ttl)},
            repeatable=False,
            needs=Capability("update", f"{self.mount}/sign/{self.role}"),
            what=f"sign the CSR of {common_name}",
        )
        return self._issued(answer, with_key=False, what=f"sign {common_name}")

    def revoke(self, serial: str) -> Revocation:
        shown = normal_serial(serial)
        answer = self.call(
            "POST",
            f"/{self.mount}/revoke",
            json_body={"serial_number": shown},
            needs=Capability("update", f"{self.mount}/revoke"),
            what=f"revoke the certificate {shown}",
        )
        when = answer.data.get("revocation_time")
        if not isinstance(when, int | float) or when <= 0:
            warnings = answer.body.get("warnings") if isinstance(answer.body, dict) else None
            said = "; ".join(str(w) for w in warnings) if isinstance(warnings, list) else ""
            raise IntegrationError(
                self.action,
                SERVICE,
                f"did not revoke the certificate {shown}" + (f": {said}" if said else ""),
                "Vault does not revoke an expired certificate (no service accepts it anyway); "
                "otherwise read it (vault read " + f"{self.mount}/cert/{shown}) to see its state",
                status_code=answer.status,
            )
        return Revocation(shown, datetime.fromtimestamp(when, UTC))

    def crl(self) -> x509.CertificateRevocationList:
        answer = self.call(
            "GET",
            f"/{self.mount}/crl",
            authenticated=False,
            needs=Capability("read", f"{self.mount}/crl"),
            what="download the CRL",
        )
        try:
            return x509.load_der_x509_crl(answer.content)
        except ValueError:
            raise IntegrationError(
                self.action,
                SERVICE,
                f"answered GET /v1/{self.mount}/crl with something that is not a DER CRL "
                f"({len(answer.content)} bytes)",
                "check TOCSIN_PKI__MOUNT names a PKI engine; the CRL may not be built yet "
                f"(vault read {self.mount}/crl/rotate)",
                status_code=answer.status,
            ) from None

    def ca_certificate(self) -> x509.Certificate:
        answer = self.call(
            "GET",
            f"/{self.mount}/ca/pem",
            authenticated=False,
            needs=Capability("read", f"{self.mount}/ca/pem"),
            what="download the CA certificate",
        )
        try:
            return x509.load_pem_x509_certificate(answer.content)
        except ValueError:
            raise IntegrationError(
                self.action,
                SERVICE,
                f"has no CA certificate at /v1/{self.mount}/ca/pem (the engine has no issuer yet)",
                f"generate or import the CA: vault write {self.mount}/root/generate/internal ...",
                status_code=answer.status,
            ) from None

    def list_serials(self) -> list[str]:
        answer = self.call(
            "GET",
            f"/{self.mount}/certs",
            query={"list": "true"},
            allow=(404,),  # an empty LIST is a 404 with {"errors": []}
            needs=Capability("list", f"{self.mount}/certs"),
            what="list the certificates",
        )
        if answer.status == 404:
            if answer.errors:
                raise self.error("GET", f"/{self.mount}/certs", answer, "list the certificates")
            return []
        keys = answer.data.get("keys")
        return [normal_serial(str(k)) for k in keys] if isinstance(keys, list) else []

    def read(self, serial: str) -> CertificateRecord:
        shown = normal_serial(serial)
        answer = self.call(
            "GET",
            f"/{self.mount}/cert/{{serial}}",
            serial=shown.replace(":", "-"),  # Vault's other form, which needs no escaping
            authenticated=False,
            needs=Capability("read", f"{self.mount}/cert/*"),
            what=f"read the certificate {shown}",
        )
        pem = answer.data.get("certificate")
        if not isinstance(pem, str) or "BEGIN CERTIFICATE" not in pem:
            raise self._odd(answer, f"read {shown}", "no certificate")
        when = answer.data.get("revocation_time")
        revoked_at = (
            datetime.fromtimestamp(when, UTC)
            if isinstance(when, int | float) and when > 0
            else None
        )
        return CertificateRecord(shown, pem, revoked_at)

    def find_by_subject(self, text: str) -> list[CertificateRecord] | None:
        return None  # Vault cannot (hashicorp/vault#2450): the inventory answers

    # -- what the checks read ---------------------------------------------------------------

    def lookup_self(self) -> dict[str, Any]:
        """The token's own description (policies, expiry, display name; never its id)."""
        answer = self.call(
            "GET",
            "/auth/token/lookup-self",
            needs=Capability("read", "auth/token/lookup-self"),
            what="look the token up",
            explain_403=False,
        )
        return {k: v for k, v in answer.data.items() if k not in ("id", "accessor")}

    def read_role(self) -> dict[str, Any]:
        return self.call(
            "GET",
            f"/{self.mount}/roles/{{role}}",
            role=self.role,
            needs=Capability("read", f"{self.mount}/roles/{self.role}"),
            what=f"read the role {self.role}",
        ).data

    def capabilities(self, paths: Sequence[str]) -> dict[str, list[str]]:
        """The token's capabilities on each path (``sys/capabilities-self``; changes nothing)."""
        answer = self.call(
            "POST",
            "/sys/capabilities-self",
            json_body={"paths": list(paths)},
            needs=Capability("update", "sys/capabilities-self"),
            what="read the token's capabilities",
        )
        body = answer.body if isinstance(answer.body, dict) else {}
        found = {**body, **answer.data}
        return {
            path: [str(c) for c in found[path]] if isinstance(found.get(path), list) else []
            for path in paths
        }

    # -- one call ---------------------------------------------------------------------------

    def call(
        self,
        method: str,
        path_template: str,
        /,
        *,
        json_body: Any = None,
        query: Mapping[str, str | int] | None = None,
        authenticated: bool = True,
        repeatable: bool = True,
        allow: Sequence[int] = (),
        needs: Capability | None = None,
        what: str = "",
        explain_403: bool = True,
        **values: Any,
    ) -> VaultAnswer:
        """Send one call (retried within the settings' bounds); a status >= 400 not in
        ``allow`` raises the ``IntegrationError`` that says what it means."""
        url = self._endpoint.url(path_template, **values)
        path = url[len(self.vault_url) :]
        headers = {"Accept": "application/json"}
        if self.namespace:
            headers["X-Vault-Namespace"] = self.namespace
        attempt = 0
        while True:
            endpoint = self._endpoint if authenticated else self._anonymous()
            raw = endpoint.send(
                method,
                url,
                json_body=json_body,
                query=query,
                headers=headers,
                timeout=self.settings.timeout_seconds,
            )
            answer = _parsed(raw)
            retried = answer.status in _NOT_DONE or (repeatable and answer.status in _MAYBE_DONE)
            if not retried or answer.status in allow:
                break
            if attempt >= self.settings.max_retries:
                raise self.error(method, path, answer, what, needs, retries=attempt)
            self._sleep(self._wait(answer, attempt))
            attempt += 1
        if answer.status >= 400 and answer.status not in allow:
            error = self.error(
                method, path, answer, what, needs, explain_403=explain_403 and authenticated
            )
            if answer.status in _MAYBE_DONE and not repeatable:
                error.hint += (
                    "; Vault may have made the certificate all the same, so it was not asked "
                    "again: pki.find_certificates with reconcile: true finds it"
                )
            raise error
        return answer

    def _anonymous(self) -> ServiceEndpoint:
        # The CRL, the CA and stored certificates are public in Vault: no token is sent.
        return ServiceEndpoint(
            SERVICE,
            f"{self.vault_url}/v1",
            action=self.action,
            verify=self._endpoint.verify,
            limit_hint=self._endpoint.limit_hint,
        )

    def _wait(self, answer: VaultAnswer, attempt: int) -> float:
        limit = self.settings.max_retry_wait_seconds
        asked = answer.headers.get("retry-after", "").strip()
        if asked.replace(".", "", 1).isdigit():
            return min(limit, float(asked))
        return backoff_seconds(attempt, limit)

    # -- errors -----------------------------------------------------------------------------

    def error(
        self,
        method: str,
        path: str,
        answer: VaultAnswer,
        what: str = "",
        needs: Capability | None = None,
        *,
        retries: int = 0,
        explain_403: bool = True,
    ) -> IntegrationError:
        """What Vault's refusal means, and what to do about it."""
        status = answer.status
        doing = what or f"{method} {path}"
        said = "; ".join(answer.errors) or f"HTTP {status}"
        retryable = False
        if status in (*_NOT_DONE, *_MAYBE_DONE) and retries:
            text = f"still answers {status} ({said}) to {doing} after {retries} retries"
            hint = _SERVER_HINTS.get(status, "Vault is failing: retry the step in a few minutes")
            retryable = True
        elif status == 403:
            text, hint = self._refused(doing, said, needs, explain_403)
        elif status == 404 and "route entry not found" in said:
            text = f"has no PKI engine at {self.mount} ({said})"
            hint = (
                "check TOCSIN_PKI__MOUNT"
                + (f" and TOCSIN_PKI__NAMESPACE ({self.namespace})" if self.namespace else "")
                + " against `vault secrets list`"
                + (
                    ""
                    if self.namespace
                    else "; an engine in a namespace needs TOCSIN_PKI__NAMESPACE"
                )
            )
        elif status == 404 and "/cert/" in path:
            text = f"has no certificate {path.rsplit('/', 1)[-1]} ({said})"
            hint = "the serial is not one this CA stores (issued with no_store, or tidied after expiry)"
        elif status == 404 and "/roles/" in path:
            text = f"has no role {self.settings.role} under {self.mount} ({said})"
            hint = f"check TOCSIN_PKI__ROLE against `vault list {self.mount}/roles`"
        elif status == 400 and "unknown role" in said:
            text = f"cannot {doing}: the role {self.settings.role} does not exist under {self.mount} ({said})"
            hint = f"check TOCSIN_PKI__ROLE against `vault list {self.mount}/roles`"
        elif status == 400 and "not found" in said and "serial" in said:
            text = f"cannot {doing}: the CA has no such certificate ({said})"
            hint = "the serial is not one this CA issued or stores; check the inventory against the CA (reconcile)"
        elif status == 400:
            text = f"refused to {doing}: {said}"
            hint = (
                f"Vault's own words above; for a name refused, check the role's allowed_domains "
                f"(vault read {self.mount}/roles/{self.settings.role or '<role>'}) and TOCSIN_PKI__DOMAIN"
            )
        elif status == 503:
            text = f"cannot {doing}: Vault is sealed or in standby ({said})"
            hint = "unseal Vault (or reach its active node), then retry the step"
            retryable = True
        elif status == 501:
            text = f"cannot {doing}: Vault is not initialised ({said})"
            hint = "initialise and unseal Vault first"
        elif status >= 500 or status in (412, 429):
            text = f"failed to {doing} ({said})"
            hint = _SERVER_HINTS.get(status, "Vault is failing: retry the step in a few minutes")
            retryable = True
        else:
            text = f"refused to {doing} ({said})"
            hint = "see Vault's message; the Vault PKI API documentation lists the call's errors"
        return IntegrationError(
            self.action,
            SERVICE,
            text,
            hint,
            status_code=status,
            retryable=retryable,
            # Sealed or standby (503), rate limited (429), a follower not caught up (412):
            # Vault did not act on the request, so sending it again is safe.
            unapplied=status in (412, 429, 503),
            retry_after=retry_after_of(answer.headers) if status in (429, 503) else None,
        )

    def _refused(
        self, doing: str, said: str, needs: Capability | None, explain: bool
    ) -> tuple[str, str]:
        token = None
        if explain:
            try:
                token = self.lookup_self()
            except IntegrationError:
                token = None
        if explain and token is None:
            return (
                f"refused to {doing} ({said}): the token is not valid (wrong, expired or revoked)",
                f"set TOCSIN_SECRET_{VAULT_TOKEN.upper()} to a valid token"
                + (f" for namespace {self.namespace}" if self.namespace else "")
                + "; `vault token lookup` on it says whether it is",
            )
        policies = ", ".join(str(p) for p in token.get("policies") or []) if token else ""
        needed = (
            f": the token's policy must grant `{needs.capability}` on {needs.path}" if needs else ""
        )
        held = f" (the token has the policies {policies})" if policies else ""
        return (
            f"refused to {doing} ({said}){needed}{held}",
            (
                f"add to one of its policies: {needs.policy()}"
                if needs
                else "check the token's policies"
            )
            + " (docs/pki.md, The Vault policy); the new policy applies to the token at once",
        )

    def _issued(self, answer: VaultAnswer, *, with_key: bool, what: str) -> IssuedCertificate:
        data = answer.data
        pem = data.get("certificate")
        if not isinstance(pem, str) or "BEGIN CERTIFICATE" not in pem:
            raise self._odd(answer, what, "no certificate")
        key = data.get("private_key") if with_key else None
        if with_key and not (isinstance(key, str) and "PRIVATE KEY" in key):
            raise self._odd(answer, what, "no private key")
        chain = data.get("ca_chain")
        return IssuedCertificate(
            certificate=pem,
            facts=CertificateFacts.of_pem(pem),
            issuing_ca=str(data.get("issuing_ca") or ""),
            ca_chain=tuple(str(c) for c in chain) if isinstance(chain, list) else (),
            private_key=key if isinstance(key, str) else None,
        )

    def _odd(self, answer: VaultAnswer, what: str, lacking: str) -> IntegrationError:
        # Never the body: an issue answer holds a private key.
        return IntegrationError(
            self.action,
            SERVICE,
            f"answered {answer.status} to {what} with {lacking} in its data",
            "check that TOCSIN_PKI__VAULT_URL and TOCSIN_PKI__MOUNT name a PKI engine",
            status_code=answer.status,
        )


_SERVER_HINTS = {
    412: "a performance standby is not yet consistent with the active node; retry the step",
    429: "Vault's rate-limit quota is reached; retry the step in a minute",
    500: "Vault failed; its server log says why; retry the step",
    502: "Vault could not reach a backend (its storage or an upstream cluster); retry the step",
    503: "Vault is sealed or in standby: unseal it or reach its active node, then retry",
    504: "Vault timed out; retry the step",
}


def _naming(common_name: str, alt_names: Sequence[str], ttl: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"common_name": common_name, "format": "pem"}
    others = [name for name in alt_names if name != common_name]
    if others:
        body["alt_names"] = ",".join(others)
    if ttl:
        body["ttl"] = ttl
    return body


def _parsed(raw: BoundedResponse) -> VaultAnswer:
    headers = {k.lower(): v for k, v in raw.headers.items()}
    body: Any = None
    if raw.content and "json" in headers.get("content-type", ""):
        try:
            body = json.loads(raw.content)
        except ValueError:
            body = None
    if body is None and raw.status_code >= 400:
        body = {"errors": [raw.text[:200]] if raw.content else []}
    return VaultAnswer(raw.status_code, body, raw.content, headers)
