"""Tocsin's own inventory of device certificates: office, device → serial, subject, SANs,
expiry, status; in the journal's database (SQLite or PostgreSQL).

Vault cannot search certificates by subject, so "the certificates of office OF-1042" is
answered here. A row is written whenever Tocsin issues or signs a certificate, revokes
one, or reconciles with the CA (``pki.find_certificates`` with ``reconcile``: LIST, then
one read per serial). Serial numbers are unique within one CA only, so every row names
its CA (``authority``: ``vault:https://vault:8200/pki``).

The table belongs to the PKI integration: it is declared here, on its own metadata, and
created the first time a journal is used for certificates (as Slack's ``posts``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from tocsin.integrations.pki.authority import CertificateFacts
from tocsin.journal.database import JournalDatabase, aware, default_url, now, opened_database
from tocsin.settings import Settings


class CertificateStatus(StrEnum):
    VALID = "valid"
    REVOKED = "revoked"


class Source(StrEnum):
    """How a row came to be: Tocsin issued it (CA-made key), signed a device's CSR, or
    found it at the CA when reconciling."""

    ISSUED = "issued"
    SIGNED = "signed"
    RECONCILED = "reconciled"


metadata = MetaData()
certificates = Table(
    "pki_certificates",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("authority", String(255), nullable=False),
    Column("serial", String(128), nullable=False),
    Column("office", String(64)),
    Column("device", String(128)),
    Column("subject", String(512), nullable=False),
    Column("sans", JSON, nullable=False),
    Column("not_after", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("source", String(16), nullable=False),
    Column("incident", String(64)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("authority", "serial", name="one_row_per_certificate"),
)


@dataclass(frozen=True)
class InventoryEntry:
    """One certificate as the inventory knows it."""

    authority: str
    serial: str
    office: str | None
    device: str | None
    subject: str
    sans: tuple[str, ...]
    not_after: datetime
    status: CertificateStatus
    revoked_at: datetime | None
    source: Source
    incident: str | None

    @classmethod
    def from_row(cls, row: RowMapping) -> InventoryEntry:
        not_after = aware(row["not_after"])
        assert not_after is not None
        return cls(
            authority=row["authority"],
            serial=row["serial"],
            office=row["office"],
            device=row["device"],
            subject=row["subject"],
            sans=tuple(row["sans"] or ()),
            not_after=not_after,
            status=CertificateStatus(row["status"]),
            revoked_at=aware(row["revoked_at"]),
            source=Source(row["source"]),
            incident=row["incident"],
        )


class CertificateInventory:
    """The ``pki_certificates`` table of a journal's database."""

    def __init__(self, database: JournalDatabase) -> None:
        self.database = database
        database.create_tables_of(metadata)

    # -- writing ----------------------------------------------------------------------------

    def record(
        self,
        authority: str,
        facts: CertificateFacts,
        *,
        office: str | None,
        device: str | None,
        source: Source,
        incident: str | None = None,
        revoked_at: datetime | None = None,
    ) -> None:
        """Write a certificate Tocsin issued, signed or found (a row already there is
        updated, keeping its office and device when none is given)."""
        values = {
            "subject": facts.subject[:512],
            "sans": list(facts.sans),
            "not_after": facts.not_after,
            "status": CertificateStatus.REVOKED if revoked_at else CertificateStatus.VALID,
            "revoked_at": revoked_at,
            "updated_at": now(),
        }
        where = (certificates.c.authority == authority, certificates.c.serial == facts.serial)
        for _ in range(3):
            with self.database.transaction() as db:
                known = {k: v for k, v in (("office", office), ("device", device)) if v}
                changed = db.execute(
                    update(certificates).where(*where).values(**values, **known)
                ).rowcount
                if changed:
                    return
                try:
                    with db.begin_nested():
                        db.execute(
                            insert(certificates).values(
                                authority=authority,
                                serial=facts.serial,
                                office=office,
                                device=device,
                                source=source.value,
                                incident=incident,
                                **values,
                            )
                        )
                    return
                except IntegrityError:
                    continue  # written by another process meanwhile: update it

    def mark_revoked(self, authority: str, serial: str, revoked_at: datetime) -> None:
        """The certificate is revoked (by Tocsin, or found so at the CA)."""
        with self.database.transaction() as db:
            db.execute(
                update(certificates)
                .where(certificates.c.authority == authority, certificates.c.serial == serial)
                .values(
                    status=CertificateStatus.REVOKED.value, revoked_at=revoked_at, updated_at=now()
                )
            )

    def forget(self, authority: str) -> int:
        """Drop every row of ``authority`` (a sandbox's new CA at an address an earlier one
        had: those rows are of a CA that no longer exists); how many were dropped."""
        with self.database.transaction() as db:
            return int(
                db.execute(
                    delete(certificates).where(certificates.c.authority == authority)
                ).rowcount
            )

    # -- reading ----------------------------------------------------------------------------

    def find(
        self,
        authority: str,
        *,
        office: str | None = None,
        devices: Sequence[str] = (),
        serials: Sequence[str] = (),
    ) -> list[InventoryEntry]:
        """The certificates of ``office`` (its ``devices`` only, when given), or of
        ``devices`` of any office, or with these serials; names compared case-insensitively."""
        query = select(certificates).where(certificates.c.authority == authority)
        if office:
            query = query.where(func.lower(certificates.c.office) == office.lower())
        if devices:
            query = query.where(func.lower(certificates.c.device).in_([d.lower() for d in devices]))
        if serials:
            query = query.where(certificates.c.serial.in_(list(serials)))
        if not (office or devices or serials):
            raise ValueError("say which office, devices or serials")
        query = query.order_by(certificates.c.office, certificates.c.device, certificates.c.id)
        with self.database.transaction() as db:
            rows = db.execute(query).mappings().all()
        return [InventoryEntry.from_row(row) for row in rows]

    def serials(self, authority: str) -> dict[str, InventoryEntry]:
        """Every certificate of the CA the inventory knows, by serial."""
        with self.database.transaction() as db:
            rows = (
                db.execute(select(certificates).where(certificates.c.authority == authority))
                .mappings()
                .all()
            )
        return {row["serial"]: InventoryEntry.from_row(row) for row in rows}


@contextmanager
def inventory_for(settings: Settings) -> Iterator[CertificateInventory]:
    """The inventory in the journal's database the settings name (``journal_url``, else
    SQLite in ``data_dir``), closed afterwards."""
    with inventory_at(settings.journal_url or default_url(settings.data_dir)) as inventory:
        yield inventory


@contextmanager
def inventory_at(url: str) -> Iterator[CertificateInventory]:
    """The inventory in the database at ``url``, closed afterwards."""
    with opened_database(url) as database:
        yield CertificateInventory(database)
