"""Attacks on the gateway's door, over real HTTP to a real gateway on loopback: malformed
and replayed requests.

Malformed bodies hoping for a 500 (or for nothing in the trail): every mutation of a
signed click, broken slash commands, signature headers and Jira webhooks get a 4xx and
are audited; an unexpected error is a 500 without detail, audited too. Signed Jira
deliveries replayed under a new delivery id, after a restart, or long after they were
sent start nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
import pytest

from tests.engine_support import wait_until
from tests.gateway_attacks.support import (
    FORM,
    click_body,
    gateway_records,
    signed_jira,
    signed_slack,
)
from tocsin.gateway import Gateway, GatewayServer
from tocsin.integrations.jira.fake import SANDBOX_JIRA_WEBHOOK_SECRET, FakeJira
from tocsin.journal import Journal
from tocsin.settings import load_settings

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
