"""An integration answering 429 then 503 for a minute: the step retries with its backoff,
the run goes on once the service is back, and the action took effect exactly once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import fault_support
from tests.engine_actions import calls
from tests.engine_support import HEAD, start_flow
from tocsin.integrations.platform.fake import Account, Device, FakePlatform, Office
from tocsin.journal import Journal
from tocsin.running import audit_key_for
from tocsin.settings import load_settings

pytestmark = pytest.mark.slow

TOKEN = "plt-outage-0123456789-secret"
OUTAGE_SECONDS = 60.0
DISCONNECT = "/api/v1/offices/OF-1/disconnect"
STEPS = """\
steps:
  - id: disconnect
    title: Disconnect the office
    action: http.request
    with:
      service: platform
      method: POST
      url: /offices/OF-1/disconnect
      bearer_token_secret: platform_api_token
      json_body: {reason: "outage test", ticket: "OUT-1"}
    retry: {attempts: 8, backoff: 2s, backoff_factor: 2}
  - id: after
    title: After the outage
    action: test.count
    with: {file: "{{ inputs.state }}/after"}
"""


@pytest.fixture()
def platform(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePlatform]:
    office = Office(
        id="OF-1",
        name="Courtier Dupont",
        devices=[Device("D-1", "CERT-0001")],
        accounts=[Account("A-1", "dupont")],
        open_sessions=3,
    )
    with FakePlatform(token=TOKEN, offices=[office]) as fake:
        monkeypatch.setenv("TOCSIN_HTTP__SERVICES__PLATFORM", f"{fake.url}/api/v1")
        monkeypatch.setenv("TOCSIN_SECRET_PLATFORM_API_TOKEN", TOKEN)
        yield fake


journal = fault_support.journal  # the fault modules' shared fixture, once per module


def test_a_minute_of_429_and_503_is_retried_through_and_the_call_takes_effect_once(
    journal: Journal, platform: FakePlatform, tmp_path: Path
) -> None:
    ticket = f"OUT-{uuid.uuid4().int % 10**9}"
    platform.outage(OUTAGE_SECONDS, statuses=(429, 503), retry_after=5)
    began = time.monotonic()
    flow = start_flow(journal, HEAD.format(runbook_id="outage") + STEPS, tmp_path, ticket=ticket)
    result = flow.finish(timeout=OUTAGE_SECONDS + 120)
    took = time.monotonic() - began
    assert result["status"] == "succeeded", result
    assert took >= OUTAGE_SECONDS  # it went on only after the service was back

    sent = [r for r in platform.requests if r.path == DISCONNECT]
    refused = platform.outage_replies
    assert refused >= 4 and len(sent) == refused + 1  # every try but the last was refused
    assert platform.office("OF-1").status == "disconnected"
    record = flow.step("disconnect")
    assert record is not None and record.outputs is not None
    assert record.outputs["body"]["sessions_closed"] == 3  # done once: a second call closes 0
    assert len(calls(tmp_path / "after")) == 1

    events = journal.events_of(ticket)
    failed = [e for e in events if e["kind"] == "step.attempt_failed"]
    retried = [e for e in events if e["kind"] == "step.retried"]
    assert len(failed) == refused and len(retried) == refused
    said = " ".join(str(e["data"]["error"]) for e in failed)
    assert "429" in said and "503" in said, said
    key = audit_key_for(load_settings())
    assert key is not None
    assert journal.verify(ticket, key.public_key).ok


def test_a_call_that_may_have_taken_effect_is_not_tried_again(
    journal: Journal, platform: FakePlatform, tmp_path: Path
) -> None:
    """A 502 after a POST (the service may have acted) is not retried, whatever the step's
    retry policy: http.request must not run twice. A 503 before it still is (see above)."""
    ticket = f"OUT-{uuid.uuid4().int % 10**9}"
    platform.fail_next(1, status=502)
    flow = start_flow(journal, HEAD.format(runbook_id="doubt") + STEPS, tmp_path, ticket=ticket)
    result = flow.finish(timeout=120)
    assert result["status"] == "failed", result
    assert len([r for r in platform.requests if r.path == DISCONNECT]) == 1  # tried once
    assert calls(tmp_path / "after") == []
    failed = [e for e in journal.events_of(ticket) if e["kind"] == "step.attempt_failed"]
    assert len(failed) == 1
    assert failed[0]["data"]["not_retried"] == "the call may have taken effect"
    assert not [e for e in journal.events_of(ticket) if e["kind"] == "step.retried"]
    record = flow.step("disconnect")
    assert record is not None and "not tried again" in (record.error or "") + result["reason"]
