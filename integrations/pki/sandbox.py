"""The PKI in the sandbox: a fake Vault PKI whose office (the run's ``office_id`` input, or
OF-1042 "Courtage Dupont") has devices (the ``devices`` or ``device`` input, or PC-1 and PC-2) each holding
a certificate the fake issued, recorded in the inventory of the journal the runs use, so
that the demo's office run revokes real certificates."""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import tempfile
from collections.abc import Sequence

from tocsin.integration import SandboxSeed, SandboxService
from tocsin.integrations.pki import VAULT_TOKEN
from tocsin.integrations.pki.authority import CertificateFacts
from tocsin.integrations.pki.fake import (
    SANDBOX_DOMAIN,
    SANDBOX_ROLE,
    SANDBOX_TOKEN,
    FakeVaultPKI,
)
from tocsin.integrations.pki.inventory import Source, inventory_at
from tocsin.integrations.pki.inventory_reconciliation import common_name
from tocsin.integrations.pki.settings import PkiSettings
from tocsin.integrations.pki.vault import VaultPKI

SANDBOX_OFFICE = "OF-1042"
SANDBOX_DEVICES = ("PC-1", "PC-2")
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def office_devices(seed: SandboxSeed) -> tuple[str, list[str]]:
    """The office and devices the run names (``office_id``, ``devices`` as a list or
    ``PC-1,PC-2``, or one ``device``), else the sandbox's own."""
    office = seed.inputs.get("office_id")
    given = seed.inputs.get("devices") or seed.inputs.get("device")
    items: Sequence[object] = (
        given.split(",") if isinstance(given, str) else given if isinstance(given, list) else ()
    )
    devices = [str(d).strip() for d in items if _NAME.match(str(d).strip())]
    return (
        office if isinstance(office, str) and _NAME.match(office) else SANDBOX_OFFICE,
        devices or list(SANDBOX_DEVICES),
    )


def start(seed: SandboxSeed) -> SandboxService:
    """Start the fake Vault PKI and give each of the office's devices a certificate."""
    office, devices = office_devices(seed)
    fake = FakeVaultPKI().start(tls=seed.server_tls)
    pki: dict[str, object] = {
        "vault_url": fake.url,
        "mount": fake.mount,
        "role": SANDBOX_ROLE,
        "domain": SANDBOX_DOMAIN,
    }
    if seed.ca_bundle is not None:
        pki["ca_bundle"] = str(seed.ca_bundle)
    # Bundles whose key the CA made go to a 0700 folder of the sandbox's own.
    keys = tempfile.mkdtemp(prefix="tocsin-sandbox-keys-")
    atexit.register(_remove_if_empty, keys)  # a bundle written stays for its reader
    pki["key_channel"] = f"folder:{keys}"
    authority = VaultPKI(PkiSettings.model_validate(pki), SANDBOX_TOKEN, "sandbox").authority_id
    seeded: list[str] = []
    for device in devices:
        name = common_name(device, office, SANDBOX_DOMAIN)
        seeded.append(CertificateFacts.of(fake.issue_now(name)).serial)
    if seed.journal_url:
        with inventory_at(seed.journal_url) as inventory:
            # An earlier sandbox's fake may have listened on the same port: its rows are stale.
            inventory.forget(authority)
            for device, serial in zip(devices, seeded, strict=True):
                stored = fake.stored(serial)
                assert stored is not None
                inventory.record(
                    authority,
                    CertificateFacts.of(stored.certificate),
                    office=office,
                    device=device,
                    source=Source.ISSUED,
                    incident=seed.ticket,
                )
    return SandboxService(
        fake,
        settings={"pki": pki},
        secrets={VAULT_TOKEN: SANDBOX_TOKEN},
        notes=[
            f"Vault PKI at {fake.url} (mount {fake.mount}, role {SANDBOX_ROLE}): office "
            f"{office} has {len(devices)} device certificate(s) ({', '.join(devices)}) "
            f"in the inventory; new private keys go to {keys}"
        ],
    )


def _remove_if_empty(folder: str) -> None:
    with contextlib.suppress(OSError):
        os.rmdir(folder)
