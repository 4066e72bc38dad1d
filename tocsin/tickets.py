"""The seam between Tocsin and a ticket system (Jira today; ServiceNow or others later).

A ticket system does four things for Tocsin: it tells whether an incoming webhook is
genuine (``verify_webhook``), turns it into a ``TicketTrigger`` naming the runbook to run
and its inputs (``parse_webhook``), and takes the run's progress comments and report file
(``comment``, ``attach``). The gateway and the engine only ever see ``TicketSystem``; an
implementation lives in ``integrations/`` (``integrations/jira.py``: ``JiraTickets``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from tocsin.errors import InputError

INPUTS_FORMAT_HINT = (
    "write one input per line as name=value (for example office_id=OF-1042), or several "
    "on one line separated by ';'; blank lines and lines starting with # are ignored"
)


@dataclass(frozen=True)
class TicketKeys:
    """What a ticket system's keys look like, and how to say so to a person who typed one wrong."""

    pattern: re.Pattern[str]
    example: str
    """A key of that form, like ``INC-1234``."""
    described: str
    """The form in words, like ``a project code, a dash and a number``."""

    def check(self, ticket: str) -> str:
        """The key without surrounding blanks; ``InputError`` when it is not of this form."""
        key = ticket.strip()
        if not self.pattern.fullmatch(key) or not SAFE_KEY.fullmatch(key):
            raise InputError(
                f"{ticket!r} is not a ticket key",
                f"ticket keys are {self.described}, like {self.example}",
            )
        return key

    def matches(self, ticket: str) -> bool:
        return bool(self.pattern.fullmatch(ticket)) and bool(SAFE_KEY.fullmatch(ticket))


SAFE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""Whatever the ticket system, a key names flow runs, tags, Slack channels and URL path
segments: letters, digits, ``-`` and ``_`` only, so that no key can become a path or markup."""

JIRA_KEYS = TicketKeys(
    re.compile(r"[A-Z][A-Z0-9_]{0,15}-[0-9]{1,9}"),
    example="INC-1234",
    described="a project code, a dash and a number",
)
"""Jira's keys (``INC-1234``): the default when no ticket system is configured."""


@dataclass(frozen=True)
class TicketTrigger:
    """A ticket asking Tocsin to run a runbook, as read from the ticket system's webhook."""

    ticket: str
    """The ticket's key, like ``INC-12``."""
    runbook: str
    """The runbook named in the ticket; empty when the ticket names none."""
    inputs: dict[str, str]
    title: str
    url: str
    """Where a person opens the ticket in a browser."""
    requested_by: str
    """Who triggered the webhook (a display name, else an account id)."""
    event: str
    """The ticket system's event name, like ``jira:issue_created``."""
    delivery_id: str | None = None
    """The webhook delivery's id, unchanged across the sender's retries (for deduplication)."""
    requester_email: str = ""
    """The e-mail of who triggered it, when the ticket system shares it (to find them in Slack)."""
    issue_type: str = ""
    """The ticket's type, like ``Incident`` (who may start what can depend on it)."""

    @property
    def project(self) -> str:
        """The ticket's project key: ``INC`` for ``INC-12``."""
        return self.ticket.rsplit("-", 1)[0]


@runtime_checkable
class TicketSystem(Protocol):
    """What Tocsin needs from a ticket system; errors are ``TocsinError`` subclasses."""

    name: str
    keys: TicketKeys
    """What this system's ticket keys look like; the gateway checks keys against it (the CLI,
    which does not build the system, against its integration's ``ticket_keys``: the same)."""

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> bool:
        """Whether ``body`` was signed by the ticket system (header names in lower case)."""
        ...

    def parse_webhook(self, body: bytes, *, delivery_id: str | None = None) -> TicketTrigger:
        """The trigger a verified webhook body carries; ``InputError`` when it cannot be read.

        The delivery id travels in a header, not in the body: the caller passes it here.
        """
        ...

    def comment(self, ticket: str, text: str) -> str:
        """Add a plain-text comment to the ticket; returns the comment's id."""
        ...

    def attach(self, ticket: str, filename: str, content: bytes, media_type: str) -> str:
        """Attach a file to the ticket; returns the attachment's id."""
        ...

    def ticket_url(self, ticket: str) -> str:
        """Where a person opens the ticket in a browser."""
        ...


def parse_inputs_text(text: str) -> dict[str, str]:
    """Read ``name=value`` inputs, one per line or ``;``-separated; ``InputError`` names the line.

    Names and values are stripped of surrounding spaces; a value may contain ``=`` (only
    the first one separates) but not ``;``. A name given twice is an error, since
    silently keeping either value could run the runbook against the wrong target.
    """
    inputs: dict[str, str] = {}
    first_seen: dict[str, int] = {}
    for line_number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        for item in stripped.split(";"):
            item = item.strip()
            if not item:
                continue
            name, equals, value = item.partition("=")
            name = name.strip()
            if not equals:
                raise InputError(
                    f"line {line_number} of the inputs, {_shown(item)}, is not name=value",
                    INPUTS_FORMAT_HINT,
                )
            if not name:
                raise InputError(
                    f"line {line_number} of the inputs, {_shown(item)}, has no name before '='",
                    INPUTS_FORMAT_HINT,
                )
            if name in inputs:
                raise InputError(
                    f"input {name!r} is given twice, on lines {first_seen[name]} "
                    f"and {line_number} of the inputs",
                    "keep only the value the runbook should use",
                )
            inputs[name] = value.strip()
            first_seen[name] = line_number
    return inputs


def _shown(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
