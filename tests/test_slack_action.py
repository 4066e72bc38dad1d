"""slack.post_message against the fake Slack Web API on loopback, called the way the engine calls it."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tocsin.action_registry import ActionRegistry
from tocsin.actions import ActionContext
from tocsin.errors import ActionError, ConfigurationError, IntegrationError
from tocsin.integrations.slack.client import SlackCredentials
from tocsin.integrations.slack.fake import FakeSlack, SlackChannel
from tocsin.settings import StaticSecrets, load_settings

TOKEN = "xoxb-1111-2222-tocsin-test"
READ_ONLY_TOKEN = "xoxb-3333-4444-read-only"


@pytest.fixture(scope="module")
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack(
        tokens={TOKEN: {"chat:write"}, READ_ONLY_TOKEN: {"channels:read"}},
        channels=[
            SlackChannel("C0INCIDENTS", "incidents"),
            SlackChannel("C0MANAGERS", "managers", bot_is_member=False),
        ],
        retry_after_seconds=1,
    )
    with fake:
        yield fake


@pytest.fixture(autouse=True)
def fresh_slack(slack: FakeSlack) -> None:
    slack.reset()


def post(
    params: dict[str, Any], *, slack_url: str, secrets: dict[str, str] | None = None
) -> dict[str, Any]:
    definition = ActionRegistry.discover().get("slack.post_message")
    context = ActionContext(
        incident="INC-1",
        step_id="notify",
        secrets=StaticSecrets({"slack_bot_token": TOKEN} if secrets is None else secrets),
        settings=load_settings(slack={"api_url": slack_url}),
    )
    return definition.invoke(context, params)


def api(slack: FakeSlack) -> str:
    return slack.url + "/api/"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_message_is_posted_to_the_channel(slack: FakeSlack) -> None:
    outputs = post(
        {"channel": "C0INCIDENTS", "text": "Office OF-1 disconnected"}, slack_url=api(slack)
    )

    (message,) = slack.messages
    assert outputs == {"channel": "C0INCIDENTS", "ts": message.ts}
    assert message.channel == "C0INCIDENTS"
    assert message.text == "Office OF-1 disconnected"
    assert message.thread_ts is None
    (call,) = slack.calls_of("chat.postMessage")
    assert call.header("authorization") == f"Bearer {TOKEN}"


def test_a_slack_served_over_tls_is_reached_with_the_slack_ca_bundle_setting(
    tmp_path: Path,
) -> None:
    from tocsin.sandbox.tls import LoopbackCA

    ca = LoopbackCA.create(tmp_path / "tls")
    fake = FakeSlack(tokens={TOKEN: {"chat:write"}}, channels=[SlackChannel("C0TLS", "tls")])
    fake.start(tls=ca.server_context())
    try:
        with pytest.raises(IntegrationError, match="CERTIFICATE_VERIFY_FAILED"):
            post({"channel": "C0TLS", "text": "untrusted"}, slack_url=api(fake))
        assert fake.messages == []
        definition = ActionRegistry.discover().get("slack.post_message")
        context = ActionContext(
            incident="INC-1",
            step_id="notify",
            secrets=StaticSecrets({"slack_bot_token": TOKEN}),
            settings=load_settings(slack={"api_url": api(fake), "ca_bundle": str(ca.ca_bundle)}),
        )
        definition.invoke(context, {"channel": "C0TLS", "text": "over TLS"})
        assert [m.text for m in fake.messages] == ["over TLS"]
    finally:
        fake.stop()


def test_authors_mrkdwn_is_posted_as_written(slack: FakeSlack) -> None:
    # The runbook's own text is trusted mrkdwn (docs/gateway.md, "What is escaped").
    text = "<!subteam^S0123ABCD> office OF-1 is *down*: <https://status.example|status page>"
    post({"channel": "C0INCIDENTS", "text": text}, slack_url=api(slack))

    (message,) = slack.messages
    assert message.text == text


def test_channel_given_by_name_is_answered_with_its_id(slack: FakeSlack) -> None:
    outputs = post({"channel": "#incidents", "text": "hello"}, slack_url=api(slack))

    assert outputs["channel"] == "C0INCIDENTS"
    assert slack.messages[0].channel == "C0INCIDENTS"


def test_reply_lands_in_the_thread_of_the_first_message(slack: FakeSlack) -> None:
    first = post({"channel": "C0INCIDENTS", "text": "Incident INC-1 opened"}, slack_url=api(slack))
    reply = post(
        {"channel": "C0INCIDENTS", "text": "Certificates revoked", "thread_ts": first["ts"]},
        slack_url=api(slack),
    )

    assert float(reply["ts"]) > float(first["ts"])
    assert [m.thread_ts for m in slack.messages] == [None, first["ts"]]
    assert slack.messages[1].text == "Certificates revoked"


def test_blocks_are_posted_with_the_text_as_fallback(slack: FakeSlack) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*INC-1* opened"}}]

    post({"channel": "C0INCIDENTS", "text": "INC-1 opened", "blocks": blocks}, slack_url=api(slack))

    assert slack.messages[0].blocks == blocks
    assert slack.messages[0].text == "INC-1 opened"


def test_rate_limited_message_is_retried_after_retry_after(slack: FakeSlack) -> None:
    slack.rate_limit_next(1)
    started = time.monotonic()

    outputs = post({"channel": "C0INCIDENTS", "text": "after the wait"}, slack_url=api(slack))

    assert time.monotonic() - started >= 1.0  # Retry-After: 1 was honoured
    assert len(slack.calls_of("chat.postMessage")) == 2
    assert [m.text for m in slack.messages] == ["after the wait"]
    assert outputs["ts"] == slack.messages[0].ts


@pytest.mark.slow
def test_rate_limit_outlasting_the_retries_is_a_retryable_error(slack: FakeSlack) -> None:
    slack.rate_limit_next(3)

    with pytest.raises(IntegrationError) as caught:
        post({"channel": "C0INCIDENTS", "text": "never sent"}, slack_url=api(slack))

    error = caught.value
    assert error.retryable
    assert error.status_code == 429
    assert error.service == "Slack"
    assert "ratelimited" in error.message
    assert len(slack.calls_of("chat.postMessage")) == 3  # the first call and two retries
    assert slack.messages == []


def test_wrong_token_hint_says_which_secret_to_check(slack: FakeSlack) -> None:
    with pytest.raises(IntegrationError) as caught:
        post(
            {"channel": "C0INCIDENTS", "text": "hello"},
            slack_url=api(slack),
            secrets={"slack_bot_token": "xoxb-revoked-0000"},
        )

    error = caught.value
    assert "invalid_auth" in error.message
    assert "TOCSIN_SECRET_SLACK_BOT_TOKEN" in error.hint
    assert not error.retryable
    assert "xoxb-revoked-0000" not in f"{error} {error.hint} {error!r} {error.args}"


def test_missing_scope_hint_names_chat_write(slack: FakeSlack) -> None:
    with pytest.raises(IntegrationError) as caught:
        post(
            {"channel": "C0INCIDENTS", "text": "hello"},
            slack_url=api(slack),
            secrets={"slack_bot_token": READ_ONLY_TOKEN},
        )

    assert "missing_scope" in caught.value.message
    assert "grant the bot the chat:write scope" in caught.value.hint
    assert slack.messages == []


def test_unknown_channel_hint_says_to_invite_the_bot(slack: FakeSlack) -> None:
    with pytest.raises(IntegrationError) as caught:
        post({"channel": "#nowhere", "text": "hello"}, slack_url=api(slack))

    assert "channel_not_found" in caught.value.message
    assert "invite the bot to #nowhere" in caught.value.hint
    assert not caught.value.retryable


def test_channel_without_the_bot_hint_says_to_invite_it(slack: FakeSlack) -> None:
    with pytest.raises(IntegrationError) as caught:
        post({"channel": "C0MANAGERS", "text": "hello"}, slack_url=api(slack))

    assert "not_in_channel" in caught.value.message
    assert "invite the bot to C0MANAGERS" in caught.value.hint


def test_unreachable_slack_is_a_retryable_error() -> None:
    with pytest.raises(IntegrationError) as caught:
        post(
            {"channel": "C0INCIDENTS", "text": "hello"},
            slack_url=f"http://127.0.0.1:{closed_port()}/api/",
        )

    assert caught.value.retryable
    assert caught.value.service == "Slack"
    assert "cannot be reached" in caught.value.message
    assert TOKEN not in f"{caught.value} {caught.value.hint}"


def test_missing_token_secret_names_the_variable_to_set(slack: FakeSlack) -> None:
    with pytest.raises(ConfigurationError) as caught:
        post({"channel": "C0INCIDENTS", "text": "hello"}, slack_url=api(slack), secrets={})

    assert "TOCSIN_SECRET_SLACK_BOT_TOKEN" in caught.value.hint
    assert slack.requests == []


@pytest.mark.parametrize(
    ("params", "wrong"),
    [
        ({"channel": "C0INCIDENTS", "text": ""}, "text:"),
        ({"channel": "incidents", "text": "hello"}, "channel:"),
        ({"channel": "C0INCIDENTS", "text": "hello", "thread_ts": "yesterday"}, "thread_ts:"),
    ],
)
def test_wrong_parameters_are_refused_before_any_call(
    slack: FakeSlack, params: dict[str, Any], wrong: str
) -> None:
    with pytest.raises(ActionError) as caught:
        post(params, slack_url=api(slack))

    assert wrong in caught.value.message
    assert slack.requests == []


def test_plan_and_secrets_of_the_action() -> None:
    definition = ActionRegistry.discover().get("slack.post_message")
    checked = definition.check_parameters({"channel": "#incidents", "text": "INC-1 opened"})

    assert definition.describe_call(checked) == "post to Slack #incidents: INC-1 opened"
    assert definition.secrets_needed({}) == ["slack_bot_token"]
    assert not definition.destructive


def test_credentials_never_show_the_token() -> None:
    credentials = SlackCredentials(token=TOKEN, base_url="http://127.0.0.1:1/api/")

    assert TOKEN not in repr(credentials)
    assert credentials.get_client().base_url == "http://127.0.0.1:1/api/"


# The fake itself, where the action does not reach: form bodies, no token, the rate window.


def test_fake_slack_accepts_a_form_encoded_call_with_the_token_in_the_body(
    slack: FakeSlack,
) -> None:
    answer = httpx.post(
        api(slack) + "chat.postMessage",
        data={"token": TOKEN, "channel": "C0INCIDENTS", "text": "form"},
    ).json()

    assert answer["ok"] is True
    assert answer["message"]["text"] == "form"
    assert slack.messages[0].text == "form"


def test_fake_slack_without_a_token_answers_not_authed(slack: FakeSlack) -> None:
    answer = httpx.post(api(slack) + "chat.postMessage", json={"channel": "C0INCIDENTS"})

    assert answer.status_code == 200
    assert answer.json() == {"ok": False, "error": "not_authed"}


def test_fake_slack_limits_calls_per_method_within_the_window(slack: FakeSlack) -> None:
    slack.rate_limit, slack.rate_window_seconds = 1, 30.0
    headers = {"Authorization": f"Bearer {TOKEN}"}
    message = {"channel": "C0INCIDENTS", "text": "hi"}

    first = httpx.post(api(slack) + "chat.postMessage", json=message, headers=headers)
    second = httpx.post(api(slack) + "chat.postMessage", json=message, headers=headers)

    assert first.json()["ok"] is True
    assert second.status_code == 429
    assert second.json() == {"ok": False, "error": "ratelimited"}
    assert 1 <= int(second.headers["Retry-After"]) <= 30
    assert len(slack.messages) == 1
