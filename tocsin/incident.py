"""The incident a run belongs to, identified by its ticket key (``INC-1234``)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from tocsin.errors import InputError

TICKET_PATTERN = re.compile(r"^[A-Z][A-Z0-9_]{0,15}-[0-9]{1,9}$")


def check_ticket(ticket: str) -> str:
    """Return the ticket key, or raise ``InputError`` when it does not look like one."""
    key = ticket.strip()
    if not TICKET_PATTERN.match(key):
        raise InputError(
            f"{ticket!r} is not a ticket key",
            "ticket keys are a project code, a dash and a number, like INC-1234",
        )
    return key


GATEWAY_CHAIN = "GATEWAY"
"""The gateway's own audit chain: requests refused at the door, refused starts."""


def check_chain(name: str) -> str:
    """An incident's ticket key, or the gateway's own chain (for the audit commands)."""
    return GATEWAY_CHAIN if name.strip() == GATEWAY_CHAIN else check_ticket(name)


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
        check_ticket(self.ticket)
        if not self.detected_at:
            object.__setattr__(self, "detected_at", self.started_at)

    def as_template_values(self) -> dict[str, Any]:
        return asdict(self)
