"""A run that could not finish is refused before it starts, with everything to set at once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.cli_runner import run_tocsin
from tests.engine_support import settings_journal
from tocsin.errors import ConfigurationError

NEEDS_SECRETS = """\
runbook: needs-secrets
version: 1
title: Needs secrets
summary: Reads two secrets, the second in its undo
severity: low
sources: [{title: Test, document: test.txt}]
approver_groups:
  leads: {users: [U0LEAD1]}
steps:
  - id: gate
    title: Gate
    approval: {approvers: leads, prompt: "Go?", timeout: 10m}
  - id: tell
    title: Tell
    action: slack.post_message
    with: {channel: "#support-incidents", text: "started"}
    undo:
      action: http.request
      with: {url: "https://platform.example/api/undo", method: POST, bearer_token_secret: platform_undo_token}
"""


def _key(path: Path, mode: int = 0o600) -> Path:
    from tocsin.audit import AuditKey

    AuditKey.generate(path)
    path.chmod(mode)
    return path


def _flow_runs_named(name: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        return list(
            client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name]))
            )
        )


def _live(tmp_path: Path, key: Path) -> dict[str, str]:
    return {"TOCSIN_MODE": "live", "TOCSIN_AUDIT__KEY_PATH": str(key)}


@pytest.mark.slow
def test_a_run_missing_secrets_is_refused_before_any_flow_run_or_audit_event(
    prefect_server: str, tmp_path: Path
) -> None:
    runbook = tmp_path / "needs-secrets.yaml"
    runbook.write_text(NEEDS_SECRETS)
    env = _live(tmp_path, _key(tmp_path / "signing.key"))
    result = run_tocsin("run", str(runbook), "--ticket", "PRE-1", "--as", "U0REQUESTER", env=env)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "needs-secrets for PRE-1 was not started: 2 things to set first" in result.stderr
    assert "secret 'platform_undo_token' is not set (needed by step tell)" in result.stderr
    assert "TOCSIN_SECRET_PLATFORM_UNDO_TOKEN" in result.stderr
    assert "secret 'slack_bot_token' is not set (needed by step tell)" in result.stderr
    assert "TOCSIN_SECRET_SLACK_BOT_TOKEN" in result.stderr
    assert "tocsin doctor" in result.stderr  # the hint
    assert "Traceback" not in result.stderr
    assert _flow_runs_named("PRE-1-needs-secrets") == []
    journal = settings_journal()
    try:
        assert journal.find_run("PRE-1", "needs-secrets") is None
        assert journal.events_of("PRE-1") == []
    finally:
        journal.close()


@pytest.mark.slow
def test_every_problem_is_listed_in_one_refusal(prefect_server: str, tmp_path: Path) -> None:
    runbook = tmp_path / "needs-secrets.yaml"
    runbook.write_text(NEEDS_SECRETS)
    key = _key(tmp_path / "signing.key", 0o644)
    env = {**_live(tmp_path, key), "TOCSIN_SECRET_SLACK_BOT_TOKEN": "xoxb-set"}
    result = run_tocsin("run", str(runbook), "--ticket", "PRE-2", "--as", "U0REQUESTER", env=env)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "2 things to set first" in result.stderr
    assert f"the audit signing key {key} may be read or changed by other users (mode 0644)" in (
        result.stderr
    )
    assert f"fix: chmod 600 {key}" in result.stderr
    assert "platform_undo_token" in result.stderr
    assert "slack_bot_token" not in result.stderr  # it is set
    assert "Traceback" not in result.stderr
    assert _flow_runs_named("PRE-2-needs-secrets") == []


@pytest.mark.slow
def test_the_gateway_refuses_a_start_missing_a_secret_before_any_flow_run(
    prefect_server: str, tmp_path: Path
) -> None:
    """The slash command and ticket starts go through the launcher: it checks first."""
    from tocsin.action_registry import ActionRegistry
    from tocsin.gateway import RunLauncher
    from tocsin.incident import Incident
    from tocsin.settings import StaticSecrets, load_settings
    from tocsin.validation import load_runbook_bytes

    settings = load_settings()
    loaded = load_runbook_bytes(
        NEEDS_SECRETS.encode(), str(tmp_path / "needs-secrets.yaml"), ActionRegistry.discover()
    )
    journal = settings_journal()
    try:
        launcher = RunLauncher(settings, journal, StaticSecrets({"platform_undo_token": "set"}))
        incident = Incident(ticket="PRE-3", requested_by="U0REQUESTER", requested_via="slack")
        with pytest.raises(ConfigurationError) as refused:
            launcher.start(loaded, incident, {})
        assert "needs-secrets for PRE-3 was not started: 1 thing to set first" in str(refused.value)
        assert "secret 'slack_bot_token' is not set" in str(refused.value)
        assert launcher.threads == []
        assert journal.find_run("PRE-3", "needs-secrets") is None
        assert journal.events_of("PRE-3") == []
        assert _flow_runs_named("PRE-3-needs-secrets") == []
    finally:
        journal.close()


def test_the_secrets_of_steps_and_undo_are_needed_and_set_ones_are_not_refused() -> None:
    from tocsin.action_registry import ActionRegistry
    from tocsin.preflight import runbook_needs
    from tocsin.settings import StaticSecrets, load_settings
    from tocsin.validation import load_runbook_bytes

    registry = ActionRegistry.discover()
    loaded = load_runbook_bytes(NEEDS_SECRETS.encode(), "needs-secrets.yaml", registry)
    needs = runbook_needs(loaded.runbook, registry, load_settings(), StaticSecrets({}))
    assert sorted(n.area for n in needs) == ["secret platform_undo_token", "secret slack_bot_token"]
    given = StaticSecrets({"platform_undo_token": "a", "slack_bot_token": "b"})
    assert runbook_needs(loaded.runbook, registry, load_settings(), given) == []


def test_a_key_that_is_a_link_is_a_problem(tmp_path: Path) -> None:
    from tocsin.preflight import signing_key
    from tocsin.settings import load_settings

    real = _key(tmp_path / "real.key")
    link = tmp_path / "link.key"
    os.symlink(real, link)
    found = signing_key(load_settings(mode="live", audit={"key_path": link}))
    assert not found.ok
    assert "is a symbolic link" in found.message
    assert signing_key(load_settings(mode="live", audit={"key_path": real})).ok


def test_approvers_in_a_user_group_need_the_chat_integration_that_lists_them() -> None:
    from tocsin.action_registry import ActionRegistry
    from tocsin.preflight import runbook_needs
    from tocsin.settings import StaticSecrets, load_settings
    from tocsin.validation import load_runbook_bytes

    text = NEEDS_SECRETS.replace("leads: {users: [U0LEAD1]}", "leads: {usergroup: S0LEADS}")
    registry = ActionRegistry.discover()
    loaded = load_runbook_bytes(text.encode(), "needs-secrets.yaml", registry)
    settings = load_settings(mode="live")
    needs = runbook_needs(loaded.runbook, registry, settings, StaticSecrets({}))
    directory = [n for n in needs if n.area == "integration slack"]
    assert len(directory) == 1
    assert "approver group leads is a slack user group" in directory[0].message
    assert directory[0].hint == "set TOCSIN_SECRET_SLACK_BOT_TOKEN"
    given = StaticSecrets({"slack_bot_token": "xoxb-1", "platform_undo_token": "t"})
    assert runbook_needs(loaded.runbook, registry, settings, given) == []
