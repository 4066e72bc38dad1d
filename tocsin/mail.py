"""Sending e-mail: the seam between the ``notify`` actions and the services that carry mail.

A ``MailSender`` sends one message at a time to one recipient. Senders are offered by
integrations (``Integration.mail_senders``, by name: ``smtp`` by notify, ``graph`` by
Microsoft) and chosen by the ``notify.transport`` setting; ``mail_sender`` finds one.

Exactly once. A campaign records each recipient before and after sending (the notify
integration's delivery ledger). A sender calls ``committing`` just before the point after
which the message may have left (SMTP's final dot, Graph's POST of ``sendMail``), so that a
process killed in the middle leaves each recipient in one of three states the next run can
tell apart: not started, started but never committed (send it), committed but not confirmed
(in doubt: ``reconcile`` asks the service when it can tell, else the recipient is reported
as in doubt and not sent again).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from tocsin.errors import ConfigurationError

if TYPE_CHECKING:
    from tocsin.settings import SecretStore, Settings


@dataclass(frozen=True, repr=False)
class OutgoingMail:
    """One message to one recipient; its repr shows neither the address nor the text."""

    to: str
    subject: str
    text: str
    html: str | None
    message_id: str
    """``<...@...>``, the same on every attempt, so that a service that keeps sent mail can
    tell whether this one left (``reconcile``)."""
    from_address: str
    from_name: str = ""
    reply_to: str = ""
    language: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"OutgoingMail(message_id={self.message_id!r}, language={self.language!r})"


class SendOutcome(StrEnum):
    SENT = "sent"
    """The service accepted the message (SMTP 250, Graph 202)."""
    REFUSED = "refused"
    """The service refused it for good (bad address, 5xx): retrying would not help."""
    RETRY = "retry"
    """A transient failure (4xx, 429, a dropped connection): send it again later."""
    UNCONFIRMED = "unconfirmed"
    """Committed, and no answer came (the connection dropped after SMTP's final dot, a
    timeout on Graph's POST): it may have left. The campaign asks ``reconcile`` when the
    sender can tell, else settles the recipient in doubt; it never sends it again blindly."""


@dataclass(frozen=True)
class SendResult:
    outcome: SendOutcome
    detail: str = ""
    """What the service said (``550 5.1.1 mailbox unavailable``), never the address."""
    retry_after: float | None = None
    """Seconds the service asked to wait (429 Retry-After), when it said."""


class MailSender(Protocol):
    """A way to send mail (one SMTP connection, one Graph mailbox)."""

    name: str
    """``smtp``, ``graph``: shown in the plan and the trail."""
    concurrency: int
    """How many messages may be in flight at once (Graph: 4 per mailbox; SMTP: 1 per
    connection)."""
    can_reconcile: bool
    """Whether ``reconcile`` can answer (Graph reads Sent Items; SMTP cannot tell)."""

    def describe(self) -> str:
        """Where mail goes, for the plan: ``SMTP mail.example.be:587 (STARTTLS) as notices@...``."""
        ...

    def check(self) -> None:
        """Connect and authenticate, sending nothing; raise a ``TocsinError`` saying what to fix."""
        ...

    def send(self, mail: OutgoingMail, committing: Callable[[], None]) -> SendResult:
        """Send ``mail``; call ``committing()`` right before the point of no return. Expected
        failures are a ``SendResult``, never an exception; a ``TocsinError`` only for a
        configuration that cannot work (wrong password: nothing will be sent)."""
        ...

    def reconcile(self, mail: OutgoingMail) -> bool | None:
        """Whether a message committed before a crash left: True, False, or None (cannot tell)."""
        ...

    def close(self) -> None: ...


MailSenderFactory = Callable[["Settings", "SecretStore"], MailSender]


def mail_sender(name: str, settings: Settings, secrets: SecretStore) -> MailSender:
    """The sender ``name`` of an installed integration (``Integration.mail_senders``)."""
    from tocsin.integration import offered

    senders: dict[str, MailSenderFactory] = offered("mail_senders")
    factory = senders.get(name)
    if factory is None:
        raise ConfigurationError(
            f"no installed integration sends mail by {name!r}",
            f"set notify.transport to one of: {', '.join(sorted(senders)) or 'none installed'}",
        )
    return factory(settings, secrets)


__all__ = [
    "MailSender",
    "MailSenderFactory",
    "OutgoingMail",
    "SendOutcome",
    "SendResult",
    "mail_sender",
]
