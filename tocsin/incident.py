"""The incident a run belongs to, identified by its ticket key (``INC-1234`` in Jira).

What a key looks like is the ticket system's to say (``TicketKeys``); Jira's form is the
default. Whatever the form, a key is letters, digits, ``-`` and ``_`` only (``SAFE_KEY``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from tocsin.errors import InputError
from tocsin.tickets import JIRA_KEYS, SAFE_KEY, TicketKeys


def check_ticket(ticket: str, keys: TicketKeys = JIRA_KEYS) -> str:
    """Return the ticket key, or raise ``InputError`` when it is not of the form ``keys`` says."""
    return keys.check(ticket)


GATEWAY_CHAIN = "GATEWAY"
"""The gateway's own audit chain: requests refused at the door, refused starts."""


def check_chain(name: str, keys: TicketKeys = JIRA_KEYS) -> str:
    """An incident's ticket key, or the gateway's own chain (for the audit commands)."""
    return GATEWAY_CHAIN if name.strip() == GATEWAY_CHAIN else check_ticket(name, keys)


@dataclass(frozen=True)
class Incident:
    """What templates read as ``incident.*``."""

    ticket: str
    title: str = ""
    url: str = ""
    requested_by: str = ""
    requested_via: str = "cli"
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    detected_at: str = ""
    """When the office became aware of the breach (GDPR's 72 h run from then); defaults to started_at."""

    def __post_init__(self) -> None:
        # The entry points checked the key against the ticket system's form; here only what
        # any key must be, since the flow also receives incidents through Prefect's API.
        if not SAFE_KEY.fullmatch(self.ticket):
            raise InputError(
                f"{self.ticket!r} is not a ticket key",
                "ticket keys are letters, digits, '-' and '_' only",
            )
        if not self.detected_at:
            object.__setattr__(self, "detected_at", self.started_at)

    def as_template_values(self) -> dict[str, Any]:
        return asdict(self)
