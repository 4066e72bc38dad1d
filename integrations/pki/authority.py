"""What Tocsin needs of a certificate authority, whichever it is.

``CertificateAuthority`` is the interface the actions speak to; ``tocsin.integrations.pki.vault``
implements it for HashiCorp Vault's PKI secrets engine. Other CAs fit it with these
differences (docs/pki.md, Other CAs):

- **smallstep step-ca** (``POST /1.0/sign`` with a one-time token, ``POST /1.0/revoke``)
  implements only *passive* revocation: a revoked certificate cannot be renewed, but it
  stays valid until it expires and may not appear on a CRL. Its ``revoke`` would return a
  ``Revocation`` with ``on_crl=False``: a CRL check (``pki.verify_revoked``, which reads CRLs
  only) cannot prove such a revocation, so a runbook for step-ca relies on short-lived
  certificates instead. step-ca signs CSRs only: ``issue`` (the CA making the key) has no
  equivalent. Neither step-ca nor EJBCA is implemented yet.
- **EJBCA** (REST API, mTLS client certificate) revokes per issuer DN and serial
  (``PUT /v1/certificate/{issuer_dn}/{serial}/revoke``) and *can search by subject*
  (``POST /v1/certificate/search``): its ``find_by_subject`` answers directly, where Vault,
  which cannot (hashicorp/vault#2450), leaves it to Tocsin's inventory.

Serial numbers are written as Vault writes them, lowercase hex bytes joined by ``:``
(``serial_text``); ``serial_number`` reads that back, and also plain hex or ``-`` separators.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

_SIGNING_KEYS = (
    rsa.RSAPublicKey,
    ec.EllipticCurvePublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
    dsa.DSAPublicKey,
)


def serial_text(number: int) -> str:
    """A serial number as Vault writes it: ``17:67:16:...``."""
    return number.to_bytes(max(1, (number.bit_length() + 7) // 8), "big").hex(":")


def serial_number(text: str) -> int:
    """A serial written ``17:67:16``, ``17-67-16`` or ``176716`` (hex) as a number;
    ``ValueError`` when it is not hex."""
    digits = text.strip().replace(":", "").replace("-", "").lower()
    if not digits:
        raise ValueError("an empty serial number")
    return int(digits, 16)


def normal_serial(text: str) -> str:
    """A serial in Vault's form, whatever form it was given in."""
    return serial_text(serial_number(text))


@dataclass(frozen=True)
class CertificateFacts:
    """What a certificate says about itself, read from its PEM."""

    serial: str
    subject: str
    common_name: str
    sans: tuple[str, ...]
    not_after: datetime

    @classmethod
    def of(cls, certificate: x509.Certificate) -> CertificateFacts:
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        try:
            extension = certificate.extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            ).value
            sans = tuple(
                [*extension.get_values_for_type(x509.DNSName)]
                + [str(ip) for ip in extension.get_values_for_type(x509.IPAddress)]
            )
        except x509.ExtensionNotFound:
            sans = ()
        return cls(
            serial=serial_text(certificate.serial_number),
            subject=certificate.subject.rfc4514_string(),
            common_name=str(names[0].value) if names else "",
            sans=sans,
            not_after=certificate.not_valid_after_utc,
        )

    @classmethod
    def of_pem(cls, pem: str) -> CertificateFacts:
        return cls.of(x509.load_pem_x509_certificate(pem.encode("ascii")))


@dataclass(frozen=True, repr=False)
class IssuedCertificate:
    """A certificate the CA just made; ``private_key`` only when the CA generated the key.

    Its repr never shows the key: only the serial and the name.
    """

    certificate: str
    """PEM."""
    facts: CertificateFacts
    issuing_ca: str = ""
    ca_chain: tuple[str, ...] = ()
    private_key: str | None = field(default=None)

    def __repr__(self) -> str:
        key = ", with its private key" if self.private_key else ""
        return f"IssuedCertificate({self.facts.serial}, {self.facts.common_name!r}{key})"


