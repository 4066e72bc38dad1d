"""Attacks on the gateway's door, over real HTTP to a real gateway on loopback.

What an attacker who can reach the gateway tries: bodies too large to hold (declared, or
chunked without a length, or trickled), headers without end, unsigned requests that smuggle
megabytes or markup into an incident's audit chain and report, malformed bodies hoping
for a 500 (or for nothing in the trail), and signed Jira deliveries replayed under a new
delivery id or long after they were sent. Each is refused with a 4xx and one sentence,
and audited in the gateway's own chain; nothing reaches an incident's chain or report.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from tests.engine_support import HEAD, wait_until
from tests.gateway_support import (
    environment_variables,
    gateway_from_settings,
    service_settings,
    settings_journal,
)
from tocsin.gateway import GATEWAY_CHAIN, MAX_CLAIM_CHARS, Gateway, GatewayServer
from tocsin.integrations.jira.fake import (
    SANDBOX_JIRA_WEBHOOK_SECRET,
    FakeJira,
)
from tocsin.integrations.slack.simulated_user import sign_slack_request
from tocsin.journal import Journal
from tocsin.settings import StaticSecrets, load_settings

SIGNING_SECRET = "e3b0c44298fc1c149afbf4c8996fb924"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

FAILING = (
    HEAD
    + """\
steps:
  - id: break_down
    title: A step that fails
    action: test.fail
    with: {{message: "the platform said no"}}
"""
)
PLAIN = (
    HEAD
    + """\
steps:
  - id: first
    title: First step
    action: test.count_idempotent
    with: {{file: "{{{{ inputs.state }}}}/first"}}
