"""A step's retry waits at least what the service asked (Retry-After), within a cap; a huge
or unreadable Retry-After cannot hold a run. Through the real flow, against the fake
platform on loopback answering 429 with the header, then doing the call."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from tests.engine_support import HEAD, settings_journal, start_flow
from tocsin.integrations.platform.fake import Account, Device, FakePlatform, Office
from tocsin.journal import Journal
from tocsin.retry_after import parse_retry_after, retry_after_of
from tocsin.sandbox.fake_service import ReceivedRequest, Reply

TOKEN = "plt-retry-after-0123456789-secret"
DISCONNECT = "/api/v1/offices/OF-1/disconnect"
STEP = """\
steps:
  - id: disconnect
    title: Disconnect the office
    action: http.request
    with:
      service: platform
      method: POST
      url: /offices/OF-1/disconnect
      bearer_token_secret: platform_api_token
      json_body: {{reason: "retry-after test", ticket: "RA-1"}}
    retry: {{attempts: 3, backoff: 1s}}
{timeout}"""


class TimedPlatform(FakePlatform):
    """The fake platform, noting when each call to disconnect arrived (refused or not)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arrivals: list[float] = []

    def _receive(self, request: ReceivedRequest) -> Reply | None:
        if request.path == DISCONNECT:
            self.arrivals.append(time.monotonic())
        return super()._receive(request)


@pytest.fixture()
def platform(monkeypatch: pytest.MonkeyPatch) -> Iterator[TimedPlatform]:
    office = Office(
        id="OF-1",
        name="Courtier Dupont",
        devices=[Device("D-1", "CERT-0001")],
        accounts=[Account("A-1", "dupont")],
        open_sessions=2,
    )
    with TimedPlatform(token=TOKEN, offices=[office]) as fake:
        monkeypatch.setenv("TOCSIN_HTTP__SERVICES__PLATFORM", f"{fake.url}/api/v1")
        monkeypatch.setenv("TOCSIN_SECRET_PLATFORM_API_TOKEN", TOKEN)
        yield fake


@pytest.fixture()
def journal(prefect_server: str) -> Iterator[Journal]:
    opened = settings_journal()
    yield opened
    opened.close()


def run_throttled_once(
    journal: Journal, platform: TimedPlatform, tmp_path: Path, retry_after: str, timeout: str = ""
) -> tuple[float, list[dict[str, Any]]]:
    """Run the step with the platform answering its first call 429 ``Retry-After:
    retry_after``; the seconds between the refused call and the next, and the run's events."""
    ticket = f"RA-{uuid.uuid4().int % 10**9}"
    platform.fail_next(1, status=429, headers={"Retry-After": retry_after})
    text = HEAD.format(runbook_id="retry-after") + STEP.format(timeout=timeout)
    flow = start_flow(journal, text, tmp_path, ticket=ticket)
    result = flow.finish(timeout=60)
    assert result["status"] == "succeeded", result
    sent = [r for r in platform.requests if r.path == DISCONNECT]
    assert len(sent) == 2  # refused once, then done: once
    assert platform.office("OF-1").status == "disconnected"
    assert len(platform.arrivals) == 2
    return platform.arrivals[1] - platform.arrivals[0], journal.events_of(ticket)


def retry_record(events: list[dict[str, Any]]) -> dict[str, Any]:
    failed = [e["data"] for e in events if e["kind"] == "step.attempt_failed"]
    retried = [e["data"] for e in events if e["kind"] == "step.retried"]
    assert len(failed) == 1 and len(retried) == 1, (failed, retried)
    assert "429" in failed[0]["error"]
    assert failed[0]["retry_in_seconds"] == retried[0]["waited_seconds"]
    return retried[0]


def test_the_retry_waits_what_the_service_asked_when_longer_than_the_backoff(
    journal: Journal, platform: TimedPlatform, tmp_path: Path
) -> None:
    waited, events = run_throttled_once(journal, platform, tmp_path, "2")
    assert waited >= 2.0  # the Retry-After, not the 1 s backoff
    assert waited < 10.0
    record = retry_record(events)
    assert record["waited_seconds"] == 2.0
    assert record["wait_reason"] == "the service asked for 2 s (Retry-After)"