@dataclass(frozen=True)
class CertificateRecord:
    """A certificate as the CA holds it: its PEM and whether (and when) it was revoked."""

    serial: str
    certificate: str
    revoked_at: datetime | None

    @property
    def facts(self) -> CertificateFacts:
        return CertificateFacts.of_pem(self.certificate)


@dataclass(frozen=True)
class Revocation:
    """What the CA said when asked to revoke a certificate."""

    serial: str
    revoked_at: datetime
    on_crl: bool = True
    """False for a CA that revokes passively (step-ca): the certificate will not be listed."""


class CertificateAuthority(Protocol):
    """The calls Tocsin makes to a CA; each failure is an ``IntegrationError`` for the
    support engineer (or a ``ConfigurationError`` when a setting is wrong)."""

    name: str
    """How messages name it (``Vault PKI at https://vault:8200 (mount pki)``)."""
    authority_id: str
    """Which CA this is, for the inventory: serial numbers are unique only within one CA."""

    def issue(
        self, common_name: str, alt_names: Sequence[str], ttl: str | None
    ) -> IssuedCertificate:
        """A certificate and a private key the CA generates (the key leaves only once)."""
        ...

    def sign(
        self, csr: str, common_name: str, alt_names: Sequence[str], ttl: str | None
    ) -> IssuedCertificate:
        """A certificate for a CSR (PEM) made on the device, whose key never leaves it."""
        ...

    def revoke(self, serial: str) -> Revocation:
        """Revoke; revoking a certificate already revoked answers its first revocation."""
        ...

    def crl(self) -> x509.CertificateRevocationList:
        """The CRL the CA publishes now (not yet checked: ``verify_crl``)."""
        ...

    def ca_certificate(self) -> x509.Certificate:
        """The certificate of the CA that signs the certificates and the CRL."""
        ...

    def list_serials(self) -> list[str]:
        """The serials of the certificates the CA stores."""
        ...

    def read(self, serial: str) -> CertificateRecord:
        """One stored certificate, with its revocation."""
        ...

    def find_by_subject(self, text: str) -> list[CertificateRecord] | None:
        """The certificates whose subject or SANs contain ``text``; None when the CA cannot
        search (Vault): Tocsin's inventory answers instead."""
        ...


@dataclass(frozen=True)
class CrlCheck:
    """A CRL checked against its CA: which of the serials asked about it lists, and which not."""

    crl_number: int | None
    this_update: datetime
    next_update: datetime | None
    listed: dict[str, datetime]
    """Serial → revocation date on the CRL."""
    missing: list[str]


def verify_crl(
    crl: x509.CertificateRevocationList, ca: x509.Certificate, serials: Sequence[str]
) -> CrlCheck:
    """Check ``crl`` is the CA's (issuer name and signature) and which ``serials`` it lists;
    ``ValueError`` saying why when it is not the CA's."""
    if crl.issuer != ca.subject:
        raise ValueError(
            f"the CRL is issued by {crl.issuer.rfc4514_string()}, not by the CA "
            f"{ca.subject.rfc4514_string()}"
        )
    public_key = ca.public_key()
    if not isinstance(public_key, _SIGNING_KEYS):
        raise ValueError(f"the CA's key ({type(public_key).__name__}) cannot sign a CRL")
    if not crl.is_signature_valid(public_key):
        raise ValueError("the CRL's signature does not verify with the CA's public key")
    listed: dict[str, datetime] = {}
    missing: list[str] = []
    for serial in serials:
        entry = crl.get_revoked_certificate_by_serial_number(serial_number(serial))
        if entry is None:
            missing.append(normal_serial(serial))
        else:
            listed[normal_serial(serial)] = entry.revocation_date_utc
    try:
        number: int | None = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = None
    return CrlCheck(number, crl.last_update_utc, crl.next_update_utc, listed, missing)
