"""The certificate actions: find an office's device certificates, revoke them, check the CA's
CRL lists them, issue new ones.

Certificates are found in Tocsin's inventory (``inventory``), since Vault cannot search by
subject; ``pki.find_certificates`` with ``reconcile`` first brings the inventory up to date
from the CA. A device's certificate is named ``<device>.<office>.<domain>`` (``pki.domain``),
which is how a certificate found at the CA is attributed to its office and device.
docs/pki.md lists the Vault policy each action needs.

This module holds the four actions; what they return is in ``results``, the inventory's
reconciliation with the CA and the certificate names in ``inventory_reconciliation``, the
CSR check and the key channel of ``pki.issue_certificates`` in ``issuance``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import Field

from tocsin.actions import ActionContext, Reconciled, action
from tocsin.errors import ActionError, ConfigurationError, IntegrationError, TocsinError
from tocsin.integrations.pki import VAULT_TOKEN, integration
from tocsin.integrations.pki.authority import verify_crl
from tocsin.integrations.pki.inventory import (
    CertificateStatus,
    InventoryEntry,
    Source,
    inventory_for,
)
from tocsin.integrations.pki.inventory_reconciliation import (
    common_name,
    reconcile_inventory,
)
from tocsin.integrations.pki.issuance import checked_csr, deliver_bundle, key_channel_for
from tocsin.integrations.pki.results import (
    CertificateOut,
    CrlListing,
    FoundCertificates,
    IssuedCertificates,
    IssuedOut,
    RevocationVerified,
    RevokedCertificates,
    RevokedOut,
)
from tocsin.integrations.pki.vault import SERVICE, VaultPKI

_NAME = r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
OfficeRef = Annotated[
    str,
    Field(pattern=_NAME, description="The office's platform id (OF-1042)"),
]
DeviceRef = Annotated[str, Field(pattern=_NAME, description="A device's platform id (PC-1)")]
Devices = Annotated[
    list[DeviceRef],
    Field(description="Platform ids of the devices (PC-1, PC-2); none: every device of the office"),
]
Serial = Annotated[
    str,
    Field(
        pattern=r"^[0-9A-Fa-f]{2}([:-]?[0-9A-Fa-f]{2})*$",
        description="A serial number as Vault writes it (17:67:16:...)",
    ),
]

# -- shared --------------------------------------------------------------------------------------


def _who(office: str | None, devices: Sequence[str]) -> str:
    if devices:
        listed = ", ".join(devices)
        return f"devices {listed} of office {office}" if office else f"devices {listed}"
    return f"every device of office {office}"


def _need_office_or_devices(name: str, office: str | None, devices: Sequence[str]) -> None:
    # Checked when called, not by ``check=``: validation leaves templated parameters out.
    if not office and not devices:
        raise ActionError(
            name,
            "give the office, or the devices, whose certificates are meant",
            "set `office:` (OF-1042), `devices:` ([PC-1, PC-2]) or both under `with:`",
        )


def _without_certificate(devices: Sequence[str], entries: Sequence[InventoryEntry]) -> list[str]:
    held = {(e.device or "").lower() for e in entries}
    return [d for d in devices if d.lower() not in held]


# -- the actions ----------------------------------------------------------------------------------


@action(
    "pki.find_certificates",
    destructive=False,
    idempotent=True,
    secrets=(VAULT_TOKEN,),
    describe=lambda office, devices, reconcile: (
        f"look up the certificates of {_who(office, devices)} in Tocsin's certificate inventory"
        + (
            ", after reconciling it with the CA (list and read each certificate)"
            if reconcile
            else ""
        )
    ),
)
def find_certificates(
    context: ActionContext,
    *,
    office: OfficeRef | None = None,
    devices: Devices = [],  # noqa: B006  (pydantic copies defaults)
    reconcile: Annotated[
        bool,
        Field(
            description="First bring the inventory up to date from the CA (list its "
            "certificates, read each one): finds certificates issued outside Tocsin and "
            "revocations made elsewhere"
        ),
    ] = False,
) -> FoundCertificates:
    """The certificates of an office's devices (or of the devices named), from Tocsin's
    inventory; with ``reconcile``, checked against the CA first."""
    name = "pki.find_certificates"
    _need_office_or_devices(name, office, devices)
    pki = integration.settings_of(context.settings)
    with inventory_for(context.settings) as inventory:
        ca = VaultPKI.for_action(context, name)
        summary = None
        if reconcile:
            summary = reconcile_inventory(
                ca, inventory, domain=pki.domain, limit=pki.max_reconcile, incident=context.incident
            )
        entries = inventory.find(ca.authority_id, office=office, devices=devices)
    return FoundCertificates(
        certificates=[CertificateOut.of(e) for e in entries],
        serials=[
            e.serial
            for e in entries
            if e.status is CertificateStatus.VALID and e.not_after > datetime.now(UTC)
        ],
        count=len(entries),
        devices_without_certificate=_without_certificate(devices, entries),
        reconciled=summary,
    )


def _revocations_read_back(
    context: ActionContext,
    *,
    office: str | None = None,
    devices: list[str] = [],  # noqa: B006
) -> Reconciled:
    """Whether an interrupted pki.revoke_certificates took effect: each certificate's
    status read at the CA itself (the inventory may not have heard of the last one)."""
    name = "pki.revoke_certificates"
    _need_office_or_devices(name, office, devices)
    with inventory_for(context.settings) as inventory:
        ca = VaultPKI.for_action(context, name)
        entries = inventory.find(ca.authority_id, office=office, devices=devices)
        live = [entry for entry in entries if entry.not_after > datetime.now(UTC)]
        at_ca = {entry.serial: ca.read(entry.serial).revoked_at for entry in live}
    revoked = [
        _revoked(entry, when, already=entry.status is CertificateStatus.REVOKED)
        for entry in live
        if (when := at_ca[entry.serial]) is not None
    ]
    if not entries or not revoked:
        return Reconciled.did_not(f"no certificate of {_who(office, devices)} is revoked at the CA")
    if len(revoked) < len(live):
        return Reconciled.unknown(
            f"{len(revoked)} of {len(live)} certificate(s) of {_who(office, devices)} revoked at the CA"
        )
    return Reconciled.took_effect(
        RevokedCertificates(
            revoked=revoked,
            serials=[r.serial for r in revoked],
            newly_revoked=sum(1 for r in revoked if not r.already_revoked),
            expired=[entry.serial for entry in entries if entry not in live],
            devices_without_certificate=_without_certificate(devices, entries),
        ),
        f"all {len(revoked)} certificate(s) of {_who(office, devices)} revoked at the CA",
    )


@action(
    "pki.revoke_certificates",
    destructive=True,
    idempotent=True,
    reconcile=_revocations_read_back,
    needs_approval=True,
    secrets=(VAULT_TOKEN,),
    describe=lambda office, devices: (
        f"revoke every certificate of {_who(office, devices)} at the CA (Vault PKI); the "
        "devices can no longer authenticate with them (not undoable)"
    ),
)
def revoke_certificates(
    context: ActionContext,
    *,
    office: OfficeRef | None = None,
    devices: Devices = [],  # noqa: B006
) -> RevokedCertificates:
    """Revoke every certificate the inventory holds for the office (or the devices); a
    certificate already revoked is left as it is, so the step can run again."""
    name = "pki.revoke_certificates"
    _need_office_or_devices(name, office, devices)
    with inventory_for(context.settings) as inventory:
        ca = VaultPKI.for_action(context, name)
        entries = inventory.find(ca.authority_id, office=office, devices=devices)
        if not entries:
            raise IntegrationError(
                name,
                SERVICE,
                f"has no certificate of {_who(office, devices)} in Tocsin's inventory, so none "
                "was revoked",
                "run pki.find_certificates with reconcile: true to read the CA's certificates "
                "into the inventory (their names must be <device>.<office>.<domain>), or check "
                "the office and device ids",
            )
        revoked: list[RevokedOut] = []
        expired: list[str] = []
        failures: list[tuple[str, TocsinError]] = []
        for entry in entries:
            if entry.status is CertificateStatus.REVOKED and entry.revoked_at is not None:
                revoked.append(_revoked(entry, entry.revoked_at, already=True))
                continue
            if entry.not_after <= datetime.now(UTC):
                expired.append(entry.serial)
                continue
            try:
                done = ca.revoke(entry.serial)
            except TocsinError as exc:
                if not failures and not revoked and getattr(exc, "status_code", None) in (401, 403):
                    raise  # the token or its policy: every other call would be refused too
                failures.append((entry.serial, exc))
                continue
            inventory.mark_revoked(ca.authority_id, entry.serial, done.revoked_at)
            context.logger.info("revoked certificate %s (%s)", entry.serial, entry.device)
            revoked.append(_revoked(entry, done.revoked_at, already=False))
    if failures:
        first = failures[0][1]
        listed = "; ".join(f"{serial}: {exc.message}" for serial, exc in failures)
        raise IntegrationError(
            name,
            SERVICE,
            f"could not revoke {len(failures)} of {len(entries)} certificate(s) "
            f"({len(revoked)} revoked): {listed}",
            f"{first.hint}; the step can be run again: what is revoked stays revoked",
            status_code=getattr(first, "status_code", None),
            retryable=all(getattr(exc, "retryable", False) for _, exc in failures),
            unapplied=all(getattr(exc, "unapplied", False) for _, exc in failures),
            retry_after=getattr(first, "retry_after", None),  # Vault's Retry-After, if it said
        )
    return RevokedCertificates(
        revoked=revoked,
        serials=[r.serial for r in revoked],
        newly_revoked=sum(1 for r in revoked if not r.already_revoked),
        expired=expired,
        devices_without_certificate=_without_certificate(devices, entries),
    )


def _revoked(entry: InventoryEntry, when: datetime, *, already: bool) -> RevokedOut:
    return RevokedOut(
        serial=entry.serial,
        office=entry.office,
        device=entry.device,
        revoked_at=when,
        already_revoked=already,
    )


@action(
    "pki.verify_revoked",
    destructive=False,
    idempotent=True,
    secrets=(VAULT_TOKEN,),
    describe=lambda serials: (
        f"download the CA's CRL, check it is signed by the CA and lists the {len(serials)} "
        "revoked serial(s)"
    ),
)
def verify_revoked(
    context: ActionContext,
    *,
    serials: Annotated[
        list[Serial],
        Field(
            min_length=1,
            description="The serials that must be on the CRL (pki.revoke_certificates' serials)",
        ),
    ],
) -> RevocationVerified:
    """Download the CRL, check its signature against the CA's certificate and that every
    serial is on it; the step fails naming the serials it does not list."""
    name = "pki.verify_revoked"
    ca = VaultPKI.for_action(context, name)
    crl = ca.crl()
    ca_certificate = ca.ca_certificate()
    try:
        checked = verify_crl(crl, ca_certificate, serials)
    except ValueError as exc:
        raise IntegrationError(
            name,
            SERVICE,
            f"published a CRL Tocsin cannot trust: {exc}",
            f"check TOCSIN_PKI__MOUNT names the CA that issued the certificates; Vault signs "
            f"/v1/{ca.mount}/crl with the default issuer's key",
        ) from None
    if checked.missing:
        raise IntegrationError(
            name,
            SERVICE,
            f"CRL (number {checked.crl_number}, issued {checked.this_update:%Y-%m-%d %H:%M:%S} "
            f"UTC) does not list {len(checked.missing)} of {len(serials)} revoked "
            f"certificate(s): {', '.join(checked.missing)}; until it does, services checking "
            "the CRL still accept them",
            f"with auto_rebuild on, Vault adds revocations at its next rebuild: rotate the CRL "
            f"(vault read {ca.mount}/crl/rotate) and run the step again; if a serial is still "
            "missing, revoke it again (pki.revoke_certificates)",
            retryable=True,
            unapplied=True,  # a check: reading the CRL again changes nothing
        )
    return RevocationVerified(
        crl_number=checked.crl_number,
        this_update=checked.this_update,
        next_update=checked.next_update,
        issuer=crl.issuer.rfc4514_string(),
        listed=[CrlListing(serial=s, revoked_at=t) for s, t in checked.listed.items()],
        checked=len(serials),
    )


def _issue_check(parameters: Any) -> None:
    unknown = sorted(set(parameters.csrs) - set(parameters.devices))
    if unknown:
        raise ValueError(f"csrs names devices not in `devices`: {', '.join(unknown)}")


@action(
    "pki.issue_certificates",
    destructive=True,
    idempotent=False,
    secrets=(VAULT_TOKEN,),
    check=_issue_check,
    describe=lambda office, devices, csrs: (
        f"issue a new certificate for each of {', '.join(devices)} of office {office}: "
        + (f"sign the CSR of {', '.join(csrs)}; " if csrs else "")
        + (
            "the CA makes the key of the others, sent only to the configured key channel"
            if set(devices) - set(csrs)
            else "no private key leaves a device"
        )
        + " (each run issues new ones)"
    ),
)
def issue_certificates(
    context: ActionContext,
    *,
    office: OfficeRef,
    devices: Annotated[
        list[DeviceRef], Field(min_length=1, description="The devices to issue for")
    ],
    csrs: Annotated[
        dict[str, str],
        Field(
            description="Device → PEM CSR made on the device (preferred: the key never leaves "
            "it); a device without one gets a key made by the CA, delivered to pki.key_channel"
        ),
    ] = {},  # noqa: B006
    ttl: Annotated[
        str | None, Field(pattern=r"^\d+[smhd]$", description="Lifetime (720h); none: pki.ttl")
    ] = None,
) -> IssuedCertificates:
    """Issue a new certificate for each device: sign its CSR when given, else let the CA
    make the key and send the bundle only to the key channel (never to the outputs, the
    trail or the logs)."""
    name = "pki.issue_certificates"
    pki = integration.settings_of(context.settings)
    if not pki.domain:
        raise ConfigurationError(
            "no domain is set for device certificates, so none is issued",
            "set TOCSIN_PKI__DOMAIN (devices.broker-office.example): a device's certificate "
            "is named <device>.<office>.<domain>, a name the role must allow",
        )
    requests = {device: checked_csr(name, device, csrs.get(device)) for device in devices}
    generated = [device for device, csr in requests.items() if csr is None]
    channel = key_channel_for(context, generated)
    ca = VaultPKI.for_action(context, name)
    lifetime = ttl or pki.ttl
    issued: list[IssuedOut] = []
    with inventory_for(context.settings) as inventory:
        for device, csr in requests.items():
            cn = common_name(device, office, pki.domain)
            try:
                if csr is not None:
                    made = ca.sign(csr, cn, [cn], lifetime)
                    delivered = None
                else:
                    assert channel is not None
                    made = ca.issue(cn, [cn], lifetime)
                    delivered = deliver_bundle(context, ca, channel, made, office, device)
            except TocsinError as exc:
                if not issued:
                    raise
                done = ", ".join(f"{i.device} ({i.serial})" for i in issued)
                exc.message += f" (already issued, and in the inventory: {done})"
                raise
            inventory.record(
                ca.authority_id,
                made.facts,
                office=office,
                device=device,
                source=Source.SIGNED if csr is not None else Source.ISSUED,
                incident=context.incident,
            )
            context.logger.info("issued certificate %s for %s", made.facts.serial, device)
            issued.append(
                IssuedOut(
                    device=device,
                    office=office,
                    serial=made.facts.serial,
                    subject=made.facts.subject,
                    sans=list(made.facts.sans),
                    not_after=made.facts.not_after,
                    method="signed" if csr is not None else "generated",
                    certificate=made.certificate,
                    delivered_to=delivered,
                )
            )
    return IssuedCertificates(certificates=issued, serials=[i.serial for i in issued])
