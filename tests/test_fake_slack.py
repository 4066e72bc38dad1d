"""The fake Slack Web API through the real slack_sdk WebClient, and the simulated Slack user."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier

from tocsin.integrations.slack.fake import (
    BOT_USER_ID,
    DEFAULT_SCOPES,
    SANDBOX_BOT_TOKEN,
    TEAM_ID,
    FakeSlack,
    PostedSlackMessage,
    SlackChannel,
    SlackUser,
)
from tocsin.integrations.slack.simulated_user import SimulatedSlack, sign_slack_request
from tocsin.sandbox.fake_service import FakeService, ReceivedRequest, Reply

NO_USERS_READ_TOKEN = "xoxb-tocsin-no-users-read"
EMAIL_TOKEN = "xoxb-tocsin-users-read-email"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
ALICE = SlackUser("U0ALICE", "alice", "Alice Martin", "alice@example.com")
BOB = SlackUser("U0BOB", "bob", "Bob Durand")
APPROVAL_BLOCKS: list[dict[str, Any]] = [
    {
        "type": "section",
        "block_id": "summary",
        "text": {"type": "mrkdwn", "text": "Disconnect office OF-1?"},
    },
    {
        "type": "actions",
        "block_id": "gate:disconnect",
        "elements": [
            {
                "type": "button",
                "action_id": "approve",
                "text": {"type": "plain_text", "text": "Approve", "emoji": True},
                "value": "INC-1:disconnect",
                "style": "primary",
            },
            {
                "type": "button",
                "action_id": "deny",
                "text": {"type": "plain_text", "text": "Deny", "emoji": True},
                "value": "INC-1:disconnect",
                "style": "danger",
            },
        ],
    },
]


@pytest.fixture(scope="module")
def slack() -> Iterator[FakeSlack]:
    """A workspace with a user directory and a channel that lists its members."""
    fake = FakeSlack(
        tokens={
            SANDBOX_BOT_TOKEN: DEFAULT_SCOPES,
            NO_USERS_READ_TOKEN: {"chat:write"},
            EMAIL_TOKEN: DEFAULT_SCOPES | {"users:read.email"},
        },
        channels=[
            SlackChannel("C0INCIDENTS", "incidents"),
            SlackChannel("C0ONCALL", "oncall", members=frozenset({BOT_USER_ID, ALICE.id})),
        ],
        users={ALICE.id: ALICE, BOB.id: BOB},
        retry_after_seconds=1,
    )
    with fake:
        yield fake


@pytest.fixture(scope="module")
def slack_without_directory() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture(autouse=True)
def fresh_slack(slack: FakeSlack, slack_without_directory: FakeSlack) -> None:
    slack.reset()
    slack_without_directory.reset()


def web_client(fake: FakeSlack, token: str = SANDBOX_BOT_TOKEN, **options: Any) -> WebClient:
    return WebClient(base_url=fake.url + "/api/", token=token, **options)


def slack_error(call: Any) -> str:
    """The Slack error code that ``call()`` fails with."""
    with pytest.raises(SlackApiError) as raised:
        call()
    return str(raised.value.response["error"])


# -- chat.update ------------------------------------------------------------------


def test_updated_message_has_the_new_content_and_counts_the_edit(slack: FakeSlack) -> None:
    client = web_client(slack)
    posted = client.chat_postMessage(channel="C0INCIDENTS", text="Waiting", blocks=APPROVAL_BLOCKS)

    answer = client.chat_update(channel="C0INCIDENTS", ts=posted["ts"], text="Approved by Alice")

    assert answer["ok"] is True
    assert (answer["channel"], answer["ts"], answer["text"]) == (
        "C0INCIDENTS",
        posted["ts"],
        "Approved by Alice",
    )
    assert answer["message"]["text"] == "Approved by Alice"
    message = slack.message("C0INCIDENTS", posted["ts"])
    assert (message.text, message.blocks, message.edits) == ("Approved by Alice", None, 1)
    assert len(slack.messages) == 1

    client.chat_update(
        channel="C0INCIDENTS", ts=posted["ts"], text="Approved", blocks=APPROVAL_BLOCKS[:1]
    )
    message = slack.message("C0INCIDENTS", posted["ts"])
    assert (message.text, message.blocks, message.edits) == ("Approved", APPROVAL_BLOCKS[:1], 2)


def test_update_of_a_message_that_is_not_there_is_refused(slack: FakeSlack) -> None:
    client = web_client(slack)
    posted = client.chat_postMessage(channel="C0INCIDENTS", text="Waiting")

    assert (
        slack_error(lambda: client.chat_update(channel="C0INCIDENTS", ts="1.000001", text="x"))
        == "message_not_found"
    )
    assert (
        slack_error(lambda: client.chat_update(channel="C0ONCALL", ts=posted["ts"], text="x"))
        == "message_not_found"
    )
    assert (
        slack_error(lambda: client.chat_update(channel="C0NOWHERE", ts=posted["ts"], text="x"))
        == "channel_not_found"
    )
    with pytest.warns(UserWarning, match="`text` argument is missing"):  # slack_sdk's warning
        assert (
            slack_error(lambda: client.chat_update(channel="C0INCIDENTS", ts=posted["ts"]))
            == "no_text"
        )
    assert slack.message("C0INCIDENTS", posted["ts"]).edits == 0
    with pytest.raises(KeyError):
        slack.message("C0INCIDENTS", "1.000001")


def test_rate_limited_update_is_retried_by_slack_sdk_and_succeeds(slack: FakeSlack) -> None:
    client = web_client(slack, retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)])
    posted = client.chat_postMessage(channel="C0INCIDENTS", text="Waiting")
    slack.rate_limit_next(1)

    answer = client.chat_update(channel="C0INCIDENTS", ts=posted["ts"], text="Approved")

    assert answer["ok"] is True
    assert len(slack.calls_of("chat.update")) == 2
    assert slack.message("C0INCIDENTS", posted["ts"]).edits == 1


def test_rate_limit_without_retry_answers_429_with_retry_after(slack: FakeSlack) -> None:
    slack.rate_limit_next(1)

    with pytest.raises(SlackApiError) as raised:
        web_client(slack).users_info(user=ALICE.id)

    assert raised.value.response.status_code == 429
    assert raised.value.response.headers["Retry-After"] == "1"
    assert raised.value.response["error"] == "ratelimited"


# -- chat.postEphemeral -----------------------------------------------------------


def test_ephemeral_message_to_a_channel_member_is_recorded(slack: FakeSlack) -> None:
    answer = web_client(slack).chat_postEphemeral(
        channel="C0ONCALL", user=ALICE.id, text="Only you can approve this", thread_ts="1.000100"
    )

    (ephemeral,) = slack.ephemerals
    assert answer["message_ts"] == ephemeral.message_ts
    assert (ephemeral.channel, ephemeral.user, ephemeral.text, ephemeral.thread_ts) == (
        "C0ONCALL",
        ALICE.id,
        "Only you can approve this",
        "1.000100",
    )
    assert slack.messages == []


def test_ephemeral_message_to_someone_outside_the_channel_is_refused(slack: FakeSlack) -> None:
    client = web_client(slack)

    assert (
        slack_error(lambda: client.chat_postEphemeral(channel="C0ONCALL", user=BOB.id, text="hi"))
        == "user_not_in_channel"
    )
    assert (
        slack_error(lambda: client.chat_postEphemeral(channel="C0NOWHERE", user=BOB.id, text="hi"))
        == "channel_not_found"
    )
    with pytest.warns(UserWarning, match="`text` argument is missing"):  # slack_sdk's warning
        assert (
            slack_error(lambda: client.chat_postEphemeral(channel="C0ONCALL", user=ALICE.id))
            == "no_text"
        )
    assert slack.ephemerals == []


# -- conversations.create / invite ----------------------------------------------


def test_created_channel_is_described_and_accepts_messages(slack: FakeSlack) -> None:
    client = web_client(slack)

    channel = client.conversations_create(name="inc-1042-office-down", is_private=True)["channel"]

    assert channel["id"].startswith("C") and channel["id"] not in {"C0INCIDENTS", "C0ONCALL"}
    assert channel["name"] == "inc-1042-office-down"
    assert channel["is_private"] is True
    assert channel["creator"] == BOT_USER_ID
    assert channel["is_member"] is True
    assert (channel["is_channel"], channel["is_group"], channel["is_im"]) == (True, False, False)
    assert abs(channel["created"] - time.time()) < 60
    posted = client.chat_postMessage(channel=channel["id"], text="War room open")
    assert slack.message(channel["id"], posted["ts"]).text == "War room open"
    assert client.chat_postMessage(channel="#inc-1042-office-down", text="again")["ok"] is True


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("incidents", "name_taken"),
        ("", "invalid_name_required"),
        ("Incident 42", "invalid_name_specials"),
        ("inc.42", "invalid_name_specials"),
        ("x" * 81, "invalid_name_maxlength"),
        ("--", "invalid_name_punctuation"),
    ],
)
def test_channel_with_an_unusable_name_is_not_created(
    slack: FakeSlack, name: str, error: str
) -> None:
    assert slack_error(lambda: web_client(slack).conversations_create(name=name)) == error
    assert set(slack.channels) == {"C0INCIDENTS", "C0ONCALL"}


def test_longest_allowed_channel_name_is_accepted(slack: FakeSlack) -> None:
    answer = web_client(slack).conversations_create(name="x" * 80)

    assert answer["channel"]["name"] == "x" * 80


def test_invited_users_join_a_created_channel(slack: FakeSlack) -> None:
    client = web_client(slack)
    channel_id = client.conversations_create(name="inc-7")["channel"]["id"]
    assert (
        slack_error(lambda: client.chat_postEphemeral(channel=channel_id, user=ALICE.id, text="hi"))
        == "user_not_in_channel"
    )

    answer = client.conversations_invite(channel=channel_id, users=[ALICE.id, BOB.id])

    assert answer["channel"]["id"] == channel_id
    assert answer["channel"]["name"] == "inc-7"
    assert slack.channels[channel_id].members == frozenset({BOT_USER_ID, ALICE.id, BOB.id})
    assert client.chat_postEphemeral(channel=channel_id, user=ALICE.id, text="hi")["ok"] is True


def test_invite_refusals_name_the_reason(slack: FakeSlack) -> None:
    client = web_client(slack)

    assert (
        slack_error(lambda: client.conversations_invite(channel="C0ONCALL", users=ALICE.id))
        == "already_in_channel"
    )
    assert (
        slack_error(lambda: client.conversations_invite(channel="C0ONCALL", users="U0NOBODY"))
        == "user_not_found"
    )
    assert (
        slack_error(lambda: client.conversations_invite(channel="C0NOWHERE", users=BOB.id))
        == "channel_not_found"
    )
    assert slack.channels["C0ONCALL"].members == frozenset({BOT_USER_ID, ALICE.id})


def test_reset_forgets_created_channels_and_edits(slack: FakeSlack) -> None:
    client = web_client(slack)
    client.conversations_create(name="inc-9")
    client.conversations_invite(channel="C0ONCALL", users=BOB.id)
    posted = client.chat_postMessage(channel="C0INCIDENTS", text="Waiting")
    client.chat_postEphemeral(channel="C0ONCALL", user=BOB.id, text="hi")

    slack.reset()

    assert set(slack.channels) == {"C0INCIDENTS", "C0ONCALL"}
    assert slack.channels["C0ONCALL"].members == frozenset({BOT_USER_ID, ALICE.id})
    assert (slack.messages, slack.ephemerals, slack.responses) == ([], [], [])
    with pytest.raises(KeyError):
        slack.message("C0INCIDENTS", posted["ts"])
    assert client.conversations_create(name="inc-9")["ok"] is True


# -- users.info ---------------------------------------------------------------------


def test_user_of_the_directory_is_described(slack: FakeSlack) -> None:
    user = web_client(slack).users_info(user=ALICE.id)["user"]

    assert {k: user[k] for k in ("id", "team_id", "name", "real_name", "deleted", "is_bot")} == {
        "id": ALICE.id,
        "team_id": TEAM_ID,
        "name": "alice",
        "real_name": "Alice Martin",
        "deleted": False,
        "is_bot": False,
    }
    assert user["profile"]["real_name"] == "Alice Martin"
    assert user["profile"]["display_name"] == "alice"
    assert "email" not in user["profile"]
    assert slack_error(lambda: web_client(slack).users_info(user="U0NOBODY")) == "user_not_found"


def test_email_is_shown_only_to_a_token_with_users_read_email(slack: FakeSlack) -> None:
    user = web_client(slack, EMAIL_TOKEN).users_info(user=ALICE.id)["user"]

    assert user["profile"]["email"] == "alice@example.com"


def test_without_a_directory_any_user_id_is_a_made_up_user(
    slack_without_directory: FakeSlack,
) -> None:
    client = web_client(slack_without_directory)

    user = client.users_info(user="U0ONCALL1")["user"]

    assert (user["id"], user["name"], user["is_bot"]) == ("U0ONCALL1", "u0oncall1", False)
    assert user["real_name"]
    assert slack_error(lambda: client.users_info(user="not-a-user")) == "user_not_found"


def test_token_without_users_read_gets_missing_scope(slack: FakeSlack) -> None:
    with pytest.raises(SlackApiError) as raised:
        web_client(slack, NO_USERS_READ_TOKEN).users_info(user=ALICE.id)

    assert raised.value.response["error"] == "missing_scope"
    assert raised.value.response["needed"] == "users:read"
    assert raised.value.response["provided"] == "chat:write"


# -- the simulated Slack user --------------------------------------------------------


class RecordingGateway(FakeService):
    """Stands for Tocsin's gateway: answers 200 to everything and keeps what it received."""

    name = "recording gateway"

    def handle(self, request: ReceivedRequest) -> Reply:
        return Reply(200, b"")


