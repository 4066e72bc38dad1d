"""Who hears about a run besides its journal: the announcers of the installed integrations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tocsin.announce import Announcer
from tocsin.integration import announcers_for as configured_announcers
from tocsin.journal import Journal
from tocsin.settings import Settings


def announcers_for(
    settings: Settings, journal: Journal, secrets: Any
) -> tuple[list[Announcer], list[tuple[str, str]]]:
    """Where people hear about runs: each installed integration's announcer that is configured
    (the Slack incident thread, the ticket); and (announcer, problem) for those configured but
    unusable (audited by the run)."""
    return configured_announcers(settings, journal, secrets, _report_for_ticket(settings))


def _report_for_ticket(settings: Settings) -> Callable[[str], tuple[str, bytes, str]]:
    def make(ticket: str) -> tuple[str, bytes, str]:
        from tocsin.evidence import incident_report

        content = incident_report(settings, ticket, fmt="html", lang="en", with_prefect=False)
        return f"{ticket}-report.html", content, "text/html"

    return make


__all__ = ["announcers_for"]
