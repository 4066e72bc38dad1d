"""Where a temporary password goes: a Slack direct message to a named person (the fake
Slack over HTTP on loopback), staged before Graph is asked to change anything; the folder
channel and the errors of a channel written wrong."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.microsoft_support import fake_tenant, run_action, settings_for
from tocsin.errors import ConfigurationError, IntegrationError
from tocsin.integrations.microsoft import CLIENT_SECRET
from tocsin.integrations.microsoft.fake import SANDBOX_CLIENT_SECRET, SANDBOX_USER, FakeMicrosoft
from tocsin.integrations.slack.client import TOKEN_SECRET
from tocsin.integrations.slack.fake import SANDBOX_BOT_TOKEN, FakeSlack, SlackUser
from tocsin.sandbox.tls import LoopbackCA
from tocsin.settings import Settings, load_settings

LEAD = "U0LEAD0001"
SECRETS = {CLIENT_SECRET: SANDBOX_CLIENT_SECRET, TOKEN_SECRET: SANDBOX_BOT_TOKEN}


@pytest.fixture(scope="module")
def tenant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeMicrosoft, LoopbackCA]]:
    with fake_tenant(tmp_path_factory.mktemp("secret-delivery")) as started:
        yield started


@pytest.fixture(scope="module")
def slack() -> Iterator[FakeSlack]:
    lead = SlackUser(LEAD, "lead", "Support Lead", "lead@provider.example")
    with FakeSlack(users={LEAD: lead}) as fake:
        yield fake


@pytest.fixture
def fake(tenant: tuple[FakeMicrosoft, LoopbackCA], slack: FakeSlack) -> FakeMicrosoft:
    tenant[0].reset()
    slack.reset()
    return tenant[0]


def _settings(tenant: tuple[FakeMicrosoft, LoopbackCA], slack: FakeSlack, channel: str) -> Settings:
    microsoft = settings_for(tenant[0], tenant[1], password_channel=channel).microsoft  # type: ignore[attr-defined]
    return load_settings(
        microsoft=microsoft.model_dump(mode="json"), slack={"api_url": f"{slack.url}/api/"}
    )


def _password_patches(fake: FakeMicrosoft) -> list[dict[str, Any]]:
    return [
        r.json()["passwordProfile"]
        for r in fake.requests
        if r.method == "PATCH" and r.body and "passwordProfile" in r.json()
    ]


def test_the_password_reaches_the_lead_by_direct_message_and_nowhere_else(
    fake: FakeMicrosoft,
    slack: FakeSlack,
    tenant: tuple[FakeMicrosoft, LoopbackCA],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = _settings(tenant, slack, f"slack-dm:{LEAD}")
    outputs = run_action("microsoft.reset_password", {"user": SANDBOX_USER}, settings, SECRETS)

    (sent,) = _password_patches(fake)
    (message,) = slack.messages
    assert message.channel == "D" + LEAD[1:]
    assert sent["password"] in (message.text or "")
    assert SANDBOX_USER in (message.text or "") and "INC-13" in (message.text or "")
    assert outputs["delivered_to"] == f"Slack direct message to {LEAD}"
    assert sent["password"] not in repr(outputs) and sent["password"] not in caplog.text
    assert len(slack.calls_of("conversations.open")) == 1


def test_an_unknown_person_fails_the_step_before_the_password_changes(
    fake: FakeMicrosoft, slack: FakeSlack, tenant: tuple[FakeMicrosoft, LoopbackCA]
) -> None:
    settings = _settings(tenant, slack, "slack-dm:U0NOBODY99")
    with pytest.raises(ConfigurationError) as caught:
        run_action("microsoft.reset_password", {"user": SANDBOX_USER}, settings, SECRETS)
    assert "cannot send secrets to U0NOBODY99 on Slack: " in caught.value.message
    assert "user_not_found" in caught.value.message
    assert "nothing was changed" in caught.value.hint
    assert _password_patches(fake) == [] and slack.messages == []


def test_a_failed_post_says_the_password_is_set_and_how_to_recover(
    fake: FakeMicrosoft, slack: FakeSlack, tenant: tuple[FakeMicrosoft, LoopbackCA]
) -> None:
    settings = _settings(tenant, slack, f"slack-dm:{LEAD}")
    # A bot that may open the conversation but not post in it: the post fails after the reset.
    slack.tokens["xoxb-no-chat-write"] = frozenset({"im:write"})
    secrets = {**SECRETS, TOKEN_SECRET: "xoxb-no-chat-write"}
    with pytest.raises(IntegrationError) as caught:
        run_action("microsoft.reset_password", {"user": SANDBOX_USER}, settings, secrets)
    (sent,) = _password_patches(fake)
    assert f"could not send the temporary password for {SANDBOX_USER.lower()}" in (
        caught.value.message.lower()
    )
    assert "run the step again to set a new one" in caught.value.hint
    assert str(sent["password"]) not in caught.value.message + caught.value.hint


@pytest.mark.parametrize(
    ("channel", "said"),
    [
        ("pigeon:U0LEAD0001", "names the channel 'pigeon', which no installed integration"),
        ("slack-dm", "which names no channel"),
        ("slack-dm:alice", "does not name a Slack user"),
    ],
)
def test_a_channel_written_wrong_is_refused_with_the_valid_forms(
    fake: FakeMicrosoft,
    slack: FakeSlack,
    tenant: tuple[FakeMicrosoft, LoopbackCA],
    channel: str,
    said: str,
) -> None:
    settings = _settings(tenant, slack, channel)
    with pytest.raises(ConfigurationError) as caught:
        run_action("microsoft.reset_password", {"user": SANDBOX_USER}, settings, SECRETS)
    assert said in caught.value.message
    assert _password_patches(fake) == []


def test_the_folder_channel_can_be_named_like_any_other(
    fake: FakeMicrosoft, slack: FakeSlack, tenant: tuple[FakeMicrosoft, LoopbackCA], tmp_path: Path
) -> None:
    folder = tmp_path / "handover"
    folder.mkdir(mode=0o700)
    settings = _settings(tenant, slack, f"folder:{folder}")
    outputs = run_action("microsoft.reset_password", {"user": SANDBOX_USER}, settings, SECRETS)
    (written,) = folder.glob("*.txt")
    assert outputs["delivered_to"] == f"file {written} (mode 0600)"
    assert _password_patches(fake)[0]["password"] in written.read_text()
