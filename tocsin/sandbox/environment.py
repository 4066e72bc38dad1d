"""The sandbox: fake Slack and platform servers on loopback, and the settings that point runs at them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from tocsin.sandbox.jira_api import (
    SANDBOX_JIRA_TOKEN,
    SANDBOX_JIRA_USER,
    SANDBOX_JIRA_WEBHOOK_SECRET,
    FakeJira,
)
from tocsin.sandbox.platform_api import (
    SANDBOX_PLATFORM_TOKEN,
    Account,
    Device,
    FakePlatform,
    Office,
)
from tocsin.sandbox.slack_api import SANDBOX_BOT_TOKEN, FakeSlack, SlackChannel

SANDBOX_CHANNELS = (
    SlackChannel("C0INCIDENTS", "support-incidents"),
    SlackChannel("C0ONCALL", "support-oncall"),
    SlackChannel("C0SECURITY", "incidents"),
    SlackChannel("C0AUDIT", "incident-audit"),
)
SANDBOX_ANCHOR_CHANNEL = "#incident-audit"
SANDBOX_INCIDENT_CHANNEL = "#support-incidents"
SANDBOX_SIGNING_SECRET = "sandbox-slack-signing-secret"
"""The Slack app signing secret of the sandbox: the gateway checks it, the simulated Slack signs with it."""


class Sandbox:
    """Starts the fakes (Slack, the platform, Jira); ``environment`` holds the TOCSIN_* variables
    a run and the gateway need to use them. ``ticket`` is created in the fake Jira."""

    def __init__(
        self,
        inputs: Mapping[str, Any] | None = None,
        usergroups: Mapping[str, list[str]] | None = None,
        *,
        ticket: str | None = None,
        title: str = "",
    ) -> None:
        values = dict(inputs or {})
        office_id = str(values.get("office_id") or "OF-1042")
        devices = values.get("devices") or ["PC-1", "PC-2"]
        office = Office(
            id=office_id,
            name=str(values.get("office_name") or "Sandbox office"),
            devices=[Device(str(d), f"CERT-{i:04d}") for i, d in enumerate(devices, start=1)],
            accounts=[Account("A-1", "manager"), Account("A-2", "assistant")],
            open_sessions=3,
        )
        self.slack = FakeSlack(channels=SANDBOX_CHANNELS, usergroups=usergroups or {})
        self.platform = FakePlatform(offices=[office])
        self.jira = FakeJira(
            issues={ticket: {"summary": title or f"Incident {ticket}"}} if ticket else None
        )

    def __enter__(self) -> Self:
        self.slack.start()
        self.platform.start()
        self.jira.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.jira.stop()
        self.platform.stop()
        self.slack.stop()

    @property
    def environment(self) -> dict[str, str]:
        return {
            "TOCSIN_SLACK_API_URL": f"{self.slack.url}/api/",
            "TOCSIN_SERVICES__PLATFORM": f"{self.platform.url}/api/v1",
            "TOCSIN_SECRET_SLACK_BOT_TOKEN": SANDBOX_BOT_TOKEN,
            "TOCSIN_SECRET_PLATFORM_API_TOKEN": SANDBOX_PLATFORM_TOKEN,
            "TOCSIN_AUDIT__ANCHOR_CHANNEL": SANDBOX_ANCHOR_CHANNEL,
            "TOCSIN_SLACK__INCIDENT_CHANNEL": SANDBOX_INCIDENT_CHANNEL,
            "TOCSIN_SECRET_SLACK_SIGNING_SECRET": SANDBOX_SIGNING_SECRET,
            "TOCSIN_JIRA__URL": self.jira.url,
            "TOCSIN_JIRA__USER": SANDBOX_JIRA_USER,
            "TOCSIN_SECRET_JIRA_API_TOKEN": SANDBOX_JIRA_TOKEN,
            "TOCSIN_SECRET_JIRA_WEBHOOK_SECRET": SANDBOX_JIRA_WEBHOOK_SECRET,
        }


def sandbox_members(usergroup: str) -> list[str]:
    """Three made-up Slack users standing for the members of ``usergroup`` in the sandbox."""
    return [f"U{usergroup[1:]}{n}" for n in (1, 2, 3)]