@pytest.fixture(scope="module")
def gateway() -> Iterator[RecordingGateway]:
    with RecordingGateway() as recorder:
        yield recorder


@pytest.fixture
def user(gateway: RecordingGateway, slack: FakeSlack) -> Iterator[SimulatedSlack]:
    gateway.reset()
    with SimulatedSlack(gateway.url, SIGNING_SECRET, fake_slack=slack) as simulated:
        yield simulated


def approval_message(slack: FakeSlack) -> PostedSlackMessage:
    posted = web_client(slack).chat_postMessage(
        channel="C0ONCALL", text="Approve?", blocks=APPROVAL_BLOCKS
    )
    return slack.message("C0ONCALL", posted["ts"])


def received_payload(request: ReceivedRequest) -> dict[str, Any]:
    (payload,) = parse_qs(request.body.decode())["payload"]
    decoded: dict[str, Any] = json.loads(payload)
    return decoded


def signature_is_valid(request: ReceivedRequest, secret: str = SIGNING_SECRET) -> bool:
    return SignatureVerifier(secret).is_valid(
        request.body,
        request.header("x-slack-request-timestamp"),
        request.header("x-slack-signature"),
    )


def test_click_posts_a_signed_block_actions_payload(
    user: SimulatedSlack, gateway: RecordingGateway, slack: FakeSlack
) -> None:
    message = approval_message(slack)

    response = user.click(ALICE.id, message, "approve")

    assert response.status_code == 200
    (request,) = gateway.requests
    assert (request.method, request.path) == ("POST", "/slack/interactions")
    assert request.header("content-type") == "application/x-www-form-urlencoded"
    assert signature_is_valid(request)
    payload = received_payload(request)
    assert payload["type"] == "block_actions"
    assert payload["user"] == {
        "id": ALICE.id,
        "username": "alice",
        "name": "alice",
        "team_id": TEAM_ID,
    }
    assert payload["team"]["id"] == TEAM_ID
    assert payload["container"] == {
        "type": "message",
        "message_ts": message.ts,
        "channel_id": "C0ONCALL",
        "is_ephemeral": False,
    }
    assert payload["channel"] == {"id": "C0ONCALL", "name": "oncall"}
    assert (payload["enterprise"], payload["is_enterprise_install"]) == (None, False)
    assert payload["state"] == {"values": {}}
    assert payload["trigger_id"] and payload["api_app_id"] and payload["token"]
    assert payload["message"]["ts"] == message.ts
    assert payload["message"]["blocks"] == APPROVAL_BLOCKS
    (action,) = payload["actions"]
    assert {k: v for k, v in action.items() if k != "action_ts"} == {
        "action_id": "approve",
        "block_id": "gate:disconnect",
        "text": {"type": "plain_text", "text": "Approve", "emoji": True},
        "value": "INC-1:disconnect",
        "type": "button",
        "style": "primary",
    }
    assert abs(float(action["action_ts"]) - time.time()) < 60


