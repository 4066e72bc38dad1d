"""Telling people why their click did not count, within Slack's limit (``refusal_notices``):
each reason told once, at most ``PER_MINUTE`` notices a minute, never waiting out a 429.

The budget and repeats with a controlled clock; the notice itself through slack-sdk against
the fake Slack on loopback, answering 429 as Slack does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from tests.engine_support import wait_until
from tests.gateway_support import environment_variables
from tocsin.integrations.slack.fake import SANDBOX_BOT_TOKEN, FakeSlack, SlackChannel
from tocsin.integrations.slack.inbound import SlackInbound
from tocsin.integrations.slack.refusal_notices import MAX_WAITING, RefusalNotices
from tocsin.integrations.slack.signature import SIGNING_SECRET
from tocsin.settings import StaticSecrets, load_settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def sent_by(notices: RefusalNotices, keys: list[str]) -> list[str]:
    """The keys whose notices went out (each notice records its key)."""
    sent: list[str] = []
    done = threading.Semaphore(0)
    handed = 0
    for key in keys:

        def notice(key: str = key) -> None:
            sent.append(key)
            done.release()

        handed += notices.send(key, notice)
    for _ in range(handed):
        assert done.acquire(timeout=5)
    return sent


def test_the_same_reason_is_told_once_then_again_after_a_while(clock: Clock) -> None:
    notices = RefusalNotices(per_minute=100, repeat_after=600.0, clock=clock)
    assert sent_by(notices, ["stranger", "stranger", "late", "stranger"]) == ["stranger", "late"]
    clock.now += 599.0
    assert sent_by(notices, ["stranger"]) == []
    clock.now += 2.0  # past the repeat time (and a new minute)
    assert sent_by(notices, ["stranger"]) == ["stranger"]
    notices.close()


def test_past_the_minute_s_budget_notices_are_dropped_and_counted(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    notices = RefusalNotices(per_minute=3, clock=clock)
    assert sent_by(notices, [f"user-{n}" for n in range(10)]) == ["user-0", "user-1", "user-2"]
    clock.now += 60.0  # a new minute: a new budget, and the last one's drops said once
    with caplog.at_level("WARNING", logger="tocsin.gateway"):
        assert sent_by(notices, ["user-5", "user-6"]) == ["user-5", "user-6"]
    said = [r.getMessage() for r in caplog.records if "not sent" in r.getMessage()]
    assert said == [
        "7 notices of refused clicks not sent in the last minute (more than 3 a minute: "
        "Slack's limit); their outcomes are in the click queue and the trail"
    ]
    notices.close()


def test_a_slow_slack_never_piles_notices_up(clock: Clock) -> None:
    notices = RefusalNotices(per_minute=1000, clock=clock)
    release = threading.Event()

    def hangs() -> None:
        release.wait()

    handed = [notices.send(n, hangs) for n in range(MAX_WAITING + 20)]
    assert sum(handed) == MAX_WAITING  # the rest dropped: nothing waits behind a hung call
    release.set()
    wait_until(lambda: notices.send("after", lambda: None), what="room for another notice")
    notices.close()


def test_a_failing_notice_is_logged_and_the_next_one_goes_out(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    notices = RefusalNotices(clock=clock)

    def fails() -> None:
        raise OSError("connection reset")

    with caplog.at_level("ERROR", logger="tocsin.gateway"):
        assert notices.send("first", fails)
        assert sent_by(notices, ["second"]) == ["second"]
    assert any("telling a clicker" in r.getMessage() for r in caplog.records)
    notices.close()


@pytest.fixture(scope="module")
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(
        channels=(SlackChannel("C0INCIDENTS", "support-incidents"),), retry_after_seconds=5
    ) as fake:
        yield fake


def test_a_notice_answered_429_is_not_waited_out(slack: FakeSlack) -> None:
    with environment_variables({"TOCSIN_SLACK__API_URL": f"{slack.url}/api/"}):
        settings = load_settings()
    inbound = SlackInbound(
        settings,
        StaticSecrets({SIGNING_SECRET: "s3cret", "slack_bot_token": SANDBOX_BOT_TOKEN}),
    )
    before = len(slack.calls_of("chat.postEphemeral"))
    slack.rate_limit_next(1)
    started = time.monotonic()
    inbound.tell("C0INCIDENTS", "U0STRANGER", "not counted")  # best effort: no exception
    took = time.monotonic() - started
    assert len(slack.calls_of("chat.postEphemeral")) == before + 1  # asked once, not again
    assert took < 5.0, f"the notice waited {took:.1f} s: Slack's Retry-After was waited out"
    inbound.tell("C0INCIDENTS", "U0STRANGER", "not counted either")
    assert [e.text for e in slack.ephemerals][-1] == "not counted either"
