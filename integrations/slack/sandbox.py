"""Slack in the sandbox: a fake workspace with the incident channels, and made-up members
for each user group the run's approver groups name."""

from __future__ import annotations

from tocsin.integration import SandboxSeed, SandboxService
from tocsin.integrations.slack.client import TOKEN_SECRET
from tocsin.integrations.slack.fake import SANDBOX_BOT_TOKEN, FakeSlack, SlackChannel
from tocsin.integrations.slack.signature import SIGNING_SECRET

SANDBOX_CHANNELS = (
    SlackChannel("C0INCIDENTS", "support-incidents"),
    SlackChannel("C0ONCALL", "support-oncall"),
    SlackChannel("C0SECURITY", "incidents"),
    SlackChannel("C0AUDIT", "incident-audit"),
    SlackChannel("C0STAFF", "office-staff"),  # notify.staff_channel of the notify sandbox
)
SANDBOX_ANCHOR_CHANNEL = "#incident-audit"
SANDBOX_INCIDENT_CHANNEL = "#support-incidents"
SANDBOX_SIGNING_SECRET = "sandbox-slack-signing-secret"
"""The Slack app signing secret of the sandbox: the gateway checks it, the simulated Slack signs with it."""


def sandbox_members(usergroup: str) -> list[str]:
    """Three made-up Slack users standing for the members of ``usergroup`` in the sandbox."""
    return [f"U{usergroup[1:]}{n}" for n in (1, 2, 3)]


def start(seed: SandboxSeed) -> SandboxService:
    """Start the fake Slack; runs post their incident thread and audit heads there."""
    groups = {usergroup: sandbox_members(usergroup) for usergroup in seed.usergroups}
    fake = FakeSlack(channels=SANDBOX_CHANNELS, usergroups=groups).start(tls=seed.server_tls)
    slack: dict[str, object] = {
        "api_url": f"{fake.url}/api/",
        "incident_channel": SANDBOX_INCIDENT_CHANNEL,
        "anchor_channel": SANDBOX_ANCHOR_CHANNEL,
    }
    if seed.ca_bundle is not None:
        slack["ca_bundle"] = str(seed.ca_bundle)
    notes = [f"Slack signing secret: {SANDBOX_SIGNING_SECRET} (sign requests with it)"]
    notes += [
        f"sandbox Slack user group {usergroup}: {', '.join(members)}"
        for usergroup, members in groups.items()
    ]
    return SandboxService(
        fake,
        settings={"slack": slack},
        secrets={TOKEN_SECRET: SANDBOX_BOT_TOKEN, SIGNING_SECRET: SANDBOX_SIGNING_SECRET},
        notes=notes,
    )
