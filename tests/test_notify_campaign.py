"""Campaigns: every recipient reached exactly once, through crashes, refusals, retries and
concurrent sending, at the configured rate; and the ledger that makes it so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.engine_support import wait_until
from tests.notify_support import (
    INCIDENT,
    REFUSED_DOMAIN,
    ROOT,
    STEP,
    child_command,
    client,
    fingerprint,
    outgoing,
    run_campaign,
    sender_for,
    smtp_server,
)
from tests.test_audit import postgres_url  # noqa: F401  (the fixture)
from tocsin.errors import ActionError, ConfigurationError
from tocsin.integrations.notify.campaign import message_digest
from tocsin.integrations.notify.fake_smtp import FakeSmtpServer
from tocsin.integrations.notify.ledger import DeliveryStatus, ledger_at
from tocsin.integrations.notify.pacing import Pacer, campaign_duration, duration_sentence
from tocsin.mail import OutgoingMail, SendOutcome, SendResult


@pytest.fixture(scope="module")
def started() -> Iterator[FakeSmtpServer]:
    with smtp_server() as server:
        yield server


@pytest.fixture
def server(started: FakeSmtpServer) -> FakeSmtpServer:
    started.reset()
    return started


@pytest.fixture
def journal(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'journal.db'}"


def statuses(journal: str) -> Counter[str]:
    with ledger_at(journal) as ledger:
        return Counter(d.status.value for d in ledger.deliveries(INCIDENT, STEP).values())


class GraphLikeSender:
    """A sender that, like Graph's sendMail, takes 4 messages at once and may answer 429
    with Retry-After; it counts what it was given and how many were in flight at once."""

    name = "graph-like"
    concurrency = 4
    can_reconcile = True

    def __init__(self, *, seconds_per_message: float = 0.02, throttle_first: int = 0) -> None:
        self.seconds_per_message = seconds_per_message
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.sent: Counter[str] = Counter()
        self.attempts: dict[str, list[float]] = {}
        self.throttle = throttle_first
        self.left: set[str] = set()
        """Message-IDs that reconcile finds in Sent Items."""

    def describe(self) -> str:
        return "a Graph-like mailbox"

    def check(self) -> None:
        return None

    def send(self, mail: OutgoingMail, committing: Callable[[], None]) -> SendResult:
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.attempts.setdefault(mail.to, []).append(time.monotonic())
            throttled = self.throttle > 0
            self.throttle -= int(throttled)
        try:
            time.sleep(self.seconds_per_message)  # the service's latency
            if throttled:
                return SendResult(SendOutcome.RETRY, "429 Too Many Requests", retry_after=0.3)
            committing()
            with self.lock:
                self.sent[mail.to] += 1
            return SendResult(SendOutcome.SENT, "202 Accepted")
        finally:
            with self.lock:
                self.in_flight -= 1

    def reconcile(self, mail: OutgoingMail) -> bool | None:
        return mail.message_id in self.left

    def close(self) -> None:
        return None


# -- the campaign over SMTP -----------------------------------------------------------------


def test_every_recipient_is_sent_once_and_bad_addresses_are_reported_with_their_rows(
    server: FakeSmtpServer, journal: str
) -> None:
    addresses = [client(n) for n in range(1, 31)]
    addresses[4] = f"someone@{REFUSED_DOMAIN}"
    addresses[21] = f"another@{REFUSED_DOMAIN}"
    told: list[tuple[int, int, str]] = []
    sender = sender_for(server)
    try:
        outcome = run_campaign(journal, sender, addresses, progress=lambda *args: told.append(args))
    finally:
        sender.close()
    assert (outcome.total, outcome.sent, outcome.already_sent) == (30, 28, 0)
    assert [(row, recipient) for row, recipient, _ in outcome.refused] == [
        (5, fingerprint(addresses[4])),
        (22, fingerprint(addresses[21])),
    ]
    assert all(detail.startswith("550 5.1.1") for _, _, detail in outcome.refused)
    assert all(REFUSED_DOMAIN not in detail for _, _, detail in outcome.refused)
    assert server.count() == 28
    assert all(server.received_by(a) == 1 for a in addresses if REFUSED_DOMAIN not in a)
    assert told[0] == (0, 30, "sent") and told[-1] == (30, 30, "sent")
    delivered = {d["recipient"]: d for d in outcome.deliveries}
    assert delivered[fingerprint(addresses[0])] == {
        "recipient": fingerprint(addresses[0]),
        "message": message_digest(outgoing(addresses[0], 1)),
        "status": "sent",
    }
    assert delivered[fingerprint(addresses[4])]["status"] == "refused"
    assert not any("@" in value for d in outcome.deliveries for value in d.values())
    assert statuses(journal) == Counter({"sent": 28, "refused": 2})

    # Run again (the step resumed): nobody is e-mailed twice, the refusals are still reported.
    again = sender_for(server)
    told.clear()
    try:
        second = run_campaign(journal, again, addresses, progress=lambda *args: told.append(args))
    finally:
        again.close()
    assert (second.sent, second.already_sent, len(second.refused)) == (0, 28, 2)
    assert told[0] == (30, 30, "sent")  # settled by the earlier run: counted as done
    assert server.count() == 28


def test_transient_failures_are_retried_until_sent(server: FakeSmtpServer, journal: str) -> None:
    addresses = [client(n) for n in range(1, 11)]
    server.fail_next(3)
    sender = sender_for(server)
    try:
        outcome = run_campaign(journal, sender, addresses, retry_delay_seconds=0.01)
    finally:
        sender.close()
    assert outcome.sent == 10 and outcome.retried == 3 and not outcome.refused
    assert all(server.received_by(a) == 1 for a in addresses)
    with ledger_at(journal) as ledger:
        attempts = sorted(d.attempts for d in ledger.deliveries(INCIDENT, STEP).values())
    assert sum(attempts) == 13


def test_a_recipient_still_failing_after_every_retry_is_reported_and_sent_by_the_next_run(
    server: FakeSmtpServer, journal: str
) -> None:
    server.fail_next(1_000)
    sender = sender_for(server)
    try:
        failed = run_campaign(journal, sender, [client(1)], retries=1, retry_delay_seconds=0.01)
        assert [detail for _, _, detail in failed.refused] == [
            "still failing after 2 attempt(s), tried again if the step is run again: "
            "451 4.3.0 Temporary failure, try again later"
        ]
        assert statuses(journal) == Counter({"retry": 1})
        server.fail_next(0)
        later = run_campaign(journal, sender, [client(1)])
    finally:
        sender.close()
    assert later.sent == 1 and server.received_by(client(1)) == 1


def test_a_wrong_password_stops_the_campaign_and_the_right_one_finishes_it(
    server: FakeSmtpServer, journal: str
) -> None:
    addresses = [client(n) for n in range(1, 6)]
    wrong = sender_for(server, password="not it")
    with pytest.raises(ConfigurationError, match="refused the login"):
        run_campaign(journal, wrong, addresses)
    assert server.count() == 0
    left = statuses(journal)
    assert set(left) <= {"pending", "retry"} and left.total() == 5
    right = sender_for(server)
    try:
        outcome = run_campaign(journal, right, addresses)
    finally:
        right.close()
    assert outcome.sent == 5 and all(server.received_by(a) == 1 for a in addresses)


def test_what_a_crash_left_is_sent_again_or_reported_in_doubt(
    server: FakeSmtpServer, journal: str
) -> None:
    addresses = [client(n) for n in range(1, 5)]
    with ledger_at(journal) as ledger:
        ledger.register(
            INCIDENT, STEP, [(fingerprint(a), row) for row, a in enumerate(addresses, 1)]
        )
        for address in addresses[:2]:
            ledger.claim(
                INCIDENT, STEP, fingerprint(address), message_digest="sha256:x", message_id="<x>"
            )
        # row 1: killed before the point of no return; row 2: killed after it.
        ledger.committing(INCIDENT, STEP, fingerprint(addresses[1]))
    sender = sender_for(server)
    try:
        outcome = run_campaign(journal, sender, addresses)
    finally:
        sender.close()
    assert outcome.sent == 3 and outcome.in_doubt == [(2, fingerprint(addresses[1]))]
    assert server.received_by(addresses[0]) == 1 and server.received_by(addresses[1]) == 0
    assert statuses(journal) == Counter({"sent": 3, "in_doubt": 1})


def test_a_reply_lost_after_the_final_dot_leaves_the_recipient_in_doubt_not_sent_twice(
    server: FakeSmtpServer, journal: str
) -> None:
    addresses = [client(n) for n in range(1, 4)]
    server.lose_reply_next(1)
    sender = sender_for(server)
    try:
        outcome = run_campaign(journal, sender, addresses)
        again = run_campaign(journal, sender, addresses)
    finally:
        sender.close()
    assert outcome.sent == 2 and outcome.in_doubt == [(1, fingerprint(addresses[0]))]
    assert again.sent == 0 and again.in_doubt == outcome.in_doubt
    assert all(server.received_by(a) == 1 for a in addresses)
    assert statuses(journal) == Counter({"sent": 2, "in_doubt": 1})


@pytest.mark.slow
@pytest.mark.timeout(600)  # two minutes on an idle machine: 5,000 messages, each fsynced
def test_a_campaign_of_5000_killed_in_the_middle_and_resumed_reaches_everyone_once(
    server: FakeSmtpServer, journal: str
) -> None:
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = child_command(journal, server, 5_000)
    child = subprocess.Popen(command, env=environment, cwd=ROOT, stdout=subprocess.PIPE)
    try:
        assert wait_until(lambda: server.count() >= 2_000, timeout=180, what="2,000 received")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        assert child.stdout is not None
        child.stdout.close()
    killed_at = server.count()
    assert killed_at < 5_000, "the campaign finished before it could be killed"
    resumed = subprocess.run(
        command, env=environment, cwd=ROOT, capture_output=True, text=True, timeout=280
    )
    assert resumed.returncode == 0, resumed.stderr
    outcome = json.loads(resumed.stdout)
    received = server.recipients()
    assert max(received.values()) == 1, "someone was e-mailed twice"
    in_doubt = [client(row) for row, _ in outcome["in_doubt"]]
    assert len(in_doubt) <= 1  # one message at a time over SMTP: at most one was at the dot
    missing_in_doubt = [address for address in in_doubt if received[address] == 0]
    assert len(received) + len(missing_in_doubt) == 5_000
    assert {client(n) for n in range(1, 5_001)} == set(received) | set(missing_in_doubt)
    assert outcome["already_sent"] + outcome["sent"] + len(in_doubt) == 5_000
    assert outcome["already_sent"] >= 2_000 - 1 and not outcome["refused"]


# -- concurrency and pacing -------------------------------------------------------------------


def test_concurrent_sending_keeps_to_the_senders_concurrency_and_the_pacer(journal: str) -> None:
    sender = GraphLikeSender(seconds_per_message=0.05, throttle_first=1)
    addresses = [client(n) for n in range(1, 41)]
    rate = 1_200.0  # 20 a second: 4 in flight of 50 ms each could do 80
    started = time.monotonic()
    outcome = run_campaign(journal, sender, addresses, rate=rate, retry_delay_seconds=0.01)
    elapsed = time.monotonic() - started
    assert outcome.sent == 40 and outcome.retried == 1
    assert set(sender.sent.values()) == {1} and len(sender.sent) == 40
    assert 2 <= sender.most_in_flight <= 4
    assert elapsed >= 40 / (rate / 60) * 0.9  # 41 slots (one retried) at 20 a second
    throttled = next(times for times in sender.attempts.values() if len(times) == 2)
    assert throttled[1] - throttled[0] >= 0.3  # Retry-After honoured, not the 10 ms delay


def test_a_committed_message_is_reconciled_when_the_sender_can_tell(journal: str) -> None:
    sender = GraphLikeSender(seconds_per_message=0)
    addresses = [client(1), client(2)]
    with ledger_at(journal) as ledger:
        ledger.register(
            INCIDENT, STEP, [(fingerprint(a), row) for row, a in enumerate(addresses, 1)]
        )
        for address in addresses:
            ledger.claim(
                INCIDENT, STEP, fingerprint(address), message_digest="sha256:x", message_id="<x>"
            )
            ledger.committing(INCIDENT, STEP, fingerprint(address))
    sender.left.add(outgoing(client(1), 1).message_id)  # found in Sent Items; client 2 not
    outcome = run_campaign(journal, sender, addresses)
    assert (outcome.already_sent, outcome.sent, outcome.in_doubt) == (1, 1, [])
    assert sender.sent == Counter({client(2): 1})


def test_the_pacer_keeps_to_the_rate_without_drift() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = Pacer(60.0, clock=lambda: now[0], sleep=sleep)
    pacer.wait()
    pacer.wait()
    now[0] += 2.5  # message 2 took long: the next slots are already due, then on schedule
    pacer.wait()
    pacer.wait()
    pacer.wait()
    assert slept == [1.0, 0.5]  # slots at 100, 101, 102, 103, 104
    assert now[0] == 104.0


def test_the_pacer_keeps_at_least_90_percent_of_the_configured_rate() -> None:
    rate = 1_200.0
    pacer = Pacer(rate)
    started = time.monotonic()
    for _ in range(61):
        pacer.wait()
    achieved = 60 * 60 / (time.monotonic() - started)
    assert 0.9 * rate <= achieved <= 1.02 * rate


def test_the_plan_says_how_long_a_campaign_takes() -> None:
    assert duration_sentence(5_000, 30) == "about 2 h 47 min"
    assert duration_sentence(20, 600) == "under a minute"
    assert duration_sentence(600, 30) == "about 20 min"
    assert duration_sentence(1_801, 30) == "about 1 h"
    assert campaign_duration(601, 600).total_seconds() == 60


# -- the ledger ---------------------------------------------------------------------------


def ledger_moves(url: str) -> None:
    with ledger_at(url) as ledger:
        assert ledger.register(INCIDENT, STEP, [("hmac-a", 1), ("hmac-b", 2)]) == 2
        assert ledger.register(INCIDENT, STEP, [("hmac-a", 1), ("hmac-c", 3)]) == 1
        ledger.claim(INCIDENT, STEP, "hmac-a", message_digest="sha256:1", message_id="<1@x>")
        ledger.committing(INCIDENT, STEP, "hmac-a")
        ledger.settle(INCIDENT, STEP, "hmac-a", DeliveryStatus.SENT, "250 OK")
        with pytest.raises(ActionError, match="cannot become"):
            ledger.committing(INCIDENT, STEP, "hmac-b")  # never claimed
        with pytest.raises(ActionError, match="cannot become"):
            ledger.claim(INCIDENT, STEP, "hmac-a", message_digest="sha256:1", message_id="<1@x>")
        found = ledger.deliveries(INCIDENT, STEP)
        assert found["hmac-a"].status is DeliveryStatus.SENT
        assert (found["hmac-a"].attempts, found["hmac-a"].detail) == (1, "250 OK")
        assert found["hmac-a"].message_digest == "sha256:1" and found["hmac-a"].row == 1
        assert {found["hmac-b"].status, found["hmac-c"].status} == {DeliveryStatus.PENDING}
        assert ledger.deliveries(INCIDENT, "another_step") == {}


def test_the_ledger_registers_once_and_moves_only_from_the_right_status(journal: str) -> None:
    ledger_moves(journal)


@pytest.mark.postgres
def test_the_ledger_works_on_postgresql(postgres_url: str) -> None:  # noqa: F811
    ledger_moves(postgres_url)
