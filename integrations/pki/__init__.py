"""Device certificates: find, revoke, check the CRL, issue again (issue 14).

- ``settings``: ``PkiSettings``, the ``pki`` slot (``TOCSIN_PKI__VAULT_URL``...);
- ``authority``: the interface every certificate authority gives Tocsin
  (``CertificateAuthority``: issue, sign, revoke, CRL, list and read), and where step-ca
  and EJBCA differ from Vault;
- ``vault``: ``VaultPKI``, HashiCorp Vault's PKI secrets engine, the first implementation;
- ``inventory``: Tocsin's own record office/device → certificate, in the journal's database
  (Vault cannot search certificates by subject);
- ``actions``: ``pki.find_certificates``, ``pki.revoke_certificates``, ``pki.verify_revoked``,
  ``pki.issue_certificates``; what they return in ``results``; the inventory brought up to
  date with the CA, and the ``<device>.<office>.<domain>`` names, in
  ``inventory_reconciliation``; a CSR's check and the key channel of a key the CA made in
  ``issuance``;
- ``fake``: ``FakeVaultPKI``, a Vault PKI engine on loopback whose CA (made with
  ``cryptography``) really issues, signs, revokes and publishes a signed CRL;
  ``sandbox``: office OF-1042 with two devices holding certificates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tocsin.integration import DeclaredSecret, Integration
from tocsin.integrations.pki.settings import PkiSettings

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tocsin.integration import CheckResult, SandboxSeed, SandboxService
    from tocsin.settings import SecretStore, Settings

VAULT_TOKEN = "vault_token"


def _check(settings: Settings, secrets: SecretStore) -> Sequence[CheckResult]:
    from tocsin.integrations.pki import checks

    return checks.check(settings, secrets)


def _configured(settings: Settings, secrets: SecretStore) -> bool:
    return bool(integration.settings_of(settings).vault_url)


def _sandbox(seed: SandboxSeed) -> SandboxService:
    from tocsin.integrations.pki.sandbox import start

    return start(seed)


integration: Integration[PkiSettings] = Integration(
    name="pki",
    description="Device certificates (HashiCorp Vault PKI): find an office's, revoke them and "
    "check the CRL, issue new ones",
    settings=PkiSettings,
    secrets=(
        DeclaredSecret(
            VAULT_TOKEN,
            "A Vault token whose policy allows the PKI paths the actions call (docs/pki.md)",
        ),
    ),
    action_modules=("tocsin.integrations.pki.actions",),
    action_settings={"pki.*": ("vault_url",), "pki.issue_certificates": ("role",)},
    sandbox=_sandbox,
    configured=_configured,
    check=_check,
)
