"""Heads of the chain published outside Tocsin (Slack, the ticket), as read back to verify them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PublishedHead:
    """A head hash found where Tocsin published it (a Slack message, a ticket comment)."""

    head: str
    seq: int | None
    """The record number the message names."""
    where: str
    """How a person finds it: ``Slack C0AUDIT message 1700000000.000100``."""


@dataclass
class AnchorPlace:
    """One place where heads are published, as ``verify`` read it."""

    place: str
    """``Slack channel #incident-audit``, ``Slack incident thread``, ``Jira INC-1``."""
    reachable: bool
    heads: list[PublishedHead] = field(default_factory=list)
    error: str | None = None
    """Why it could not be read (when not reachable)."""
    mismatched: list[PublishedHead] = field(default_factory=list)
    """Published heads that are not in the chain."""

    @property
    def state(self) -> str:
        if not self.reachable:
            return "unreachable"
        return "mismatch" if self.mismatched else "reachable"

    def as_data(self) -> dict[str, Any]:
        return {
            "place": self.place,
            "state": self.state,
            "heads": [{"head": h.head, "seq": h.seq, "where": h.where} for h in self.heads],
            "mismatched": [h.head for h in self.mismatched],
            "error": self.error,
        }


_PUBLISHED_HEAD = re.compile(
    r"Audit checkpoint(?: for (?P<ticket>[^\s:]+))?:?\s+record (?P<seq>\d+),\s+head\W{0,3}"
    r"sha256:(?P<head>[0-9a-f]{64})"
)


def heads_in_text(text: str, incident: str) -> list[tuple[int, str]]:
    """(record number, head) of each audit checkpoint of ``incident`` a published message states.

    The messages read ``Audit checkpoint for INC-1: record 52, head sha256:<hex>`` (the
    ticket's own comments leave out ``for INC-1``).
    """
    found = []
    for match in _PUBLISHED_HEAD.finditer(text):
        ticket = match.group("ticket")
        if ticket is not None and ticket.strip("*_`") != incident:
            continue
        found.append((int(match.group("seq")), match.group("head")))
    return found
