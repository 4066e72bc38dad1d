"""The sandbox: fake Slack and platform servers on loopback, and the settings that point runs at them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

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


class Sandbox:
    """Starts the fakes; ``environment`` holds the TOCSIN_* variables a run needs to use them."""

    def __init__(
        self,
        inputs: Mapping[str, Any] | None = None,
        usergroups: Mapping[str, list[str]] | None = None,
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

    def __enter__(self) -> Self:
        self.slack.start()
        self.platform.start()
        return self

    def __exit__(self, *exc: object) -> None:
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
        }


def sandbox_members(usergroup: str) -> list[str]:
    """Three made-up Slack users standing for the members of ``usergroup`` in the sandbox."""
    return [f"U{usergroup[1:]}{n}" for n in (1, 2, 3)]
