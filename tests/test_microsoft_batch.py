"""Graph's ``$batch`` and Outlook's 4 concurrent requests per mailbox: the client sends at
most 4 requests for one mailbox in a batch, and the fake answers what Graph answers to a
batch that does not (429 ``ApplicationThrottled``) and to a failed dependency (424)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests import microsoft_support
from tests.microsoft_support import fake_tenant, graph, run_action, signed_in
from tocsin.integrations.microsoft.client import BatchItem, Graph
from tocsin.integrations.microsoft.fake import (
    ATTACKER_FORWARD,
    SANDBOX_USER,
    FakeMicrosoft,
    compromised_tenant,
)
from tocsin.sandbox.tls import LoopbackCA
from tocsin.settings import Settings

USER = SANDBOX_USER
RULES = f"/users/{USER}/mailFolders/inbox/messageRules"
ATTACKER_RULES = 12


def _attacker_rule(number: int) -> dict[str, Any]:
    return {
        "id": f"AQAAAJattacker{number:02d}=",
        "displayName": "." * (number + 4),
        "sequence": 100 + number,
        "isEnabled": True,
        "conditions": {},
        "actions": {"forwardTo": [{"emailAddress": {"address": ATTACKER_FORWARD}}]},
        "exceptions": {},
    }


@pytest.fixture(scope="module")
def tenant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeMicrosoft, LoopbackCA]]:
    seeded = compromised_tenant()
    (user_id,) = [u["id"] for u in seeded.users if u["userPrincipalName"] == USER]
    seeded.rules[user_id].extend(_attacker_rule(n) for n in range(ATTACKER_RULES))
    with fake_tenant(tmp_path_factory.mktemp("microsoft"), tenant=seeded) as started:
        yield started


# The Microsoft modules' shared per-test fixtures (tests.microsoft_support).
fake = microsoft_support.fake
settings = microsoft_support.settings


def sent_batches(fake: FakeMicrosoft, seen: int) -> list[list[str]]:
    """The URL of each item of each ``$batch`` the fake received after ``seen`` requests."""
    return [
        [str(item["url"]) for item in r.json()["requests"]]
        for r in fake.requests[seen:]
        if r.path == "/v1.0/$batch"
    ]


def raw_batch(client: Graph, requests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Send ``requests`` as one ``$batch`` as given (no splitting); each answer by id."""
    answer = client.send("POST", client.url("/$batch"), json_body={"requests": requests})
    assert answer.status == 200
    return {str(entry["id"]): entry for entry in answer.body["responses"]}


def test_twelve_requests_for_one_mailbox_go_four_to_a_batch_and_none_is_throttled(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    client = graph(settings)
    seen = signed_in(client, fake)
    mailbox = [BatchItem(f"rules{n}", "GET", RULES) for n in range(12)]
    directory = [BatchItem(f"user{n}", "GET", f"/users/{USER}") for n in range(16)]
    outcomes = client.batch(mailbox + directory)
    assert [o.status for o in outcomes] == [200] * 28
    # Four of the mailbox's with the directory's filling the first batch, then four and four;
    # no item came back throttled (a retry would show as another batch).
    sizes = [(sum(url == RULES for url in urls), len(urls)) for urls in sent_batches(fake, seen)]
    assert sizes == [(4, 20), (4, 4), (4, 4)]


def test_the_fake_refuses_a_fifth_unsequenced_request_for_one_mailbox(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    client = graph(settings)
    signed_in(client, fake)
    answers = raw_batch(client, [{"id": str(n), "method": "GET", "url": RULES} for n in range(6)])
    assert [answers[str(n)]["status"] for n in range(6)] == [200, 200, 200, 200, 429, 429]
    error = answers["5"]["body"]["error"]
    assert error["code"] == "ApplicationThrottled"
    assert "MailboxConcurrency" in error["message"]
    # The same six, each waiting for the one before (dependsOn): Outlook runs one at a time.
    chained = raw_batch(
        client,
        [
            {
                "id": str(n),
                "method": "GET",
                "url": RULES,
                **({"dependsOn": [str(n - 1)]} if n else {}),
            }
            for n in range(6)
        ],
    )
    assert [chained[str(n)]["status"] for n in range(6)] == [200] * 6


def test_a_failed_dependency_fails_its_dependents_with_424(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    client = graph(settings)
    signed_in(client, fake)
    answers = raw_batch(
        client,
        [
            {"id": "gone", "method": "DELETE", "url": f"{RULES}/no-such-rule"},
            {"id": "next", "method": "GET", "url": RULES, "dependsOn": ["gone"]},
            {"id": "last", "method": "GET", "url": RULES, "dependsOn": ["next"]},
        ],
    )
    assert answers["gone"]["status"] == 404
    assert answers["next"]["status"] == answers["last"]["status"] == 424
    assert answers["next"]["body"]["error"]["code"] == "FailedDependency"


def test_removing_fifteen_inbox_rules_batches_them_four_at_a_time_and_removes_each(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    seen = len(fake.requests)
    removed = run_action("microsoft.remove_inbox_rules", {"user": USER}, settings)
    # The seed's three flagged rules and the twelve attacker rules; the user's own rule stays.
    assert len(removed["removed"]) == 3 + ATTACKER_RULES
    assert [r["displayName"] for r in fake.rules_of(USER)] == ["Clients"]
    assert [len(urls) for urls in sent_batches(fake, seen)] == [4, 4, 4, 3]