def test_a_huge_retry_after_is_capped_by_the_setting(
    journal: Journal, platform: TimedPlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOCSIN_MAX_RETRY_WAIT_SECONDS", "1.5")
    began = time.monotonic()
    waited, events = run_throttled_once(journal, platform, tmp_path, "999999999")
    assert 1.5 <= waited < 10.0 and time.monotonic() - began < 60
    record = retry_record(events)
    assert record["waited_seconds"] == 1.5
    assert record["wait_reason"] == (
        "the service asked for 1e+09 s (Retry-After), capped at 1.5 s (max_retry_wait_seconds)"
    )


def test_a_retry_after_date_far_ahead_is_capped_by_the_steps_timeout(
    journal: Journal, platform: TimedPlatform, tmp_path: Path
) -> None:
    next_year = format_datetime(datetime.now(UTC) + timedelta(days=365), usegmt=True)
    waited, events = run_throttled_once(
        journal, platform, tmp_path, next_year, timeout="    timeout: 3s\n"
    )
    assert 3.0 <= waited < 10.0
    record = retry_record(events)
    assert record["waited_seconds"] == 3.0
    assert record["wait_reason"].endswith("capped at 3 s (the step's timeout)")


def test_an_unreadable_retry_after_is_ignored_for_the_backoff(
    journal: Journal, platform: TimedPlatform, tmp_path: Path
) -> None:
    waited, events = run_throttled_once(journal, platform, tmp_path, "soon; 99999999999999999999")
    assert 1.0 <= waited < 5.0
    record = retry_record(events)
    assert record["waited_seconds"] == 1.0
    assert record["wait_reason"] == "the step's backoff (1 s)"


# -- reading the header ------------------------------------------------------------------------


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 0.5 ") == 0.5  # Microsoft Graph's fractions
    assert parse_retry_after("Thu, 03 Dec 2026 12:01:30 GMT", now=now) == 90.0
    assert parse_retry_after("Thu, 03 Dec 2026 11:00:00 GMT", now=now) == 0.0  # past: now
    assert parse_retry_after(["7", "9"]) == 7.0  # clients that keep values in lists
    assert retry_after_of({"Retry-After": "3"}) == 3.0  # any letter case
    assert retry_after_of({"retry-after": "3"}) == 3.0


@pytest.mark.parametrize(
    "value", [None, "", "soon", "-5", "nan", "inf", "1e9", "0x10", "12 s", "9" * 80, 5]
)
def test_an_unreadable_retry_after_is_none(value: Any) -> None:
    assert parse_retry_after(value) is None


def test_a_large_backoff_factor_is_capped_per_wait_as_prefect_reads_the_delays() -> None:
    from tocsin.flows.retry_waits import RetryDelays, RetryWaits
    from tocsin.model import RetryPolicy

    policy = RetryPolicy.model_validate({"attempts": 6, "backoff": "10s", "backoff_factor": 10})
    assert policy.delays_seconds()[-1] == 100000.0  # 28 hours, uncapped
    waits = RetryWaits(policy.delays_seconds(), 300.0, "max_retry_wait_seconds")
    delays = RetryDelays(waits, 5)
    assert list(delays) == [10.0, 100.0, 300.0, 300.0, 300.0]  # what Prefect records
    assert [delays[n] for n in range(5)] == [10.0, 100.0, 300.0, 300.0, 300.0]
    assert (
        waits.taken(3).reason
        == "the step's backoff (10000 s), capped at 300 s (max_retry_wait_seconds)"
    )
    waits.decide(0, 42.0)  # the first try failed with Retry-After: 42
    assert delays[0] == 42.0 and delays[1] == 100.0
    waits.forget()  # the step is run again: a new task run, its retries decided again
    assert delays[0] == 10.0
