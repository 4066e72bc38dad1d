"""The private side of ``pki.issue_certificates``: a CSR made on a device checked before the
CA signs it, and a key the CA made sent only to the key channel (``pki.key_channel``),
never to the outputs, the trail or the logs."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509

from tocsin.actions import ActionContext
from tocsin.errors import ActionError, ConfigurationError, TocsinError
from tocsin.integrations.pki import integration
from tocsin.integrations.pki.authority import IssuedCertificate
from tocsin.integrations.pki.vault import VaultPKI
from tocsin.secret_delivery import SecretDelivery, SecretNote, secret_channel

HANDLING = (
    "Install the certificate and its private key on the device (the key is in no other "
    "place: Vault does not keep it), then delete this file."
)


def checked_csr(name: str, device: str, pem: str | None) -> str | None:
    if pem is None:
        return None
    try:
        request = x509.load_pem_x509_csr(pem.strip().encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise ActionError(
            name,
            f"the CSR given for {device} is not a PEM certificate request; nothing was issued",
            "give the -----BEGIN CERTIFICATE REQUEST----- block the device made",
        ) from None
    if not request.is_signature_valid:
        raise ActionError(
            name,
            f"the CSR given for {device} has a signature that does not verify; nothing was issued",
            "make the CSR again on the device",
        )
    return pem.strip() + "\n"


def key_channel_for(context: ActionContext, generated: Sequence[str]) -> SecretDelivery | None:
    if not generated:
        return None
    spec = integration.settings_of(context.settings).key_channel
    if not spec:
        raise ConfigurationError(
            f"{', '.join(generated)} {'has' if len(generated) == 1 else 'have'} no CSR, and no "
            "channel is set for private keys the CA makes, so nothing was issued",
            "give each device's CSR in `csrs` (preferred: the key never leaves the device), "
            "or set TOCSIN_PKI__KEY_CHANNEL (folder:/path or slack-dm:U0123ABCD)",
        )
    return secret_channel(
        spec, context.settings, context.secrets, setting="TOCSIN_PKI__KEY_CHANNEL"
    )


def deliver_bundle(
    context: ActionContext,
    ca: VaultPKI,
    channel: SecretDelivery,
    made: IssuedCertificate,
    office: str,
    device: str,
) -> str:
    """Send the bundle to the key channel; when it cannot take it, the new certificate is
    revoked (its key would be lost) and the step fails."""
    assert made.private_key is not None
    bundle = "\n".join(
        part.strip() for part in (made.certificate, made.private_key, *made.ca_chain) if part
    )
    note = SecretNote(
        label=device,
        what=f"Certificate and private key for {device} of office {office} "
        f"(serial {made.facts.serial}, {made.facts.common_name})",
        incident=context.incident,
        step_id=context.step_id,
        secret=bundle,
        handling=HANDLING,
    )
    try:
        staged = channel.stage(note)
        return staged.commit()
    except TocsinError as exc:
        try:
            ca.revoke(made.facts.serial)
            undone = f"the new certificate {made.facts.serial} was revoked, since its key was not delivered"
        except TocsinError:
            undone = (
                f"the new certificate {made.facts.serial} could not be revoked: revoke it by hand"
            )
        raise ActionError(
            "pki.issue_certificates",
            f"the key channel refused the bundle of {device}: {exc.message}; {undone}",
            exc.hint,
        ) from None
