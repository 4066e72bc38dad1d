"""The gateway's parts on their own: Slack request checks, the user-group cache, announcements
(batching, failures), the incident channel, and `tocsin gateway` as a command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gateway_support import free_port
from tocsin.announce import Announcements, FinishedStep, GateState, RunFacts
from tocsin.errors import IntegrationError
from tocsin.gates import WaitRequest
from tocsin.gateway import (
    GATEWAY_CHAIN,
    MAX_CLAIM_CHARS,
    RefusalAudit,
    claim_text,
)
from tocsin.integrations.slack.directory import MIN_REFRESH_SECONDS, UsergroupMembers
from tocsin.integrations.slack.fake import SANDBOX_BOT_TOKEN, FakeSlack, SlackChannel
from tocsin.integrations.slack.signature import SlackRequestCheck
from tocsin.integrations.slack.simulated_user import sign_slack_request
from tocsin.journal import Journal

SECRET = "a-signing-secret"
RUN = RunFacts(
    ticket="INC-70",
    run_id=1,
    runbook="office-compromise",
    runbook_title="Broker office hacked",
    version="1",
    severity="critical",
    requested_by="U0SUPPORT",
    requested_via="cli",
    inputs={"office_id": "OF-1"},
)


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- Slack request checks -----------------------------------------------------------------


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def test_a_request_signed_with_the_secret_within_five_minutes_passes_once() -> None:
    clock = Clock()
    check = SlackRequestCheck(SECRET, clock)
    body = b"payload=%7B%7D"
    headers = lower(sign_slack_request(SECRET, body, int(clock.now) - 290))
    assert check.refusal(body, headers) is None
    assert "replayed request" in (check.refusal(body, headers) or "")


@pytest.mark.parametrize(
    ("secret", "age", "headers_given", "expected"),
    [
        ("wrong-secret", 0, True, "bad signature"),
        (SECRET, 301, True, "stale request: signed 301 s ago"),
        (SECRET, -400, True, "stale request"),  # from the future: a wrong clock
        (SECRET, 0, False, "unsigned request"),
    ],
)
def test_other_requests_are_refused_with_the_reason(
    secret: str, age: int, headers_given: bool, expected: str
) -> None:
    clock = Clock()
    body = b"command=%2Ftocsin&text=help"
    headers = lower(sign_slack_request(secret, body, int(clock.now) - age)) if headers_given else {}
    refusal = SlackRequestCheck(SECRET, clock).refusal(body, headers)
    assert refusal is not None and refusal.startswith(expected)


def test_a_tampered_body_or_a_malformed_timestamp_is_refused() -> None:
    clock = Clock()
    check = SlackRequestCheck(SECRET, clock)
    headers = lower(sign_slack_request(SECRET, b"text=status+INC-1", int(clock.now)))
    assert "bad signature" in (check.refusal(b"text=status+INC-2", headers) or "")
    headers["x-slack-request-timestamp"] = "yesterday"
    assert "malformed" in (check.refusal(b"text=status+INC-1", headers) or "")


# -- refusals at the door ----------------------------------------------------------------


def test_refusals_past_the_limit_are_summarised_once_the_minute_is_over(tmp_path: Path) -> None:
    clock = Clock(0.0)
    journal = Journal(f"sqlite:///{tmp_path / 'journal.db'}")
    audit = RefusalAudit(journal, per_minute=2, clock=clock)
    for _ in range(5):
        audit.refused("10.0.0.1", "gateway.request_refused", "slack", 401, "bad signature: x", {})
    audit.refused("10.0.0.2", "gateway.request_refused", "jira", 413, "request body too large", {})
    kinds = [(e["kind"], e["data"]["peer"]) for e in journal.events_of(GATEWAY_CHAIN)]
    assert kinds == [("gateway.request_refused", "10.0.0.1")] * 2 + [
        ("gateway.request_refused", "10.0.0.2")
    ]
    clock.now = 59.0
    audit.flush()
    assert len(journal.events_of(GATEWAY_CHAIN)) == 3  # the minute is not over
    clock.now = 61.0
    audit.flush()
    summary = journal.events_of(GATEWAY_CHAIN)[-1]
    assert summary["kind"] == "gateway.refusals_summarised"
    assert summary["data"]["count"] == 3 and summary["data"]["peer"] == "10.0.0.1"
    assert summary["data"]["reasons"] == {"401 bad signature": 3}
    # a new minute: audited one by one again
    audit.refused("10.0.0.1", "gateway.request_refused", "slack", 401, "bad signature: x", {})
    assert journal.events_of(GATEWAY_CHAIN)[-1]["kind"] == "gateway.request_refused"
    audit.close()
    assert len(journal.events_of(GATEWAY_CHAIN)) == 5  # nothing counted: no empty summary
    journal.close()


def test_claims_are_cut_short_and_stripped_of_markup() -> None:
    assert claim_text("approve_cut") == "approve_cut"
    assert claim_text("<!channel> *x* `y`") == "??channel? ?x? ?y?"
    assert claim_text("s" * 1000) == "s" * MAX_CLAIM_CHARS + "..."
    assert claim_text("a\u202eb\x00c\n") == "a?b?c?"
    assert claim_text(10**40) == "1e+40" and claim_text(None) == "none"
    assert claim_text({"nested": "dict"}) == "?dict?"


# -- user groups --------------------------------------------------------------------------


def test_user_group_members_are_cached_and_someone_missing_is_looked_up_again() -> None:
    clock = Clock(0.0)
    answers = [["U0A"], ["U0A", "U0NEW"]]
    calls: list[str] = []

    def lookup(group: str) -> list[str]:
        calls.append(group)
        return answers[min(len(calls), len(answers)) - 1]

    members = UsergroupMembers(lookup, ttl_seconds=60, clock=clock)
    assert members.is_member("U0A", "S0LEADS") and len(calls) == 1
    clock.now = 30
    assert members.is_member("U0A", "S0LEADS") and len(calls) == 1  # still fresh
    assert members.is_member("U0NEW", "S0LEADS") and len(calls) == 2  # looked up again
    clock.now = 30 + MIN_REFRESH_SECONDS / 2
    assert not members.is_member("U0STRANGER", "S0LEADS") and len(calls) == 2  # not so soon
    clock.now = 100
    assert members.is_member("U0A", "S0LEADS") and len(calls) == 3  # expired


def test_when_slack_cannot_list_a_group_the_last_answer_stands() -> None:
    clock = Clock(0.0)
    failing = False

    def lookup(group: str) -> list[str]:
        if failing:
            raise IntegrationError("approval", "Slack", "cannot be reached", retryable=True)
        return ["U0A"]

    members = UsergroupMembers(lookup, ttl_seconds=60, clock=clock)
    assert members.members("S0LEADS") == frozenset({"U0A"})
    failing, clock.now = True, 120
    assert members.members("S0LEADS") == frozenset({"U0A"})
    assert UsergroupMembers(lookup, 60, clock).members("S0OTHER") is None


# -- announcements ------------------------------------------------------------------------


class Recorder:
    name = "recorder"

    def __init__(self, fail_with: Exception | None = None) -> None:
        self.batches: list[list[str]] = []
        self.calls: list[str] = []
        self.fail_with = fail_with

    def _maybe_fail(self, what: str) -> None:
        self.calls.append(what)
        if self.fail_with is not None:
            raise self.fail_with

    def run_started(self, run: RunFacts) -> None:
        self._maybe_fail("run_started")

    def steps_finished(self, run: RunFacts, steps: object) -> None:
        self._maybe_fail("steps_finished")
        self.batches.append([s.step_id for s in steps])  # type: ignore[attr-defined]

    def gate_changed(self, run: RunFacts, gate: GateState) -> None:
        self._maybe_fail("gate_changed")

    def reminder(self, run: RunFacts, gate: GateState, minutes_left: int) -> None:
        self._maybe_fail("reminder")

    def decision_refused(self, run: RunFacts, refused: object) -> None:
        self._maybe_fail("decision_refused")

    def run_finished(self, run: RunFacts, status: str, reason: str) -> None:
        self._maybe_fail("run_finished")

    def anchor(self, run: RunFacts, seq: int, head: str, key_id: str) -> str:
        self._maybe_fail("anchor")
        return "recorder:1"

    def close(self) -> None:
        return None


def request() -> WaitRequest:
    return WaitRequest(
        kind="approval",
        prompt="Cut?",
        deadline="2030-01-01T00:00:00+00:00",
        requester="U0SUPPORT",
        gate_hash="f" * 64,
        approvers=["U0A", "U0B"],
        group="leads",
        quorum=2,
    )


def test_finished_steps_are_sent_in_batches_and_before_a_gate() -> None:
    clock = Clock(0.0)
    recorder = Recorder()
    failures: list[tuple[str, str, str]] = []
    announce = Announcements(
        [recorder], RUN, on_failure=lambda *f: failures.append(f), batch_seconds=20, clock=clock
    )
    for n in range(30):
        clock.now = n  # one step a second
        announce.step_finished(FinishedStep(f"s{n}", f"Step {n}", "succeeded"))
    announce.gate_changed(GateState("gate", "Gate", request()))
    announce.run_finished("succeeded", "done")
    assert [len(batch) for batch in recorder.batches] == [21, 9]  # 30 steps, 2 messages
    assert recorder.calls[-2:] == ["gate_changed", "run_finished"]
    assert not failures


def test_a_failing_announcer_is_audited_and_a_lasting_refusal_stops_it() -> None:
    failures: list[tuple[str, str, str]] = []
    outage = Recorder(IntegrationError("announce", "Slack", "answered 503", retryable=True))
    refused = Recorder(IntegrationError("jira.comment", "Jira", "answered 404", retryable=False))
    refused.name = "jira"
    announce = Announcements(
        [outage, refused], RUN, on_failure=lambda *f: failures.append(f), batch_seconds=0
    )
    announce.run_started()
    announce.step_finished(FinishedStep("s1", "Step 1", "succeeded"))
    assert announce.anchor(1, "0" * 64, "k") == []
    assert [(name, doing) for name, doing, _ in failures] == [
        ("recorder", "run_started"),
        ("jira", "run_started"),
        ("recorder", "steps_finished"),
        ("recorder", "anchor"),
    ]
    assert "nothing more is sent to jira" in failures[1][2]
    assert refused.calls == ["run_started"]


# -- the incident channel -----------------------------------------------------------------


@pytest.fixture(scope="module")
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(channels=(SlackChannel("C0OLD", "inc-inc-71"),)) as fake:
        yield fake


def test_a_channel_per_incident_is_created_and_holds_the_thread(
    slack: FakeSlack, tmp_path: Path
) -> None:
    from tocsin.integrations.slack.client import SlackCredentials
    from tocsin.integrations.slack.incident_thread import SlackIncidentAnnouncer
    from tocsin.integrations.slack.settings import SlackSettings

    journal = Journal(f"sqlite:///{tmp_path / 'journal.db'}")
    announcer = SlackIncidentAnnouncer(
        SlackCredentials(SANDBOX_BOT_TOKEN, base_url=f"{slack.url}/api/"),
        SlackSettings(channel_per_incident=True),
        journal,
    )
    run = RunFacts(**{**RUN.__dict__, "ticket": "INC-71"})
    announcer.run_started(run)
    announcer.gate_changed(run, GateState("gate", "Approve the cut", request()))
    created = [c for c in slack.channels.values() if c.name.startswith("inc-inc-71")]
    assert sorted(c.name for c in created) == ["inc-inc-71", "inc-inc-71-2"]  # the first was taken
    channel = next(c.id for c in created if c.name == "inc-inc-71-2")
    header, gate = [m for m in slack.messages if m.channel == channel]
    assert "Incident INC-71" in json.dumps(header.blocks)
    assert gate.thread_ts == header.ts
    assert "tocsin_approve" in json.dumps(gate.blocks)
    journal.close()


# -- the command --------------------------------------------------------------------------


def test_tocsin_gateway_serves_signed_slash_commands(prefect_server: str, tmp_path: Path) -> None:
    from tocsin.embedded import stop_server
    from tocsin.integrations.slack.sandbox import SANDBOX_SIGNING_SECRET
    from tocsin.settings import load_settings

    port = free_port()
    environment = {
        **os.environ,
        "TOCSIN_DATA_DIR": str(tmp_path / "data"),
        # The session's Prefect server: without it, the gateway starts one of its own in its
        # data folder, which outlives the gateway (as `tocsin run`'s does) and the test.
        "TOCSIN_PREFECT_API_URL": prefect_server,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "tocsin", "gateway", "--port", str(port)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, "gateway did not start"
            time.sleep(0.2)
        body = b"command=%2Ftocsin&text=status+INC-72&user_id=U0SUPPORT&channel_id=C0INCIDENTS"
        headers = {
            **sign_slack_request(SANDBOX_SIGNING_SECRET, body),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        answer = httpx.post(f"{url}/slack/commands", content=body, headers=headers)
        assert answer.status_code == 200
        # what /tocsin status says of an unknown incident depends on who asks; it names it
        assert answer.json()["response_type"] == "ephemeral" and "INC-72" in answer.json()["text"]
        assert httpx.post(f"{url}/slack/commands", content=body).status_code == 401
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)
        left = stop_server(load_settings(data_dir=tmp_path / "data"))  # whatever happened
    assert not left, "the gateway started a Prefect server of its own"
    assert f"Slack interactivity request URL: http://127.0.0.1:{port}/slack/interactions" in output
    assert "Traceback" not in output