"""
)


@pytest.fixture(scope="module")
def jira() -> Iterator[FakeJira]:
    with FakeJira() as fake:
        yield fake


@pytest.fixture(scope="module")
def environment(
    prefect_server: str, jira: FakeJira, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """Settings every run and the gateway of this module read (a run reads the environment)."""
    folder = tmp_path_factory.mktemp("gateway-security")
    values = {
        **service_settings(folder, signing_secret=SIGNING_SECRET, jira=jira),
        "TOCSIN_GATEWAY__BODY_TIMEOUT_SECONDS": "2",
        # every refusal of this module is looked at one by one (the limit has its own test)
        "TOCSIN_GATEWAY__REFUSALS_AUDITED_PER_MINUTE": "100000",
    }
    (folder / "runbooks" / "breaks.yaml").write_text(FAILING.format(runbook_id="breaks"))
    (folder / "runbooks" / "plain.yaml").write_text(PLAIN.format(runbook_id="plain"))
    with environment_variables(values):
        yield folder


@pytest.fixture(scope="module")
def gateway(environment: Path) -> Iterator[Gateway]:
    with gateway_from_settings() as service:
        yield service


@pytest.fixture(scope="module")
def server(gateway: Gateway) -> Iterator[GatewayServer]:
    with GatewayServer(gateway.app, settings=gateway.settings.gateway) as running:
        yield running


@pytest.fixture
def journal(environment: Path) -> Iterator[Journal]:
    with settings_journal() as opened:
        yield opened


# -- helpers ------------------------------------------------------------------------------


def raw_exchange(url: str, head: str, parts: Iterable[bytes], timeout: float = 10.0) -> bytes:
    """Send a request as bytes on a plain socket (head, then the body in ``parts``) and return
    what the gateway answers. Fails the test if the gateway does not answer in ``timeout``:
    a gateway that waits for the rest of a body it should not read never answers."""
    where = urlsplit(url)
    with socket.create_connection((where.hostname, where.port), timeout=timeout) as connection:
        connection.sendall(head.encode("latin-1"))
        try:
            for part in parts:
                connection.sendall(part)
        except OSError:  # the gateway answered and closed while we were still sending
            pass
        answer = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = connection.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            answer += chunk
            if b"\r\n\r\n" in answer and answer.rstrip().endswith(b"}"):
                break
    assert answer, f"the gateway did not answer within {timeout} s (it is reading the body?)"
    return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def gateway_records(journal: Journal) -> list[dict[str, Any]]:
    return journal.events_of(GATEWAY_CHAIN)


def signed_slack(body: bytes) -> dict[str, str]:
    return {**sign_slack_request(SIGNING_SECRET, body), **FORM}


def signed_jira(body: bytes, delivery_id: str | None = None) -> dict[str, str]:
    digest = hmac.new(SANDBOX_JIRA_WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Hub-Signature": f"sha256={digest}",
        "X-Atlassian-Webhook-Identifier": delivery_id or os.urandom(8).hex(),
    }


def click_body(value: Any, *, user: Any = None, **payload: Any) -> bytes:
    """A ``block_actions`` payload clicking Approve on a gate button carrying ``value``."""
    document: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": "U0ATTACKER"} if user is None else user,
        "channel": {"id": "C0INCIDENTS"},
        "actions": [
            {
                "action_id": "tocsin_approve",
                "value": value if isinstance(value, str) else json.dumps(value),
            }
        ],
    }
    document.update(payload)
    return urlencode({"payload": json.dumps(document)}).encode()


def start_chain(journal: Journal, ticket: str) -> int:
    """Give ``ticket`` an audit chain, as a run would; the number of records it holds."""
    journal.record(ticket, "run.requested", actor="U0SUPPORT", via="test")
    return len(journal.events_of(ticket))


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


# -- malformed requests -------------------------------------------------------------------

GOOD = {"ticket": "SEC-9", "run": 1, "step": "approve_cut", "hash": "0123456789abcdef"}
ODD_VALUES = [
    pytest.param(click_body({**GOOD, "run": 1.5}), id="run-1.5"),
    pytest.param(click_body(json.dumps(GOOD).replace('"run": 1', '"run": 1e400')), id="run-1e400"),
    pytest.param(click_body({**GOOD, "run": 10**30}), id="run-10**30"),
    pytest.param(click_body({**GOOD, "run": "1"}), id="run-as-text"),
    pytest.param(click_body({**GOOD, "run": True}), id="run-true"),
    pytest.param(click_body({**GOOD, "run": -1}), id="run-negative"),
    pytest.param(click_body({**GOOD, "ticket": "not a ticket"}), id="ticket-not-a-key"),
    pytest.param(click_body({k: v for k, v in GOOD.items() if k != "ticket"}), id="no-ticket"),
    pytest.param(click_body({**GOOD, "step": "s" * 2000}), id="step-2000-chars"),
    pytest.param(click_body({**GOOD, "step": ["approve_cut"]}), id="step-a-list"),
    pytest.param(click_body({**GOOD, "hash": None}), id="no-hash"),
    pytest.param(click_body("not json"), id="value-not-json"),
    pytest.param(click_body("[1, 2]"), id="value-a-list"),
    pytest.param(click_body(12), id="value-a-number"),
    pytest.param(click_body(GOOD, user="U0LEAD1"), id="user-a-string"),
    pytest.param(click_body(GOOD, user={"id": 5}), id="user-id-a-number"),
    pytest.param(click_body(GOOD, user={"id": "<!channel>"}), id="user-id-markup"),
]
MALFORMED_INTERACTIONS = [
    *ODD_VALUES,
    pytest.param(click_body(GOOD, actions=[]), id="actions-empty"),
    pytest.param(click_body(GOOD, actions={"0": {}}), id="actions-an-object"),
    pytest.param(click_body(GOOD, actions="tocsin_approve"), id="actions-a-string"),
    pytest.param(click_body(GOOD, actions=[42]), id="actions-of-numbers"),
    pytest.param(click_body(GOOD, actions=[{"action_id": ["x"]}]), id="action-id-a-list"),
    pytest.param(click_body(GOOD, actions=[{"action_id": "tocsin_approve"}]), id="no-value"),
    pytest.param(urlencode({"payload": '{"type": "block_actions"}'}).encode(), id="no-actions"),
    pytest.param(b"payload=" + b"[" * 60_000, id="deep-json"),
    pytest.param(b"payload=" + b'{"a":' * 12_000, id="deep-objects"),
    pytest.param(b"payload=" + b"1" * 5000, id="huge-number"),
    pytest.param(b"payload=hello", id="payload-not-json"),
    pytest.param(b"payload=%5B1%5D", id="payload-a-list"),
    pytest.param(b"payload=NaN", id="payload-nan"),
    pytest.param(b"payload=\xff\xfe", id="invalid-utf8"),
    pytest.param(b"payload=%FF%FE", id="invalid-utf8-escaped"),
    pytest.param(b"command=%2Ftocsin", id="form-without-payload"),
    pytest.param(b"", id="empty-body"),
    pytest.param(b"&".join(b"f%d=1" % n for n in range(500)), id="too-many-fields"),
]


@pytest.mark.parametrize("body", MALFORMED_INTERACTIONS)
def test_malformed_actions_get_4xx_and_are_audited(
    server: GatewayServer, journal: Journal, body: bytes
) -> None:
    before = len(gateway_records(journal))
    answer = httpx.post(
        f"{server.url}/slack/interactions", content=body, headers=signed_slack(body)
    )
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.json()["ok"] is False and "Traceback" not in answer.text
    refused = gateway_records(journal)[before:]
    assert [(r["kind"], r["data"]["status"]) for r in refused] == [
        ("gateway.request_refused", answer.status_code)
    ]
    assert refused[0]["data"]["reason"] == answer.json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"command=%2Ftocsin&text=help", id="no-user-id"),
        pytest.param(b"command=%2Ftocsin&text=help&user_id=%3C%21channel%3E", id="user-id-markup"),
        pytest.param(b"command=%2Ftocsin&text=\xff&user_id=U0SUPPORT", id="invalid-utf8"),
    ],
)
def test_malformed_slash_commands_get_4xx_and_are_audited(
    server: GatewayServer, journal: Journal, body: bytes
) -> None:
    before = len(gateway_records(journal))
    answer = httpx.post(f"{server.url}/slack/commands", content=body, headers=signed_slack(body))
    assert 400 <= answer.status_code < 500, answer.text  # not UTF-8: not signed as Slack signs
    refused = gateway_records(journal)[before:]
    assert [r["data"]["status"] for r in refused] == [answer.status_code]


@pytest.mark.parametrize(
    ("timestamp", "signature"),
    [
        pytest.param(None, "v0=" + "0" * 64, id="no-timestamp"),
        pytest.param(b"<!channel>", b"v0=00", id="timestamp-markup"),
        pytest.param(b"1" * 5000, b"v0=00", id="timestamp-5000-digits"),
        pytest.param(b"now", "v0=\u00e9".encode("latin-1"), id="signature-not-ascii"),
        pytest.param(None, "v0=\u00e9".encode("latin-1"), id="fresh-signature-not-ascii"),
    ],
)
def test_malformed_signature_headers_get_4xx_and_are_audited(
    server: GatewayServer, journal: Journal, timestamp: bytes | None, signature: bytes
) -> None:
    before = len(gateway_records(journal))
    headers: dict[str, Any] = {**FORM, "X-Slack-Signature": signature}
    if timestamp != b"now":
        headers["X-Slack-Request-Timestamp"] = timestamp or str(int(time.time())).encode()
    body = click_body(GOOD)
    answer = httpx.post(f"{server.url}/slack/interactions", content=body, headers=headers)
    assert answer.status_code == 401, answer.text
    refused = gateway_records(journal)[before:]
    assert [r["data"]["status"] for r in refused] == [401]
    assert "<" not in refused[0]["data"]["reason"]


def jira_document(key: str = "SEC-20", **fields: Any) -> dict[str, Any]:
    return {
        "timestamp": int(time.time() * 1000),
        "webhookEvent": "jira:issue_created",
        "user": {"accountId": "5b10ac8d82e05b22cc7d4ef5", "displayName": "Mallory"},
        "issue": {"id": "10020", "key": key, "fields": {"summary": "x", **fields}},
    }


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"[1, 2]", id="a-list"),
        pytest.param(b"[" * 60_000, id="deep-json"),
        pytest.param(b"\xff\xfe{}", id="invalid-utf8"),
        pytest.param(json.dumps({**jira_document(), "issue": {}}).encode(), id="no-issue-key"),
        pytest.param(json.dumps(jira_document(key="not a key")).encode(), id="key-not-a-ticket"),
        pytest.param(json.dumps(jira_document(key="SEC-1" * 1000)).encode(), id="key-5000-chars"),
        pytest.param(
            json.dumps({k: v for k, v in jira_document().items() if k != "timestamp"}).encode(),
            id="no-timestamp",
        ),
        pytest.param(
            json.dumps({**jira_document(), "timestamp": "yesterday"}).encode(), id="timestamp-text"
        ),
        pytest.param(
            json.dumps(jira_document(customfield_10101="no equals sign here")).encode(),
            id="inputs-not-name-value",
        ),
    ],
)
def test_malformed_jira_webhooks_get_4xx_and_are_audited(
    server: GatewayServer, journal: Journal, jira: FakeJira, body: bytes
) -> None:
    before = len(gateway_records(journal))
    answer = httpx.post(f"{server.url}/webhooks/jira", content=body, headers=signed_jira(body))
    assert answer.status_code == 400, answer.text
    refused = gateway_records(journal)[before:]
    assert [(r["data"]["source"], r["data"]["status"]) for r in refused] == [("jira", 400)]
    assert journal.find_run("SEC-20", "plain") is None


def mutations(document: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every place in ``document`` (a path of keys), to be replaced by something odd."""
    yield path, document
    if isinstance(document, dict):
        for key, value in document.items():
            yield from mutations(value, (*path, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield from mutations(value, (*path, index))


def replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = json.loads(json.dumps(document))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return copy


ODD = [None, [], {}, "x" * 300, 1.5, 2**70, True, "<!channel>"]


def test_no_mutation_of_a_signed_click_gets_a_500(server: GatewayServer) -> None:
    """A structural fuzz: each place of a genuine click payload (and of its button's value)
    replaced by each odd value in turn, signed, so that the parser is what is tested."""
    payload = json.loads(parse_qs(click_body(GOOD).decode())["payload"][0])
    answers: dict[int, int] = {}
    with httpx.Client() as client:
        bodies = {
            urlencode({"payload": json.dumps(replaced(payload, path, odd))}).encode()
            for path, _ in mutations(payload)
            for odd in ODD
        }
        for body in sorted(bodies):  # distinct bodies: the same signed body twice is a replay
            answer = client.post(
                f"{server.url}/slack/interactions", content=body, headers=signed_slack(body)
            )
            assert answer.status_code in (200, 400), (body, answer.text)
            answers[answer.status_code] = answers.get(answer.status_code, 0) + 1
        for key in GOOD:
            for odd in ODD:
                body = click_body({**GOOD, key: odd})
                answer = client.post(
                    f"{server.url}/slack/interactions", content=body, headers=signed_slack(body)
                )
                assert answer.status_code == 400, (key, odd, answer.text)
    assert answers[400] > 50 and answers.get(200, 0) > 0  # both paths were reached


def test_an_unexpected_error_is_a_500_without_detail_and_audited(
    environment: Path, journal: Journal
) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from tocsin.integration import InboundRoute

    settings = load_settings()
    gateway = Gateway(settings)

    async def broken(request: Request) -> Response:
        raise RuntimeError("the database password is hunter2")

    route = InboundRoute("/broken", broken, "a broken route")
    app = Starlette(routes=[Route("/broken", gateway.guarded("slack", route), methods=["POST"])])
    before = len(gateway_records(journal))
    try:
        with GatewayServer(app) as running:
            answer = httpx.post(f"{running.url}/broken", content=b"x")
    finally:
        gateway.close()
    assert answer.status_code == 500
    assert answer.json() == {
        "ok": False,
        "error": "the gateway could not handle this request (logged)",
    }
    failed = gateway_records(journal)[before:]
    assert [r["kind"] for r in failed] == ["gateway.request_failed"]
    assert "RuntimeError" in failed[0]["data"]["reason"]
    assert "hunter2" not in json.dumps(failed[0]["data"])


# -- Jira replays -------------------------------------------------------------------------


def test_replayed_jira_body_with_new_delivery_id_starts_nothing(
    server: GatewayServer, gateway: Gateway, journal: Journal, jira: FakeJira
) -> None:
    jira.add_issue(
        "SEC-30",
        {"summary": "Phished", "customfield_10100": "breaks", "customfield_10101": "state=/x"},
    )
    body = json.dumps(jira.webhook_body("SEC-30")).encode()
    url = f"{server.url}/webhooks/jira"
    # The gateway starts a run before it answers, in a thread of its launcher (no deployment
    # here): once a webhook is answered, launcher.threads says whether it started one.
    assert not gateway.settings.gateway.deployment
    launched = list(gateway.launcher.threads)
    first = httpx.post(url, content=body, headers=signed_jira(body, "delivery-1"))
    assert first.status_code == 202, first.text
    assert len([t for t in gateway.launcher.threads if t not in launched]) == 1  # its run
    wait_until(
        lambda: any("Audit checkpoint: record" in c.body for c in jira.comments("SEC-30")),
        timeout=60,
        what="the run's last comment, the audit head",
    )
    run = journal.find_run("SEC-30", "breaks")
    assert run is not None and run.status == "failed"  # a new webhook would resume it
    starts = [e["kind"] for e in journal.events_of("SEC-30") if e["kind"].startswith("run.")]
    comments = len(jira.comments("SEC-30"))
    before = len(gateway_records(journal))
    launched = list(gateway.launcher.threads)

    retried = httpx.post(url, content=body, headers=signed_jira(body, "delivery-1"))
    assert retried.status_code == 200 and retried.json()["duplicate"] is True  # Jira retrying
    replayed = httpx.post(url, content=body, headers=signed_jira(body, "delivery-2"))
    assert replayed.status_code == 401
    assert "replayed Jira webhook" in replayed.json()["error"]

    assert [t for t in gateway.launcher.threads if t not in launched] == []  # none started
    after = [e["kind"] for e in journal.events_of("SEC-30") if e["kind"].startswith("run.")]
    assert after == starts  # not resumed, not started
    assert len(jira.comments("SEC-30")) == comments
    refused = [r["data"] for r in gateway_records(journal)[before:]]
    assert [(d["source"], d["status"], d["claimed"]) for d in refused] == [
        ("jira", 401, {"ticket": "SEC-30"})
    ]


def test_replayed_jira_body_is_refused_after_a_gateway_restart(
    environment: Path, journal: Journal, jira: FakeJira
) -> None:
    from tocsin.integrations.jira.client import JiraTickets
    from tocsin.settings import EnvironmentSecrets

    jira.add_issue("SEC-31", {"summary": "x", "customfield_10100": "no-such-runbook"})
    body = json.dumps(jira.webhook_body("SEC-31")).encode()
    answers = []
    for delivery in ("d-1", "d-2"):  # each gateway process sees the body once
        settings = load_settings()
        gateway = Gateway(
            settings, tickets=JiraTickets.from_settings(settings, EnvironmentSecrets())
        )
        with GatewayServer(gateway.app) as running:
            answers.append(
                httpx.post(
                    f"{running.url}/webhooks/jira",
                    content=body,
                    headers=signed_jira(body, delivery),
                )
            )
        gateway.close()
    assert [a.status_code for a in answers] == [422, 401]  # the journal remembers
    assert len(jira.comments("SEC-31")) == 1


def test_stale_jira_event_is_refused(
    server: GatewayServer, journal: Journal, jira: FakeJira, environment: Path
) -> None:
    state = environment / "SEC-40"
    state.mkdir()
    jira.add_issue(
        "SEC-40",
        {"summary": "x", "customfield_10100": "plain", "customfield_10101": f"state={state}"},
    )
    url = f"{server.url}/webhooks/jira"
    before = len(gateway_records(journal))
    for hours in (2, -1):  # captured two hours ago; dated an hour ahead
        document = jira.webhook_body("SEC-40")
        document["timestamp"] = int((time.time() - hours * 3600) * 1000)
        body = json.dumps(document).encode()
        answer = httpx.post(url, content=body, headers=signed_jira(body))
        assert answer.status_code == 401, answer.text
    refused = [r["data"]["reason"] for r in gateway_records(journal)[before:]]
    assert refused[0].startswith("stale Jira event: sent 7200 s ago")
    assert "in the future" in refused[1]
    assert journal.find_run("SEC-40", "plain") is None
    assert not journal.has_chain("SEC-40")
    # the same ticket, sent now: started (the refusal was the age, not the ticket)
    fresh = jira.send_webhook(url, SANDBOX_JIRA_WEBHOOK_SECRET, "SEC-40")
    assert fresh.status_code == 202, fresh.text
    wait_until(
        lambda: (
            (run := journal.find_run("SEC-40", "plain")) is not None and run.status == "succeeded"
        ),
        timeout=60,
        what="the fresh delivery's run to succeed",
    )
