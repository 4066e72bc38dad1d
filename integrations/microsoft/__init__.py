"""Microsoft 365: contain and clean a compromised user through Microsoft Graph.

- ``settings``: ``MicrosoftSettings``, the ``microsoft`` slot (``TOCSIN_MICROSOFT__TENANT_ID``...);
- ``client``: ``MicrosoftApi`` and ``Graph`` (calls, paging, the error hook), over
  ``tokens`` (``MicrosoftCredentials``: msal's confidential client and its token cache),
  ``throttling`` (Retry-After, backoff), ``batch`` (``$batch``), ``graph_errors`` (errors
  naming the permission to grant) and ``response``;
- ``permissions``: which application permission each Graph call needs;
- ``defender``: ``DefenderForEndpoint``, Defender for Endpoint's API (machines, isolation);
- ``exchange``: ``ExchangeOnline``, Exchange Online's admin API (``InvokeCommand``, not a
  documented public API) for what Graph cannot reach (forwarding, hidden rules, protocols,
  delegates);
- ``mail_sender``: ``GraphMailSender``, the ``graph`` way of sending mail (``tocsin.mail``):
  ``sendMail`` from ``microsoft.mail_sender``, 4 at a time, reconciled from Sent Items;
- ``password_delivery``: where ``microsoft.reset_password``'s temporary password goes;
- ``actions``: ``microsoft.disable_user``, ``microsoft.revoke_sessions``,
  ``microsoft.remove_inbox_rules``..., ``microsoft.convert_to_shared_mailbox`` (a leaver's
  mailbox handed over), ``defender.isolate_device``, ``intune.wipe_device``...,
  one module per job (docs/microsoft.md lists them with their permissions);
- ``fake``: ``FakeMicrosoft``, the identity platform and Graph on loopback (with
  ``fake_entra``, ``fake_mail`` (sendMail, Sent Items, Outlook's throttling), ``fake_exchange`` with ``fake_exchange_access`` and ``fake_exchange_state``,
  and ``fake_devices``: Defender for Endpoint and Intune);
  ``sandbox``: a tenant with one compromised mailbox and a leaver still active (``fake_leaver``),
  and the runs ``tocsin demo`` makes on it (``sandbox.demo_runs``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tocsin.integration import DeclaredSecret, Integration
from tocsin.integrations.microsoft.settings import MicrosoftSettings

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from tocsin.integration import CheckResult, DemoRun, SandboxSeed, SandboxService
    from tocsin.mail import MailSender
    from tocsin.settings import SecretStore, Settings

SERVICE = "Microsoft 365"
"""How errors name the service."""
CLIENT_SECRET = "microsoft_client_secret"
CERTIFICATE_KEY_SECRET = "microsoft_certificate_key"
CERTIFICATE_THUMBPRINT_SECRET = "microsoft_certificate_thumbprint"


def _check(settings: Settings, secrets: SecretStore) -> Sequence[CheckResult]:
    from tocsin.integrations.microsoft import checks

    return checks.check(settings, secrets)


def _configured(settings: Settings, secrets: SecretStore) -> bool:
    from tocsin.integrations.microsoft import checks

    return checks.is_configured(settings, secrets)


def _sandbox(seed: SandboxSeed) -> SandboxService:
    from tocsin.integrations.microsoft.sandbox import start

    return start(seed)


def _graph_mail_sender(settings: Settings, secrets: SecretStore) -> MailSender:
    from tocsin.integrations.microsoft.mail_sender import graph_mail_sender

    return graph_mail_sender(settings, secrets)


def _demo_runs() -> Mapping[str, DemoRun]:
    from tocsin.integrations.microsoft.sandbox import demo_runs

    return demo_runs()


integration: Integration[MicrosoftSettings] = Integration(
    name="microsoft",
    description="Microsoft 365: block, sign out and clean a compromised user (Entra ID, Exchange "
    "Online), isolate, lock or wipe their devices (Defender for Endpoint, Intune)",
    settings=MicrosoftSettings,
    secrets=(
        DeclaredSecret(
            CLIENT_SECRET,
            "The Tocsin app registration's client secret (its Value, not its Secret ID)",
        ),
        DeclaredSecret(
            CERTIFICATE_KEY_SECRET,
            "Instead of a client secret: the PEM private key of the certificate uploaded to "
            "the app registration",
        ),
        DeclaredSecret(
            CERTIFICATE_THUMBPRINT_SECRET,
            "With the certificate key: the certificate's SHA-1 thumbprint (hex)",
        ),
    ),
    action_modules=(
        "tocsin.integrations.microsoft.actions.account",
        "tocsin.integrations.microsoft.actions.sign_in_methods",
        "tocsin.integrations.microsoft.actions.consents",
        "tocsin.integrations.microsoft.actions.sign_ins",
        "tocsin.integrations.microsoft.actions.mailbox",
        "tocsin.integrations.microsoft.actions.mailbox_access",
        "tocsin.integrations.microsoft.actions.sending",
        "tocsin.integrations.microsoft.actions.entra",
        "tocsin.integrations.microsoft.actions.devices",
        "tocsin.integrations.microsoft.actions.intune",
        "tocsin.integrations.microsoft.actions.handover",
    ),
    action_settings={
        pattern: ("tenant_id", "client_id") for pattern in ("microsoft.*", "intune.*", "defender.*")
    },
    mail_senders={"graph": _graph_mail_sender},
    sandbox=_sandbox,
    demo_runs=_demo_runs,
    configured=_configured,
    check=_check,
)