def test_response_url_of_a_click_is_answered_by_the_fake_slack(
    user: SimulatedSlack, gateway: RecordingGateway, slack: FakeSlack
) -> None:
    user.click(ALICE.id, approval_message(slack), "deny")
    response_url = received_payload(gateway.requests[0])["response_url"]

    answer = httpx.post(response_url, json={"text": "Denied", "replace_original": True})

    assert response_url.startswith(slack.url + "/actions/")
    assert answer.status_code == 200
    (recorded,) = slack.responses
    assert recorded.payload == {"text": "Denied", "replace_original": True}


def test_click_on_a_button_that_is_not_there_lists_the_buttons(
    user: SimulatedSlack, gateway: RecordingGateway, slack: FakeSlack
) -> None:
    with pytest.raises(ValueError, match="approve, deny"):
        user.click(ALICE.id, approval_message(slack), "escalate")

    assert gateway.requests == []


def test_forged_replayed_and_unsigned_clicks_fail_verification(
    user: SimulatedSlack, gateway: RecordingGateway, slack: FakeSlack
) -> None:
    message = approval_message(slack)

    user.click(ALICE.id, message, "approve", signing_secret="not-the-app-secret")
    user.click(ALICE.id, message, "approve", timestamp=int(time.time()) - 6 * 60)
    user.click(ALICE.id, message, "approve", signed=False)

    forged, replayed, unsigned = gateway.requests
    assert not signature_is_valid(forged)
    assert signature_is_valid(forged, "not-the-app-secret")
    assert not signature_is_valid(replayed)
    assert unsigned.header("x-slack-signature") is None
    assert unsigned.header("x-slack-request-timestamp") is None


