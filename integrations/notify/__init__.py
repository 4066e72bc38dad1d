"""Communicating: to the office's staff, to its clients, to the authorities (issue 15).

- ``settings``: ``NotifySettings``, the ``notify`` slot (``TOCSIN_NOTIFY__SMTP_HOST``...);
- ``templates/`` and ``messages``: the shipped message templates (French, Dutch, English),
  each with an id and a version, rendered in Tocsin's sandboxed Jinja, with the
  anti-phishing paragraph every client message carries;
- ``recipients``: a recipient list from a CSV file of the recipients folder, or from an
  earlier step's output, checked row by row;
- ``ledger``: each recipient's delivery in the journal's database, written before and
  after sending, so that a campaign killed and resumed reaches everyone exactly once;
- ``pacing``: the configured rate (messages per minute, recipients per day);
- ``campaign``: one campaign's sending loop over a ``tocsin.mail.MailSender``;
- ``smtp``: ``SmtpSender`` (STARTTLS or TLS, AUTH), the ``smtp`` mail sender;
- ``actions``: ``notify.staff``, ``notify.clients``; ``authority_actions``:
  ``notify.draft_breach_notification`` (GDPR art. 33(3), APD/GBA or CNIL);
- ``fake_smtp``: a real SMTP server (aiosmtpd) with STARTTLS and AUTH that counts what
  it receives; ``sandbox``: it, for the sandbox.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tocsin.integration import DeclaredSecret, Integration
from tocsin.integrations.notify.settings import NotifySettings

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tocsin.integration import CheckResult, SandboxSeed, SandboxService
    from tocsin.mail import MailSender
    from tocsin.settings import SecretStore, Settings

SMTP_PASSWORD = "smtp_password"


def _check(settings: Settings, secrets: SecretStore) -> Sequence[CheckResult]:
    from tocsin.integrations.notify import checks

    return checks.check(settings, secrets)


def _configured(settings: Settings, secrets: SecretStore) -> bool:
    notify = integration.settings_of(settings)
    return bool(notify.from_address) and (notify.transport != "smtp" or bool(notify.smtp_host))


def _sandbox(seed: SandboxSeed) -> SandboxService:
    from tocsin.integrations.notify.sandbox import start

    return start(seed)


def _smtp_sender(settings: Settings, secrets: SecretStore) -> MailSender:
    from tocsin.integrations.notify.smtp import SmtpSender

    return SmtpSender.from_settings(settings, secrets)


integration: Integration[NotifySettings] = Integration(
    name="notify",
    description="Messages to the office's staff, its clients (e-mail campaigns sent exactly "
    "once) and drafts for the data-protection authority",
    settings=NotifySettings,
    secrets=(DeclaredSecret(SMTP_PASSWORD, "Password of notify.smtp_username at the SMTP relay"),),
    action_modules=(
        "tocsin.integrations.notify.actions",
        "tocsin.integrations.notify.authority_actions",
    ),
    action_settings={"notify.clients": ("from_address",)},
    sandbox=_sandbox,
    configured=_configured,
    check=_check,
    mail_senders={"smtp": _smtp_sender},
)
