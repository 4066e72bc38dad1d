"""What the pki actions return (``tocsin.integrations.pki.actions``): the certificates found,
revoked, checked on the CRL and issued, as the run's outputs show them."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel

from tocsin.integrations.pki.inventory import CertificateStatus, InventoryEntry, Source
from tocsin.integrations.pki.inventory_reconciliation import Reconciliation


class CertificateOut(BaseModel):
    """One certificate as the inventory knows it."""

    serial: str
    office: str | None
    device: str | None
    subject: str
    sans: list[str]
    not_after: datetime
    status: CertificateStatus
    revoked_at: datetime | None
    source: Source
    expired: bool

    @classmethod
    def of(cls, entry: InventoryEntry) -> CertificateOut:
        return cls(
            serial=entry.serial,
            office=entry.office,
            device=entry.device,
            subject=entry.subject,
            sans=list(entry.sans),
            not_after=entry.not_after,
            status=entry.status,
            revoked_at=entry.revoked_at,
            source=entry.source,
            expired=entry.not_after <= datetime.now(UTC),
        )


class FoundCertificates(BaseModel):
    certificates: list[CertificateOut]
    serials: list[str]
    """Serials of the certificates still valid (neither revoked nor expired): what revoking
    would revoke."""
    count: int
    devices_without_certificate: list[str]
    reconciled: Reconciliation | None = None


class RevokedOut(BaseModel):
    serial: str
    office: str | None
    device: str | None
    revoked_at: datetime
    already_revoked: bool


class RevokedCertificates(BaseModel):
    revoked: list[RevokedOut]
    serials: list[str]
    """Every serial now revoked (this run's and earlier ones): what pki.verify_revoked checks."""
    newly_revoked: int
    expired: list[str]
    """Serials of certificates left alone because they have expired: no service accepts
    them, and a CA lists no expired certificate on its CRL."""
    devices_without_certificate: list[str]


class CrlListing(BaseModel):
    serial: str
    revoked_at: datetime


class RevocationVerified(BaseModel):
    crl_number: int | None
    this_update: datetime
    next_update: datetime | None
    issuer: str
    listed: list[CrlListing]
    checked: int


class IssuedOut(BaseModel):
    device: str
    office: str
    serial: str
    subject: str
    sans: list[str]
    not_after: datetime
    method: str
    """``signed`` (a CSR made on the device) or ``generated`` (the CA made the key)."""
    certificate: str
    """The certificate (PEM; public)."""
    delivered_to: str | None
    """Where the bundle with the private key went (``generated`` only; never the key)."""


class IssuedCertificates(BaseModel):
    certificates: list[IssuedOut]
    serials: list[str]
