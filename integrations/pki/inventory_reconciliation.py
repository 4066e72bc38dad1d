"""Tocsin's certificate inventory brought up to date with the CA (``pki.find_certificates``
with ``reconcile``), and the device certificate names that attribute a certificate to its
office and device: ``<device>.<office>.<domain>``."""

from __future__ import annotations

from pydantic import BaseModel

from tocsin.integrations.pki.authority import CertificateAuthority
from tocsin.integrations.pki.inventory import CertificateInventory, CertificateStatus, Source


class Reconciliation(BaseModel):
    """What reconciling the inventory with the CA found."""

    read: int
    """Certificates read from the CA."""
    added: list[str]
    """Serials the CA has for an office and device and the inventory did not."""
    updated: list[str]
    """Serials whose status the CA said otherwise (revoked outside Tocsin)."""
    not_at_ca: list[str]
    """Serials in the inventory the CA does not list (tidied after expiry, or no_store)."""
    unattributed: int
    """Certificates at the CA whose name is not <device>.<office>.<domain>."""
    truncated: bool


def common_name(device: str, office: str, domain: str) -> str:
    """The name a device's certificate carries: ``pc-1.of-1042.<domain>``."""
    return f"{device}.{office}.{domain}".lower()


def attributed(name: str, domain: str | None) -> tuple[str, str] | None:
    """(office, device) read back from a certificate's common name; None if not ours."""
    if not domain:
        return None
    suffix = "." + domain.lower()
    lowered = name.lower()
    if not lowered.endswith(suffix):
        return None
    device, dot, office = lowered.removesuffix(suffix).rpartition(".")
    return (office, device) if dot and device and office and "." not in device else None


def reconcile_inventory(
    ca: CertificateAuthority,
    inventory: CertificateInventory,
    *,
    domain: str | None,
    limit: int,
    incident: str | None = None,
) -> Reconciliation:
    """Bring the inventory up to date with the CA: LIST its certificates, read each one the
    inventory does not know as revoked, record what differs."""
    listed = ca.list_serials()
    truncated = len(listed) > limit
    listed = listed[:limit]
    known = inventory.serials(ca.authority_id)
    added: list[str] = []
    updated: list[str] = []
    unattributed = 0
    read = 0
    for serial in listed:
        entry = known.get(serial)
        if entry is not None and entry.status is CertificateStatus.REVOKED:
            continue  # a revocation is final: nothing to read again
        record = ca.read(serial)
        read += 1
        facts = record.facts
        if entry is not None:
            if record.revoked_at is not None:
                inventory.mark_revoked(ca.authority_id, serial, record.revoked_at)
                updated.append(serial)
            continue
        owner = attributed(facts.common_name, domain)
        if owner is None:
            unattributed += 1
            continue
        inventory.record(
            ca.authority_id,
            facts,
            office=owner[0],
            device=owner[1],
            source=Source.RECONCILED,
            incident=incident,
            revoked_at=record.revoked_at,
        )
        added.append(serial)
    at_ca = set(listed)
    not_at_ca = [] if truncated else sorted(s for s in known if s not in at_ca)
    return Reconciliation(
        read=read,
        added=added,
        updated=updated,
        not_at_ca=not_at_ca,
        unattributed=unattributed,
        truncated=truncated,
    )
