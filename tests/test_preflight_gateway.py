"""`/tocsin run` in Slack: a run that could not finish is refused in the reply, before it starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_gateway import (  # noqa: F401  (the gateway, its fakes and its settings)
    environment,
    gateway,
    jira,
    journal,
    server,
    slack,
    slack_user,
    usergroup_clock,
)
from tocsin.integrations.slack.simulated_user import SimulatedSlack
from tocsin.journal import Journal

pytestmark = pytest.mark.slow

NEEDS_A_TOKEN = """\
runbook: slash-needs
version: 1
title: Slash needs
summary: Calls the platform with a token the gateway does not have
severity: low
sources: [{title: Test, document: test.txt}]
steps:
  - id: call
    title: Call
    action: http.request
    with: {url: "https://platform.example/api/x", bearer_token_secret: gateway_lacks_this}
"""


def test_a_slash_command_start_missing_a_secret_is_refused_in_the_reply(
    environment: Path,  # noqa: F811
    journal: Journal,  # noqa: F811
    slack_user: SimulatedSlack,  # noqa: F811
) -> None:
    (environment / "runbooks" / "slash-needs.yaml").write_text(NEEDS_A_TOKEN)
    reply = slack_user.slash_command("U0SUPPORT", "run slash-needs PFG-1")
    assert reply.status_code == 200
    text = reply.json()["text"]
    assert "slash-needs for PFG-1 was not started: 1 thing to set first" in text
    assert "secret 'gateway_lacks_this' is not set" in text
    assert "TOCSIN_SECRET_GATEWAY_LACKS_THIS" in text
    assert journal.find_run("PFG-1", "slash-needs") is None  # no run, no step
    refused = [e for e in journal.events_of("PFG-1") if e["kind"] == "run.request_refused"]
    assert [e["data"]["runbook"] for e in refused] == ["slash-needs"]  # the refusal is audited
    assert [e["kind"] for e in journal.events_of("PFG-1")] == ["run.request_refused"]
