"""The Slack channel poster (``notify.staff``'s chat channel) against the fake Slack over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tocsin.channel_posts import ChannelPoster, channel_poster
from tocsin.errors import ConfigurationError, IntegrationError
from tocsin.integrations.slack.fake import FakeSlack, SlackChannel
from tocsin.settings import StaticSecrets, load_settings

TOKEN = "xoxb-1111-2222-tocsin-test"


@pytest.fixture(scope="module")
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack(
        tokens={TOKEN: {"chat:write"}},
        channels=[
            SlackChannel("C0STAFF", "office-staff"),
            SlackChannel("C0CLOSED", "managers", bot_is_member=False),
        ],
    )
    with fake:
        yield fake


@pytest.fixture(autouse=True)
def fresh(slack: FakeSlack) -> None:
    slack.reset()


def poster(slack: FakeSlack, token: str = TOKEN) -> ChannelPoster:
    settings = load_settings(slack={"api_url": slack.url + "/api/"})
    return channel_poster("slack", settings, StaticSecrets({"slack_bot_token": token}))


def test_briefing_is_posted_as_text_that_mentions_nobody(slack: FakeSlack) -> None:
    where = poster(slack).post(
        "#office-staff", "Briefing <!channel> see <https://evil.example|here> *now*"
    )

    assert where.startswith("slack:C0STAFF:")
    [message] = slack.messages
    assert message.channel == "C0STAFF"
    assert "<!channel>" not in message.text
    assert "<https://evil.example" not in message.text
    assert "&lt;!channel&gt;" in message.text
    assert "*now*" not in message.text  # no bold


def test_a_channel_the_bot_is_not_in_says_to_invite_it(slack: FakeSlack) -> None:
    with pytest.raises(IntegrationError) as caught:
        poster(slack).post("#managers", "hello")
    assert "not_in_channel" in caught.value.message or "not in" in caught.value.message
    assert "invite" in caught.value.hint.lower()
    assert slack.messages == []


def test_an_unknown_channel_and_a_malformed_name_are_refused(slack: FakeSlack) -> None:
    with pytest.raises(IntegrationError):
        poster(slack).post("#nowhere", "hello")
    with pytest.raises(ConfigurationError, match="not a Slack channel"):
        poster(slack).post("office staff", "hello")
    assert slack.messages == []


def test_a_missing_token_names_the_variable(slack: FakeSlack) -> None:
    settings = load_settings(slack={"api_url": slack.url + "/api/"})
    with pytest.raises(ConfigurationError) as caught:
        channel_poster("slack", settings, StaticSecrets({}))
    assert "TOCSIN_SECRET_SLACK_BOT_TOKEN" in caught.value.hint
