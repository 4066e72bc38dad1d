"""Which certificate authority Tocsin revokes and issues device certificates with, and how."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

MOUNT_PATTERN = r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$"


class PkiSettings(BaseModel):
    """The ``pki`` slot of the settings (``TOCSIN_PKI__VAULT_URL``...): a HashiCorp Vault
    PKI secrets engine (docs/pki.md)."""

    model_config = ConfigDict(extra="forbid")

    vault_url: str | None = Field(
        None, description="Base URL of the Vault server (https://vault.example:8200), without /v1"
    )
    mount: str = Field(
        "pki",
        pattern=MOUNT_PATTERN,
        description="Path the PKI secrets engine is mounted at (pki, pki_int, or pki/offices)",
    )
    role: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="The PKI role device certificates are issued and signed under "
        "(its allowed_domains must admit the names Tocsin asks for)",
    )
    namespace: str | None = Field(
        None,
        description="Vault Enterprise namespace the engine lives in (sent as X-Vault-Namespace); "
        "none: the root namespace",
    )
    domain: str | None = Field(
        None,
        description="Domain device certificates are named under: a device PC-1 of office OF-1042 "
        "gets the common name pc-1.of-1042.<domain>; reconciling with the CA reads the office "
        "and the device back from that name",
    )
    ttl: str | None = Field(
        None,
        pattern=r"^\d+[smhd]$",
        description="Lifetime asked for new certificates (720h, 90d); none: the role's default",
    )
    key_channel: str | None = Field(
        None,
        description="Where a certificate bundle whose private key the CA generated goes "
        "(folder:/path, slack-dm:U0123ABCD); none: only devices with a CSR made on the device "
        "get a certificate",
    )
    ca_bundle: Path | None = Field(
        None,
        description="PEM file of CA certificates trusted besides the system's, to reach Vault "
        "(an internal CA; the sandbox sets its own)",
    )
    timeout_seconds: float = Field(30.0, gt=0, description="How long one call to Vault may take")
    max_retries: int = Field(
        4,
        ge=0,
        le=20,
        description="How many times a call Vault answered 412 (not yet consistent), 429 or "
        "5xx is sent again",
    )
    max_retry_wait_seconds: float = Field(
        10.0, gt=0, description="The longest wait before one retry (the backoff doubles up to it)"
    )
    max_reconcile: int = Field(
        5000,
        ge=1,
        description="Most certificates read from the CA when reconciling the inventory "
        "(one read per certificate: Vault cannot search by subject)",
    )
