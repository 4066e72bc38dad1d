"""Jira in the sandbox: a fake site holding the incident's ticket."""

from __future__ import annotations

from tocsin.integration import SandboxSeed, SandboxService
from tocsin.integrations.jira.client import TOKEN_SECRET, WEBHOOK_SECRET
from tocsin.integrations.jira.fake import (
    SANDBOX_JIRA_TOKEN,
    SANDBOX_JIRA_USER,
    SANDBOX_JIRA_WEBHOOK_SECRET,
    FakeJira,
)


def start(seed: SandboxSeed) -> SandboxService:
    """Start the fake Jira with the run's ticket; runs comment on it and attach the report."""
    ticket = seed.ticket
    issues = {ticket: {"summary": seed.title or f"Incident {ticket}"}} if ticket else None
    fake = FakeJira(issues=issues).start(tls=seed.server_tls)
    jira: dict[str, object] = {"url": fake.url, "user": SANDBOX_JIRA_USER}
    if seed.ca_bundle is not None:
        jira["ca_bundle"] = str(seed.ca_bundle)
    return SandboxService(
        fake,
        settings={"jira": jira},
        secrets={TOKEN_SECRET: SANDBOX_JIRA_TOKEN, WEBHOOK_SECRET: SANDBOX_JIRA_WEBHOOK_SECRET},
    )
