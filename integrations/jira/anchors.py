"""Audit heads on the Jira ticket read back for ``tocsin audit verify``: the comments the
ticket announcer wrote (``tocsin.ticket_updates``)."""

from __future__ import annotations

from tocsin.audit import AnchorPlace, PublishedHead, heads_in_text
from tocsin.errors import message_of
from tocsin.integration import HeadsQuery
from tocsin.integrations.jira import integration
from tocsin.integrations.jira.client import JiraTickets

READ_TIMEOUT_SECONDS = 10.0
READ_RETRY_WAIT_SECONDS = 2.0


def published_heads(query: HeadsQuery) -> list[AnchorPlace]:
    """The heads in the ticket's comments; an unreachable place when Jira is not set up here
    but the trail says heads were published there."""
    ticket = query.ticket
    place = f"Jira {ticket}"
    if not integration.settings_of(query.settings).url:
        if any(where.startswith("jira:") for where in query.recorded):
            return [
                AnchorPlace(
                    place,
                    reachable=False,
                    error="Jira is not configured here (TOCSIN_JIRA__URL)",
                )
            ]
        return []
    try:
        tickets = JiraTickets.from_settings(query.settings, query.secrets)
        # A person waits for verify: a slow or busy Jira becomes a note, not minutes of retries.
        tickets.timeout_seconds = min(tickets.timeout_seconds, READ_TIMEOUT_SECONDS)
        tickets.max_retry_wait_seconds = min(
            tickets.max_retry_wait_seconds, READ_RETRY_WAIT_SECONDS
        )
        comments = tickets.comments(ticket)
    except Exception as exc:  # a place out of reach is a note, never a crash of verify
        return [AnchorPlace(place, reachable=False, error=message_of(exc))]
    heads = []
    for comment in comments:
        author = comment.get("author") if isinstance(comment.get("author"), dict) else {}
        who = (author or {}).get("displayName") or (author or {}).get("accountId") or "someone"
        for seq, head in heads_in_text(str(comment.get("body") or ""), ticket):
            heads.append(
                PublishedHead(head, seq, f"Jira {ticket} comment {comment.get('id')} by {who}")
            )
    return [AnchorPlace(place, reachable=True, heads=heads)]
