"""``tocsin integrations check pki``: the token is valid, may do what the actions do, the
role exists, and the CA's CRL is downloadable and signed by the CA; nothing is changed.

The token is looked up (``auth/token/lookup-self``), its capabilities on each path the
actions call are read (``sys/capabilities-self``: it only reports), the role is read, and
the CRL and the CA certificate are downloaded and checked with ``cryptography``.
"""

from __future__ import annotations

from collections.abc import Sequence

from tocsin.errors import TocsinError
from tocsin.integration import CheckResult
from tocsin.integrations.pki import integration
from tocsin.integrations.pki.authority import verify_crl
from tocsin.integrations.pki.vault import VaultPKI
from tocsin.settings import SecretStore, Settings


def check(settings: Settings, secrets: SecretStore) -> Sequence[CheckResult]:
    try:
        vault = VaultPKI.from_secrets(settings, secrets, "check")
    except TocsinError as exc:
        return [CheckResult.problem("token", exc)]
    results = [_token(vault)]
    if not results[0].ok:
        return results
    return [
        *results,
        _capabilities(vault),
        _role(vault),
        _crl(vault),
        _key_channel(settings, secrets),
    ]


def _token(vault: VaultPKI) -> CheckResult:
    try:
        found = vault.lookup_self()
    except TocsinError as exc:
        return CheckResult.problem("token", exc)
    policies = ", ".join(str(p) for p in found.get("policies") or []) or "none"
    expires = found.get("expire_time") or "never"
    return CheckResult(
        "token",
        True,
        f"valid ({found.get('display_name') or 'token'}; policies {policies}; expires {expires})",
    )


def needed_capabilities(vault: VaultPKI) -> dict[str, tuple[str, str]]:
    """Each path the actions call → (capability, what needs it)."""
    role = vault.settings.role or "<role>"
    return {
        f"{vault.mount}/issue/{role}": ("update", "pki.issue_certificates without a CSR"),
        f"{vault.mount}/sign/{role}": ("update", "pki.issue_certificates with a CSR"),
        f"{vault.mount}/revoke": ("update", "pki.revoke_certificates"),
        f"{vault.mount}/certs": ("list", "pki.find_certificates with reconcile"),
    }


def _capabilities(vault: VaultPKI) -> CheckResult:
    needed = needed_capabilities(vault)
    try:
        held = vault.capabilities(list(needed))
    except TocsinError as exc:
        return CheckResult.problem("policy", exc)
    missing = [
        (path, capability, who)
        for path, (capability, who) in needed.items()
        if capability not in held.get(path, []) and "root" not in held.get(path, [])
    ]
    if not missing:
        return CheckResult(
            "policy", True, "the token may issue, sign, revoke and list certificates"
        )
    return CheckResult(
        "policy",
        False,
        "the token's policies lack "
        + "; ".join(f"`{cap}` on {path} ({who})" for path, cap, who in missing),
        "add to one of its policies: "
        + " ".join(f'path "{path}" {{ capabilities = ["{cap}"] }}' for path, cap, _ in missing)
        + " (docs/pki.md, The Vault policy)",
    )


def _role(vault: VaultPKI) -> CheckResult:
    if not vault.settings.role:
        return CheckResult(
            "role",
            False,
            "TOCSIN_PKI__ROLE is not set",
            "set the role certificates are issued under",
        )
    try:
        role = vault.read_role()
    except TocsinError as exc:
        return CheckResult.problem("role", exc)
    domains = [str(d) for d in role.get("allowed_domains") or []]
    domain = vault.settings.domain
    if domain and domains and not any(domain == d or domain.endswith("." + d) for d in domains):
        return CheckResult(
            "role",
            False,
            f"role {vault.settings.role} allows {', '.join(domains)}, not {domain} "
            "(TOCSIN_PKI__DOMAIN)",
            "add the domain to the role's allowed_domains (with allow_subdomains), or fix "
            "TOCSIN_PKI__DOMAIN",
        )
    if role.get("no_store"):
        return CheckResult(
            "role",
            False,
            f"role {vault.settings.role} has no_store set: its certificates cannot be listed "
            "or revoked by serial",
            f"vault write {vault.mount}/roles/{vault.settings.role} no_store=false",
        )
    return CheckResult(
        "role",
        True,
        f"role {vault.settings.role} readable (allowed domains {', '.join(domains) or 'any'})",
    )


def _crl(vault: VaultPKI) -> CheckResult:
    try:
        crl = vault.crl()
        ca = vault.ca_certificate()
        checked = verify_crl(crl, ca, [])
    except TocsinError as exc:
        return CheckResult.problem("CRL", exc)
    except ValueError as exc:
        return CheckResult(
            "CRL",
            False,
            f"the CRL at /v1/{vault.mount}/crl is not the CA's: {exc}",
            f"check TOCSIN_PKI__MOUNT; rotate the CRL (vault read {vault.mount}/crl/rotate)",
        )
    return CheckResult(
        "CRL",
        True,
        f"downloaded and signed by {ca.subject.rfc4514_string()} (number {checked.crl_number}, "
        f"{len(list(crl))} revoked, next update {checked.next_update or 'not said'})",
    )


def _key_channel(settings: Settings, secrets: SecretStore) -> CheckResult:
    from tocsin.secret_delivery import secret_channel

    spec = integration.settings_of(settings).key_channel
    if not spec:
        return CheckResult(
            "key channel",
            True,
            "none set: only devices with a CSR get a certificate (TOCSIN_PKI__KEY_CHANNEL)",
        )
    try:
        secret_channel(spec, settings, secrets, setting="TOCSIN_PKI__KEY_CHANNEL")
    except TocsinError as exc:
        return CheckResult.problem("key channel", exc)
    return CheckResult("key channel", True, f"bundles with a CA-made key go to {spec}")
