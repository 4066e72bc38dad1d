"""Who may start which runbook from chat (Slack) or a ticket, and who may read an incident's status.

Starting a run is powerful: the steps before its first gate run at once. Live, nobody
may start a runbook from Slack or Jira unless a rule of ``access.start`` says so (deny by
default); the sandbox, with no rule, lets anyone try. The CLI is not governed here:
whoever runs ``tocsin`` on a machine with the journal and the signing key is trusted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tocsin.settings import Settings, StartRule

MemberOf = Callable[[str, str], bool]
"""``member_of(user, usergroup)``: whether the chat user is in the user group now (as the
integration keeping user groups says: Slack's)."""


@dataclass(frozen=True)
class ChatRequester:
    """Who typed ``/tocsin`` in chat, and in which channel."""

    user: str
    channel: str


@dataclass(frozen=True)
class TicketRequester:
    """The ticket that asks for a run: its project and issue type."""

    project: str
    issue_type: str


def _names(rule: StartRule, runbook_id: str) -> bool:
    return "*" in rule.runbooks or runbook_id in rule.runbooks


def _chat_rule_matches(rule: StartRule, who: ChatRequester, member_of: MemberOf) -> bool:
    if not (rule.users or rule.usergroups or rule.channels):
        return False  # a rule for tickets only
    if rule.channels and who.channel not in rule.channels:
        return False
    if rule.users or rule.usergroups:
        return who.user in rule.users or any(member_of(who.user, g) for g in rule.usergroups)
    return True


def _ticket_rule_matches(rule: StartRule, ticket: TicketRequester) -> bool:
    if not rule.jira_projects or ticket.project not in rule.jira_projects:
        return False
    return not rule.jira_issue_types or ticket.issue_type in rule.jira_issue_types


class StartPolicy:
    """The ``access.start`` rules of the settings, judged for one request."""

    def __init__(self, settings: Settings) -> None:
        self.rules = list(settings.access.start)
        self.open = settings.mode == "sandbox" and not self.rules

    def chat_may_start(self, runbook_id: str, who: ChatRequester, member_of: MemberOf) -> bool:
        if self.open:
            return True
        return any(
            _names(rule, runbook_id) and _chat_rule_matches(rule, who, member_of)
            for rule in self.rules
        )

    def chat_runbooks(
        self, known: Iterable[str], who: ChatRequester, member_of: MemberOf
    ) -> list[str]:
        """The runbooks of ``known`` this person may start here (to list in a refusal)."""
        return sorted(r for r in known if self.chat_may_start(r, who, member_of))

    def ticket_may_start(self, runbook_id: str, ticket: TicketRequester) -> bool:
        if self.open:
            return True
        return any(
            _names(rule, runbook_id) and _ticket_rule_matches(rule, ticket) for rule in self.rules
        )


def refusal_for_chat(runbook_id: str, who: ChatRequester) -> str:
    """What a person who may not start ``runbook_id`` is told (never the catalogue)."""
    return (
        f"you may not start {runbook_id!r} from here; ask a Tocsin administrator to add you "
        "(or your user group, or this channel) to the access.start settings"
    )


def refusal_for_ticket(runbook_id: str, ticket: TicketRequester) -> str:
    return (
        f"tickets of project {ticket.project!r} (type {ticket.issue_type or 'unknown'!r}) may not "
        f"start {runbook_id!r}; an administrator allows them in the access.start settings "
        "(jira_projects, jira_issue_types)"
    )


__all__ = [
    "MemberOf",
    "ChatRequester",
    "StartPolicy",
    "TicketRequester",
    "refusal_for_chat",
    "refusal_for_ticket",
]
