"""``tocsin integrations check notify``: the mail transport connects and authenticates,
sending nothing."""

from __future__ import annotations

from collections.abc import Sequence

from tocsin.errors import TocsinError
from tocsin.integration import CheckResult
from tocsin.integrations.notify import integration
from tocsin.mail import mail_sender
from tocsin.settings import SecretStore, Settings


def check(settings: Settings, secrets: SecretStore) -> Sequence[CheckResult]:
    notify = integration.settings_of(settings)
    try:
        sender = mail_sender(notify.transport, settings, secrets)
    except TocsinError as exc:
        return [CheckResult.problem("transport", exc)]
    try:
        sender.check()
    except TocsinError as exc:
        return [CheckResult.problem("transport", exc)]
    finally:
        sender.close()
    return [CheckResult("transport", True, f"{sender.describe()}: connected, nothing sent")]
