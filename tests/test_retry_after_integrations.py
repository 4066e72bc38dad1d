"""Each integration's error for a 429 or 503 carries the service's Retry-After
(``IntegrationError.retry_after``), which the step's retry waits for (test_retry_waits.py).
Against each service's fake on loopback, after the integration's own bounded retries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.microsoft_support import fake_tenant, settings_for
from tests.pki_support import Office, seeded_office
from tocsin.action_registry import ActionRegistry
from tocsin.actions import ActionContext
from tocsin.errors import IntegrationError
from tocsin.integrations.jira.client import JiraTickets
from tocsin.integrations.jira.fake import FakeJira
from tocsin.integrations.microsoft import CLIENT_SECRET, integration
from tocsin.integrations.microsoft.client import Graph, MicrosoftCredentials
from tocsin.integrations.microsoft.fake import SANDBOX_USER
from tocsin.integrations.slack.fake import FakeSlack, SlackChannel
from tocsin.settings import StaticSecrets, load_settings

JIRA_USER = "tocsin@broker-support.example"
JIRA_TOKEN = "ATATT3xCloudTokenForRetryAfter0042"
SLACK_TOKEN = "xoxb-retry-after-test"
ISSUES = {"INC-12": {"summary": "Incident"}}


def test_jira_still_busy_carries_its_retry_after() -> None:
    with FakeJira(token=JIRA_TOKEN, user=JIRA_USER, issues=ISSUES) as jira:
        jira.fail_next(10, 429, {"errorMessages": ["Rate limited"]}, {"Retry-After": "7"})
        tickets = JiraTickets(jira.url, JIRA_TOKEN, user=JIRA_USER, max_retry_wait_seconds=0.01)
        with pytest.raises(IntegrationError) as caught:
            tickets.comment("INC-12", "hello")
    assert caught.value.status_code == 429 and caught.value.unapplied
    assert caught.value.retry_after == 7.0


def test_jira_garbage_retry_after_is_not_carried() -> None:
    with FakeJira(token=JIRA_TOKEN, user=JIRA_USER, issues=ISSUES) as jira:
        jira.fail_next(10, 503, {"errorMessages": ["Down"]}, {"Retry-After": "whenever"})
        tickets = JiraTickets(jira.url, JIRA_TOKEN, user=JIRA_USER, max_retry_wait_seconds=0.01)
        with pytest.raises(IntegrationError) as caught:
            tickets.comment("INC-12", "hello")
    assert caught.value.status_code == 503 and caught.value.retry_after is None


@pytest.mark.slow
def test_slack_ratelimited_carries_its_retry_after() -> None:
    slack = FakeSlack(
        tokens={SLACK_TOKEN: {"chat:write"}},
        channels=[SlackChannel("C0INCIDENTS", "incidents")],
        retry_after_seconds=0,  # slack_sdk itself waits it (plus up to 1 s) before each retry
    )
    with slack:
        slack.rate_limit_next(3)
        context = ActionContext(
            incident="INC-1",
            step_id="notify",
            secrets=StaticSecrets({"slack_bot_token": SLACK_TOKEN}),
            settings=load_settings(slack={"api_url": slack.url + "/api/"}),
        )
        with pytest.raises(IntegrationError) as caught:
            ActionRegistry.discover().get("slack.post_message").invoke(
                context, {"channel": "C0INCIDENTS", "text": "never sent"}
            )
    assert caught.value.status_code == 429 and caught.value.unapplied
    assert caught.value.retry_after == 0.0  # said, and said to be now: not None


def test_graph_throttling_longer_than_its_bound_carries_the_retry_after(tmp_path: Path) -> None:
    with fake_tenant(tmp_path) as (fake, ca):
        settings = settings_for(fake, ca, max_retry_wait_seconds=0.5)
        credentials = MicrosoftCredentials.from_secrets(
            settings, StaticSecrets({CLIENT_SECRET: "sandbox~microsoft~client~secret"})
        )
        graph = Graph(credentials, integration.settings_of(settings), "test.action")
        fake.throttle(1, retry_after="120")
        with pytest.raises(IntegrationError, match="asks to wait 120 s") as caught:
            graph.call("GET", "/users/{user}", user=SANDBOX_USER)
    assert caught.value.unapplied and caught.value.retry_after == 120.0


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    with seeded_office(tmp_path) as started:
        yield started


def test_vault_still_sealed_carries_its_retry_after(office: Office) -> None:
    office.fake.fail_next(10, 503, {"errors": ["Vault is sealed"]}, {"Retry-After": "4"})
    with pytest.raises(IntegrationError) as caught:
        office.run(
            "pki.revoke_certificates",
            {"devices": ["PC-1"]},
            max_retries=1,
            max_retry_wait_seconds=0.05,
        )
    assert caught.value.status_code == 503 and caught.value.retry_after == 4.0
    assert caught.value.unapplied  # sealed: Vault did not act, the step may run again
