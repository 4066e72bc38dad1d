"""Who hears about a run besides its journal: the Slack incident thread and the ticket."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tocsin.announce import Announcer
from tocsin.errors import TocsinError
from tocsin.integrations.slack import SlackCredentials
from tocsin.journal import Journal
from tocsin.settings import Settings


def announcers_for(
    settings: Settings, journal: Journal, secrets: Any
) -> tuple[list[Announcer], list[tuple[str, str]]]:
    """Where people hear about runs: the Slack incident thread and the ticket, when configured;
    and (announcer, problem) for those configured but unusable (audited by the run)."""
    announcers: list[Announcer] = []
    problems: list[tuple[str, str]] = []
    slack = settings.slack
    if slack.incident_channel or slack.channel_per_incident:
        token = secrets.get("slack_bot_token")
        if token:
            from tocsin.integrations.slack_incident import SlackIncidentAnnouncer

            credentials = SlackCredentials(
                token=token,
                base_url=settings.slack_api_url,
                timeout_seconds=settings.http_timeout_seconds,
            )
            announcers.append(SlackIncidentAnnouncer(credentials, slack, journal))
        else:
            problems.append(("slack", "secret slack_bot_token is not set"))
    if settings.jira.url:
        from tocsin.integrations.jira import JiraTickets
        from tocsin.ticket_updates import TicketAnnouncer

        try:
            tickets = JiraTickets.from_settings(settings, secrets)
        except TocsinError as exc:
            problems.append(("jira", exc.message))
        else:
            announcers.append(
                TicketAnnouncer(
                    tickets, _report_for_ticket(settings) if settings.jira.attach_report else None
                )
            )
    return announcers, problems


def _report_for_ticket(settings: Settings) -> Callable[[str], tuple[str, bytes, str]]:
    def make(ticket: str) -> tuple[str, bytes, str]:
        from tocsin.evidence import incident_report

        content = incident_report(settings, ticket, fmt="html", lang="en", with_prefect=False)
        return f"{ticket}-report.html", content, "text/html"

    return make


__all__ = ["announcers_for"]