def test_slash_command_posts_slacks_fields_signed(
    user: SimulatedSlack, gateway: RecordingGateway, slack: FakeSlack
) -> None:
    user.slash_command(BOB.id, "status INC-1")

    (request,) = gateway.requests
    assert request.path == "/slack/commands"
    assert signature_is_valid(request)
    fields = {name: values[0] for name, values in parse_qs(request.body.decode()).items()}
    assert {k: fields[k] for k in ("command", "text", "user_id", "user_name", "channel_id")} == {
        "command": "/tocsin",
        "text": "status INC-1",
        "user_id": BOB.id,
        "user_name": "bob",
        "channel_id": "C0INCIDENTS",
    }
    assert (fields["team_id"], fields["channel_name"]) == (TEAM_ID, "incidents")
    assert fields["is_enterprise_install"] == "false"
    assert fields["response_url"].startswith(slack.url + "/commands/")
    assert {"token", "team_domain", "api_app_id", "trigger_id"} <= fields.keys()


def test_signature_headers_match_what_slack_sdk_computes() -> None:
    body = b"payload=%7B%7D"

    headers = sign_slack_request(SIGNING_SECRET, body, timestamp=1_531_420_618)

    expected = SignatureVerifier(SIGNING_SECRET).generate_signature(
        timestamp="1531420618", body=body
    )
    assert headers == {"X-Slack-Request-Timestamp": "1531420618", "X-Slack-Signature": expected}


# -- auth.test and the token's scopes ------------------------------------------------


def test_auth_test_needs_no_scope_and_answers_with_the_tokens_scopes(slack: FakeSlack) -> None:
    answer = web_client(slack, NO_USERS_READ_TOKEN).auth_test()
    assert answer["user_id"] == BOT_USER_ID
    assert answer.headers["x-oauth-scopes"] == "chat:write"
    assert answer.headers["x-accepted-oauth-scopes"] == ""


def test_a_refused_call_still_says_the_tokens_scopes(slack: FakeSlack) -> None:
    with pytest.raises(SlackApiError) as raised:
        web_client(slack, NO_USERS_READ_TOKEN).users_info(user=ALICE.id)
    assert raised.value.response["error"] == "missing_scope"
    assert raised.value.response.headers["x-oauth-scopes"] == "chat:write"
    assert raised.value.response.headers["x-accepted-oauth-scopes"] == "users:read"
