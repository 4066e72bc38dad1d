"""Attacks on the gateway's door, over real HTTP to a real gateway on loopback: size and
what unsigned requests may leave behind.

What an attacker who can reach the gateway tries: bodies too large to hold (declared, or
chunked without a length, or trickled), headers without end, unsigned requests that
smuggle megabytes or markup into an incident's audit chain and report, and floods of
forged requests. Each is refused with a 4xx and one sentence, and audited in the gateway's
own chain (a flood: a few times, then summarised); nothing reaches an incident's chain or
report. Malformed and replayed requests: ``test_requests.py``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from tests.gateway_attacks.support import (
    FORM,
    SIGNING_SECRET,
    click_body,
    gateway_records,
    raw_exchange,
    start_chain,
    status_of,
)
from tocsin.gateway import GATEWAY_CHAIN, MAX_CLAIM_CHARS, Gateway, GatewayServer
from tocsin.integrations.slack.simulated_user import sign_slack_request
from tocsin.journal import Journal
from tocsin.settings import StaticSecrets, load_settings

# -- body size ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/slack/interactions", "/slack/commands", "/webhooks/jira"])
def test_hundred_megabyte_unsigned_post_is_refused_before_reading(
    server: GatewayServer, journal: Journal, path: str
) -> None:
    before = len(gateway_records(journal))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: gateway\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {100 * 1024 * 1024}\r\n\r\n"
    )
    # Only the first kilobyte is ever sent: the answer must come without the other 100 MB.
    answer = raw_exchange(server.url, head, [b"payload=" + b"x" * 1024])
    assert status_of(answer) == 413
    assert b"request body too large: 104857600 bytes" in answer
    refused = gateway_records(journal)[before:]
    assert [(r["data"]["status"], r["data"]["reason"][:22]) for r in refused] == [
        (413, "request body too large")
    ]


def test_chunked_body_without_length_is_capped(server: GatewayServer, journal: Journal) -> None:
    before = len(gateway_records(journal))
    head = (
        "POST /slack/interactions HTTP/1.1\r\nHost: gateway\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"x" * 8192
    # 72 KiB in chunks and never the last, empty chunk: the gateway must stop at its limit.
    parts = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 9
    answer = raw_exchange(server.url, head, parts)
    assert status_of(answer) == 413
    assert b"reading stopped there" in answer
    assert gateway_records(journal)[before:][0]["data"]["status"] == 413


def test_body_trickled_slower_than_the_timeout_is_cut_off(
    server: GatewayServer, journal: Journal
) -> None:
    before = len(gateway_records(journal))
    head = (
        "POST /slack/commands HTTP/1.1\r\nHost: gateway\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n"
    )
    started = time.monotonic()
    answer = raw_exchange(server.url, head, [b"text=status"])  # and then nothing more
    assert status_of(answer) == 408
    assert time.monotonic() - started < 8  # the module's timeout is 2 s
    assert gateway_records(journal)[before:][0]["data"]["status"] == 408


def test_megabyte_of_headers_is_refused_by_the_server(server: GatewayServer) -> None:
    head = (
        "POST /slack/commands HTTP/1.1\r\nHost: gateway\r\n"
        f"X-Padding: {'a' * 1024 * 1024}\r\nContent-Length: 0\r\n\r\n"
    )
    answer = raw_exchange(server.url, head, [])
    assert status_of(answer) in (400, 431)


# -- what unsigned requests may leave in the trail ----------------------------------------


def test_unsigned_request_cannot_write_megabytes_into_an_incident_chain(
    server: GatewayServer, journal: Journal
) -> None:
    records = start_chain(journal, "SEC-1")
    before = len(gateway_records(journal))
    huge_step = "cut_" + "x" * 40_000  # fits under the body limit; 2 MB would not be read at all
    value = {"ticket": "SEC-1", "run": 1, "step": huge_step, "hash": "0" * 16}
    body = click_body(value, user={"id": "U0" + "A" * 15_000})
    assert len(body) > 50_000
    unsigned = httpx.post(f"{server.url}/slack/interactions", content=body, headers=FORM)
    assert unsigned.status_code == 401
    two_megabytes = httpx.post(
        f"{server.url}/slack/interactions",
        content=click_body({**value, "step": "x" * 2_000_000}),
        headers=FORM,
    )
    assert two_megabytes.status_code == 413

    assert len(journal.events_of("SEC-1")) == records  # the incident's chain is untouched
    refused = [r["data"] for r in gateway_records(journal)[before:]]
    assert [d["status"] for d in refused] == [401, 413]
    claimed = refused[0]["claimed"]
    assert claimed["ticket"] == "SEC-1"
    assert claimed["step_id"] == huge_step[:MAX_CLAIM_CHARS] + "..."
    assert len(claimed["user"]) == MAX_CLAIM_CHARS + 3
    assert refused[1]["claimed"] == {}  # nothing was read of the 2 MB
    assert len(json.dumps(refused)) < 2000


def test_unsigned_claims_never_reach_another_incidents_report(
    server: GatewayServer, journal: Journal, slack_marks: list[str]
) -> None:
    from tocsin.evidence import incident_report

    start_chain(journal, "SEC-2")
    before = len(gateway_records(journal))
    for mark in slack_marks:
        value = {"ticket": "SEC-2", "run": 1, "step": mark, "hash": "0" * 16}
        forged = httpx.post(
            f"{server.url}/slack/interactions",
            content=click_body(value, user={"id": mark}),
            headers={**FORM, **sign_slack_request("not-the-secret", b"")},
        )
        assert forged.status_code == 401
    command = urlencode(
        {"command": "/tocsin", "text": f"status SEC-2 {slack_marks[0]}", "user_id": "U0X"}
    ).encode()
    assert httpx.post(f"{server.url}/slack/commands", content=command).status_code == 401

    settings = load_settings()
    for fmt in ("json", "md", "html"):
        report = incident_report(settings, "SEC-2", fmt=fmt, lang="en", with_prefect=False)
        text = report.decode("utf-8")
        assert "request refused" not in text.lower() and "bad signature" not in text
        for mark in slack_marks:
            assert mark not in text
    at_the_door = gateway_records(journal)[before:]
    assert len(at_the_door) == len(slack_marks) + 1  # audited, in the gateway's chain
    shown = json.dumps([r["data"] for r in at_the_door])
    assert all(a["data"]["claimed"]["ticket"] == "SEC-2" for a in at_the_door[:-1])
    assert "<" not in shown and "`" not in shown and "*" not in shown


@pytest.fixture
def slack_marks() -> list[str]:
    """What an attacker writes hoping Slack or a report shows it as markup."""
    return ["<!channel>", "<https://evil.example|Approve here>", "`code` *bold*", "a\u202eb\x00c"]


def test_flood_of_forged_requests_is_audited_a_few_times_then_summarised(
    tmp_path: Path,
) -> None:
    from tocsin.running import journal_for

    settings = load_settings(data_dir=tmp_path / "data", gateway={"refusals_audited_per_minute": 3})
    gateway = Gateway(settings, secrets=StaticSecrets({"slack_signing_secret": SIGNING_SECRET}))
    with GatewayServer(gateway.app, settings=settings.gateway) as running:
        with httpx.Client() as client:
            answers = [
                client.post(f"{running.url}/slack/commands", content=b"text=run+x+INC-1")
                for _ in range(20)
            ]
    assert {a.status_code for a in answers} == {401}  # every one refused, audited or not
    gateway.close()  # the minute's summary is written at the latest when the gateway stops
    journal = journal_for(settings)
    try:
        records = journal.events_of(GATEWAY_CHAIN)
        signed = journal.checkpoints_of(GATEWAY_CHAIN)
    finally:
        journal.close()
    assert signed[-1].seq == len(records)  # the gateway signed its chain when it stopped
    assert [r["kind"] for r in records] == ["gateway.request_refused"] * 3 + [
        "gateway.refusals_summarised"
    ]
    summary = records[-1]["data"]
    assert summary["count"] == 17 and summary["peer"] == "127.0.0.1"
    assert summary["reasons"] == {"401 unsigned request": 17}
