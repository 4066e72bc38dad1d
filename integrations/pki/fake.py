"""``FakeVaultPKI``: a Vault PKI secrets engine on loopback, with a real CA.

The CA is made with ``cryptography`` (ECDSA P-256). ``issue`` makes a key and a certificate
with the SANs asked for, ``sign`` signs a CSR, ``revoke`` records the revocation time and
rebuilds the CRL (a real CRL signed by the CA, its CRLNumber one more each time), and
``GET /v1/{mount}/crl`` serves it in DER, as Vault does. Tokens are checked
(``X-Vault-Token``): each token is given the operations its policy allows, and a call
outside them is answered 403 ``{"errors": ["permission denied"]}``, as is an unknown
token. With a namespace, only requests carrying it in ``X-Vault-Namespace`` reach the
engine. Faults: ``fail_next`` (``FakeService``), and ``rebuild_crl_on_revoke = False``
(Vault's ``auto_rebuild``: a revoked certificate reaches the CRL only at the next rebuild).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tocsin.integrations.pki.authority import serial_number, serial_text
from tocsin.sandbox.fake_service import FakeService, ReceivedRequest, Reply
from tocsin.sandbox.tls import self_signed_ca

SANDBOX_TOKEN = "hvs.sandbox-tocsin-pki-token"
SANDBOX_ROLE = "office-device"
SANDBOX_DOMAIN = "devices.broker-office.example"
ALL_OPERATIONS = frozenset(
    {"issue", "sign", "revoke", "list", "read_role", "lookup", "capabilities"}
)
_DENIED = Reply(403, {"errors": ["permission denied"]})


@dataclass(frozen=True)
class FakeToken:
    """A token and the operations its policies allow (``ALL_OPERATIONS`` names them)."""

    token: str
    operations: frozenset[str] = ALL_OPERATIONS
    policies: tuple[str, ...] = ("default", "tocsin-pki")


@dataclass
class StoredCertificate:
    certificate: x509.Certificate
    revoked_at: datetime | None = None

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


@dataclass
class FakeRole:
    name: str = SANDBOX_ROLE
    allowed_domains: tuple[str, ...] = (SANDBOX_DOMAIN,)
    max_ttl_hours: int = 24 * 90


@dataclass
class _Ca:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    crl_number: int = 0
    crl: bytes = b""
    stored: dict[int, StoredCertificate] = field(default_factory=dict)


class FakeVaultPKI(FakeService):
    """See the module docstring."""

    name = "fake Vault PKI"

    def __init__(
        self,
        *,
        tokens: Iterable[FakeToken] = (FakeToken(SANDBOX_TOKEN),),
        mount: str = "pki",
        roles: Iterable[FakeRole] = (FakeRole(),),
        namespace: str | None = None,
        ca_name: str = "Broker offices device CA",
    ) -> None:
        super().__init__()
        self.tokens = {t.token: t for t in tokens}
        self.mount = mount.strip("/")
        self.roles = {r.name: r for r in roles}
        self.namespace = namespace
        self.rebuild_crl_on_revoke = True
        self.crl_signer: ec.EllipticCurvePrivateKey | None = None
        """When set, the CRL is signed by this key instead of the CA's (a forged CRL)."""
        self._ca = _make_ca(ca_name)
        self._rebuild_crl()

    # -- for tests and the sandbox ----------------------------------------------------------

    @property
    def ca_certificate(self) -> x509.Certificate:
        return self._ca.certificate

    @property
    def ca_pem(self) -> str:
        return self._ca.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def issue_now(
        self, common_name: str, alt_names: Iterable[str] = (), valid_for: timedelta | None = None
    ) -> x509.Certificate:
        """Issue a certificate as ``issue`` does, without a request (the sandbox's seed);
        a negative ``valid_for`` makes one that has already expired."""
        with self.lock:
            key = ec.generate_private_key(ec.SECP256R1())
            names = [common_name, *alt_names]
            return self._make(key.public_key(), common_name, names, valid_for)

    def stored(self, serial: str) -> StoredCertificate | None:
        with self.lock:
            return self._ca.stored.get(serial_number(serial))

    def revoke_now(self, serial: str) -> None:
        """Revoke without a request (a certificate revoked outside Tocsin)."""
        with self.lock:
            found = self._ca.stored[serial_number(serial)]
            found.revoked_at = datetime.now(UTC).replace(microsecond=0)
            self._rebuild_crl()

    def rebuild_crl(self) -> None:
        with self.lock:
            self._rebuild_crl()

    @property
    def crl_number(self) -> int:
        return self._ca.crl_number

    # -- the API ----------------------------------------------------------------------------

    def handle(self, request: ReceivedRequest) -> Reply:
        path = unquote(request.path)  # as Vault's router does
        if not path.startswith("/v1/"):
            return Reply(404, {"errors": []})
        route = path.removeprefix("/v1/")
        listing = request.method == "LIST" or request.query.get("list") == ["true"]
        if route == "auth/token/lookup-self":
            return self._guarded(request, "lookup", lambda token: self._lookup(token))
        if route == "sys/capabilities-self":
            return self._guarded(
                request, "capabilities", lambda token: self._capabilities(token, request)
            )
        if not route.startswith(self.mount + "/"):
            return _no_route(route)
        if self.namespace and request.header("x-vault-namespace") != self.namespace:
            return _no_route(route)
        rest = route.removeprefix(self.mount + "/")
        head, _, tail = rest.partition("/")
        with self.lock:
            if rest == "crl" and request.method == "GET":
                return Reply(200, self._ca.crl, {"Content-Type": "application/pkix-crl"})
            if rest == "crl/pem" and request.method == "GET":
                pem = x509.load_der_x509_crl(self._ca.crl).public_bytes(serialization.Encoding.PEM)
                return Reply(200, pem, {"Content-Type": "application/pem-certificate-chain"})
            if rest in ("ca/pem", "cert/ca/raw/pem"):
                return Reply(
                    200, self.ca_pem.encode(), {"Content-Type": "application/pem-certificate-chain"}
                )
            if rest == "cert/ca":
                return Reply(200, {"data": {"certificate": self.ca_pem, "revocation_time": 0}})
            if head == "cert" and tail and request.method == "GET":
                return self._read(tail)
            if rest == "certs" and listing:
                return self._guarded(request, "list", lambda token: self._list())
            if head == "roles" and tail and request.method == "GET":
                return self._guarded(request, "read_role", lambda token: self._role(tail))
            if head == "issue" and tail and request.method in ("POST", "PUT"):
                return self._guarded(request, "issue", lambda token: self._issue(tail, request))
            if head == "sign" and tail and request.method in ("POST", "PUT"):
                return self._guarded(request, "sign", lambda token: self._sign(tail, request))
            if rest == "revoke" and request.method in ("POST", "PUT"):
                return self._guarded(request, "revoke", lambda token: self._revoke(request))
        return _no_route(route)

    def _guarded(self, request: ReceivedRequest, operation: str, answer: Any) -> Reply:
        token = self.tokens.get(request.header("x-vault-token") or "")
        if token is None or operation not in token.operations:
            return _DENIED
        with self.lock:
            reply = answer(token)
        assert isinstance(reply, Reply)
        return reply

    def _lookup(self, token: FakeToken) -> Reply:
        return Reply(
            200,
            {
                "data": {
                    "id": token.token,
                    "accessor": "fake-accessor",
                    "display_name": "token-tocsin",
                    "policies": list(token.policies),
                    "expire_time": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
                    "ttl": 30 * 24 * 3600,
                    "renewable": True,
                }
            },
        )

    def _capabilities(self, token: FakeToken, request: ReceivedRequest) -> Reply:
        paths = request.json().get("paths") or []
        found: dict[str, list[str]] = {}
        for path in paths:
            rest = str(path).removeprefix(self.mount + "/")
            operation = {"issue": "issue", "sign": "sign", "revoke": "revoke", "certs": "list"}.get(
                rest.split("/")[0]
            )
            allowed = operation in token.operations if operation else False
            found[str(path)] = (
                (["list"] if operation == "list" else ["create", "update"]) if allowed else ["deny"]
            )
        return Reply(200, {**found, "capabilities": [], "data": found})

    def _read(self, serial: str) -> Reply:
        try:
            number = serial_number(serial)
        except ValueError:
            return Reply(400, {"errors": [f"invalid serial number {serial!r}"]})
        found = self._ca.stored.get(number)
        if found is None:
            return Reply(404, {"errors": []})
        revoked = int(found.revoked_at.timestamp()) if found.revoked_at else 0
        return Reply(
            200,
            {
                "data": {
                    "certificate": found.pem,
                    "revocation_time": revoked,
                    "revocation_time_rfc3339": found.revoked_at.isoformat()
                    if found.revoked_at
                    else "",
                    "issuer_id": "fake-issuer",
                }
            },
        )

    def _list(self) -> Reply:
        if not self._ca.stored:
            return Reply(404, {"errors": []})
        return Reply(200, {"data": {"keys": [serial_text(n) for n in self._ca.stored]}})

    def _role(self, name: str) -> Reply:
        role = self.roles.get(name)
        if role is None:
            return Reply(404, {"errors": []})
        return Reply(
            200,
            {
                "data": {
                    "allowed_domains": list(role.allowed_domains),
                    "allow_subdomains": True,
                    "max_ttl": role.max_ttl_hours * 3600,
                    "key_type": "ec",
                    "no_store": False,
                }
            },
        )

    def _naming(
        self, role_name: str, body: Mapping[str, Any]
    ) -> tuple[FakeRole, list[str], timedelta | None] | Reply:
        role = self.roles.get(role_name)
        if role is None:
            return Reply(400, {"errors": [f"unknown role: {role_name}"]})
        common_name = str(body.get("common_name") or "")
        if not common_name:
            return Reply(
                400,
                {
                    "errors": [
                        'the common_name field is required, or must be provided in a CSR with "use_csr_common_name" set to true, unless "require_cn" is set to false'
                    ]
                },
            )
        alt = [n.strip() for n in str(body.get("alt_names") or "").split(",") if n.strip()]
        names = [common_name, *[n for n in alt if n != common_name]]
        for name in names:
            if not any(name.endswith("." + domain) for domain in role.allowed_domains):
                return Reply(400, {"errors": [f"common name {name} not allowed by this role"]})
        ttl = _ttl(body.get("ttl"))
        return role, names, ttl

    def _issue(self, role_name: str, request: ReceivedRequest) -> Reply:
        named = self._naming(role_name, request.json())
        if isinstance(named, Reply):
            return named
        _, names, ttl = named
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = self._make(key.public_key(), names[0], names, ttl)
        pem_key = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ).decode("ascii")
        return Reply(
            200,
            {
                "data": {
                    **self._answer(certificate),
                    "private_key": pem_key,
                    "private_key_type": "ec",
                }
            },
        )

    def _sign(self, role_name: str, request: ReceivedRequest) -> Reply:
        body = request.json()
        named = self._naming(role_name, body)
        if isinstance(named, Reply):
            return named
        _, names, ttl = named
        try:
            csr = x509.load_pem_x509_csr(str(body.get("csr") or "").encode("ascii"))
        except ValueError:
            return Reply(400, {"errors": ["certificate request could not be parsed"]})
        if not csr.is_signature_valid:
            return Reply(400, {"errors": ["request signature invalid"]})
        public_key = csr.public_key()
        certificate = self._make(public_key, names[0], names, ttl)
        return Reply(200, {"data": self._answer(certificate)})

    def _revoke(self, request: ReceivedRequest) -> Reply:
        body = request.json()
        given = str(body.get("serial_number") or "")
        try:
            number = serial_number(given)
        except ValueError:
            return Reply(400, {"errors": [f"invalid serial number {given!r}"]})
        found = self._ca.stored.get(number)
        if found is None:
            return Reply(400, {"errors": [f"certificate with serial {given} not found."]})
        warnings: list[str] = []
        if found.revoked_at is None and found.certificate.not_valid_after_utc <= datetime.now(UTC):
            # As Vault: an expired certificate is not revoked (nor put on the CRL).
            return Reply(200, {"warnings": ["certificate already expired"], "data": None})
        if found.revoked_at is None:
            found.revoked_at = datetime.now(UTC).replace(microsecond=0)
            if self.rebuild_crl_on_revoke:
                self._rebuild_crl()
        else:
            warnings.append("certificate already revoked")
        answer: dict[str, Any] = {
            "data": {
                "revocation_time": int(found.revoked_at.timestamp()),
                "revocation_time_rfc3339": found.revoked_at.isoformat(),
                "state": "revoked",
            }
        }
        if warnings:
            answer["warnings"] = warnings
        return Reply(200, answer)

    # -- the CA ----------------------------------------------------------------------------

    def _answer(self, certificate: x509.Certificate) -> dict[str, Any]:
        pem = certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
        return {
            "certificate": pem,
            "issuing_ca": self.ca_pem,
            "ca_chain": [self.ca_pem],
            "serial_number": serial_text(certificate.serial_number),
            "expiration": int(certificate.not_valid_after_utc.timestamp()),
        }

    def _make(
        self,
        public_key: Any,
        common_name: str,
        names: list[str],
        ttl: timedelta | None,
    ) -> x509.Certificate:
        now = datetime.now(UTC)
        dns: list[x509.GeneralName] = []
        for name in dict.fromkeys(names):
            try:
                dns.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                dns.append(x509.DNSName(name))
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._ca.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(min(now, now + (ttl or timedelta(0))) - timedelta(hours=1))
            .not_valid_after(now + (ttl or timedelta(days=30)))
            .add_extension(x509.SubjectAlternativeName(dns), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
            .sign(self._ca.key, hashes.SHA256())
        )
        self._ca.stored[certificate.serial_number] = StoredCertificate(certificate)
        return certificate

    def _rebuild_crl(self) -> None:
        now = datetime.now(UTC)
        self._ca.crl_number += 1
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self._ca.certificate.subject)
            .last_update(now - timedelta(seconds=1))
            .next_update(now + timedelta(hours=72))
            .add_extension(x509.CRLNumber(self._ca.crl_number), critical=False)
        )
        for number, stored in self._ca.stored.items():
            if stored.revoked_at is not None:
                builder = builder.add_revoked_certificate(
                    x509.RevokedCertificateBuilder()
                    .serial_number(number)
                    .revocation_date(stored.revoked_at)
                    .build()
                )
        signer = self.crl_signer or self._ca.key
        self._ca.crl = builder.sign(signer, hashes.SHA256()).public_bytes(
            serialization.Encoding.DER
        )

    def reset(self) -> None:
        super().reset()
        with self.lock:
            self.rebuild_crl_on_revoke = True
            self.crl_signer = None


def _no_route(route: str) -> Reply:
    return Reply(404, {"errors": [f'no handler for route "{route}". route entry not found.']})


def _ttl(value: Any) -> timedelta | None:
    text = str(value or "").strip()
    if not text:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1] in units and text[:-1].isdigit():
        return timedelta(seconds=int(text[:-1]) * units[text[-1]])
    if text.isdigit():
        return timedelta(seconds=int(text))
    return None


def _make_ca(name: str) -> _Ca:
    return _Ca(*self_signed_ca(name, timedelta(days=365)))
