"""`tocsin integrations` and `tocsin integrations check`, through the real command, against
the fakes on loopback over TLS: what is configured, what works, and what to fix."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cli_runner import ROOT, run_tocsin
from tests.microsoft_support import LIMITED_CLIENT_ID, LIMITED_SECRET, fake_tenant
from tests.test_integrations import install_toy
from tocsin.integrations.jira.fake import (
    SANDBOX_JIRA_TOKEN,
    SANDBOX_JIRA_USER,
    SANDBOX_JIRA_WEBHOOK_SECRET,
    FakeJira,
)
from tocsin.integrations.microsoft.fake import (
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_TENANT_ID,
    FakeMicrosoft,
)
from tocsin.integrations.platform.fake import SANDBOX_PLATFORM_TOKEN, FakePlatform
from tocsin.integrations.slack.fake import SANDBOX_BOT_TOKEN, FakeSlack
from tocsin.sandbox.tls import LoopbackCA

SIGNING_SECRET = "slack-signing-secret-for-the-check"
CHAT_ONLY_TOKEN = "xoxb-chat-only"
AUDITOR_TOKEN = "xoxb-reads-history-too"


@dataclass(frozen=True)
class Fakes:
    slack: FakeSlack
    jira: FakeJira
    microsoft: FakeMicrosoft
    platform: FakePlatform
    ca: LoopbackCA


@pytest.fixture(scope="module")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fakes]:
    folder = tmp_path_factory.mktemp("checks")
    with fake_tenant(folder) as (microsoft, ca):
        slack = FakeSlack(
            tokens={
                SANDBOX_BOT_TOKEN: {"chat:write", "usergroups:read", "users:read"},
                CHAT_ONLY_TOKEN: {"chat:write"},
                AUDITOR_TOKEN: {"chat:write", "usergroups:read", "users:read", "channels:history"},
            }
        )
        jira = FakeJira()
        platform = FakePlatform()
        for fake in (slack, jira, platform):
            fake.start(tls=ca.server_context())
        try:
            yield Fakes(slack, jira, microsoft, platform, ca)
        finally:
            for fake in (slack, jira, platform):
                fake.stop()


def live_env(fakes: Fakes, **changes: str) -> dict[str, str]:
    """Every built-in integration configured live against the fakes, with ``changes``."""
    bundle = str(fakes.ca.ca_bundle)
    env = {
        "TOCSIN_MODE": "live",
        "TOCSIN_SLACK__API_URL": f"{fakes.slack.url}/api/",
        "TOCSIN_SLACK__CA_BUNDLE": bundle,
        "TOCSIN_SECRET_SLACK_BOT_TOKEN": SANDBOX_BOT_TOKEN,
        "TOCSIN_SECRET_SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "TOCSIN_JIRA__URL": fakes.jira.url,
        "TOCSIN_JIRA__USER": SANDBOX_JIRA_USER,
        "TOCSIN_JIRA__CA_BUNDLE": bundle,
        "TOCSIN_SECRET_JIRA_API_TOKEN": SANDBOX_JIRA_TOKEN,
        "TOCSIN_SECRET_JIRA_WEBHOOK_SECRET": SANDBOX_JIRA_WEBHOOK_SECRET,
        "TOCSIN_MICROSOFT__TENANT_ID": SANDBOX_TENANT_ID,
        "TOCSIN_MICROSOFT__CLIENT_ID": SANDBOX_CLIENT_ID,
        "TOCSIN_MICROSOFT__AUTHORITY_HOST": fakes.microsoft.url,
        "TOCSIN_MICROSOFT__GRAPH_URL": fakes.microsoft.url,
        "TOCSIN_MICROSOFT__EXCHANGE_URL": fakes.microsoft.url,
        "TOCSIN_MICROSOFT__DEFENDER_URL": fakes.microsoft.url,
        "TOCSIN_MICROSOFT__CA_BUNDLE": bundle,
        "TOCSIN_SECRET_MICROSOFT_CLIENT_SECRET": SANDBOX_CLIENT_SECRET,
        "TOCSIN_MICROSOFT__PASSWORD_CHANNEL": "slack-dm:U0LEAD0001",
        "TOCSIN_HTTP__SERVICES__PLATFORM": f"{fakes.platform.url}/api/v1",
        "TOCSIN_HTTP__CA_BUNDLE": bundle,
        "TOCSIN_DECLARED__BASE_URLS__PLATFORM": f"{fakes.platform.url}/api/v1",
        "TOCSIN_DECLARED__CA_BUNDLE": bundle,
        "TOCSIN_SECRET_PLATFORM_API_TOKEN": SANDBOX_PLATFORM_TOKEN,
    }
    env.update(changes)
    return env


def secret_values(env: dict[str, str]) -> list[str]:
    return [value for key, value in env.items() if key.startswith("TOCSIN_SECRET_")]


def assert_no_secret_shown(result: subprocess.CompletedProcess[str], env: dict[str, str]) -> None:
    for value in secret_values(env):
        assert value not in result.stdout and value not in result.stderr, "a secret was printed"
    assert "Traceback" not in result.stderr + result.stdout


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_every_configured_integration_checks_ok_against_the_services(fakes: Fakes) -> None:
    env = live_env(fakes)
    for fake in (fakes.slack, fakes.jira, fakes.platform):
        fake.reset()
    result = run_tocsin("integrations", "check", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for expected in (
        "slack: bot token: ok: signs in as @tocsin (U0TOCSINBOT)",
        "slack: scopes: ok: the bot token has chat:write, usergroups:read, users:read",
        "slack: signing secret: ok",
        f"jira: credentials: ok: signs in at {fakes.jira.url} as Tocsin ({SANDBOX_JIRA_USER}",
        "jira: permissions: ok: may browse, comment and attach",
        "jira: webhook secret: ok",
        "microsoft: Microsoft Graph: ok: signed in to tenant",
        "microsoft: Office 365 Exchange Online: ok",
        "microsoft: password channel: ok: temporary passwords go to slack-dm:U0LEAD0001",
        f"http: service platform: ok: {fakes.platform.url}/api/v1 answers",
        "platform: token: ok",
        "core: nothing to check",
    ):
        assert any(line.startswith(expected) for line in lines), (expected, result.stdout)
    assert lines[-1] == "all configured integrations ok"
    assert_no_secret_shown(result, env)


def test_a_password_channel_written_wrong_is_a_problem_saying_the_valid_forms(
    fakes: Fakes,
) -> None:
    env = live_env(fakes, TOCSIN_MICROSOFT__PASSWORD_CHANNEL="slack-dm:alice")
    result = run_tocsin("integrations", "check", "microsoft", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "microsoft: password channel: PROBLEM" in result.stdout
    assert "slack-dm:alice does not name a Slack user" in result.stdout
    assert_no_secret_shown(result, env)
    # Nothing was changed: Slack was asked auth.test only, Jira two GETs of the account.
    assert {r.path for r in fakes.slack.requests} == {"/api/auth.test"}
    assert {(r.method, r.path) for r in fakes.jira.requests} == {
        ("GET", "/rest/api/2/myself"),
        ("GET", "/rest/api/2/mypermissions"),
    }
    assert not fakes.platform.requests or {r.method for r in fakes.platform.requests} == {"HEAD"}


def test_a_wrong_slack_token_is_a_problem_saying_which_secret_to_fix(fakes: Fakes) -> None:
    env = live_env(fakes, TOCSIN_SECRET_SLACK_BOT_TOKEN="xoxb-not-the-right-one")
    result = run_tocsin("integrations", "check", "slack", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "slack: bot token: PROBLEM: Slack refused auth.test: invalid_auth" in result.stdout
    assert "    fix: check TOCSIN_SECRET_SLACK_BOT_TOKEN" in result.stdout
    assert result.stdout.splitlines()[-1] == "1 problem found"
    assert_no_secret_shown(result, env)


def test_a_slack_token_without_a_needed_scope_names_the_scope(fakes: Fakes) -> None:
    env = live_env(fakes, TOCSIN_SECRET_SLACK_BOT_TOKEN=CHAT_ONLY_TOKEN)
    result = run_tocsin("integrations", "check", "slack", env=env)
    assert result.returncode == 1
    scopes = next(line for line in result.stdout.splitlines() if line.startswith("slack: scopes"))
    assert "PROBLEM: the bot token lacks usergroups:read" in scopes
    assert "users:read" in scopes and "chat:write" not in scopes
    assert "OAuth & Permissions" in result.stdout and "reinstall" in result.stdout


def test_the_anchor_channel_is_read_back_as_audit_verify_does(fakes: Fakes) -> None:
    env = live_env(
        fakes,
        TOCSIN_SECRET_SLACK_BOT_TOKEN=AUDITOR_TOKEN,
        TOCSIN_SLACK__ANCHOR_CHANNEL="C0INCIDENTS",
    )
    readable = run_tocsin("integrations", "check", "slack", env=env)
    assert readable.returncode == 0, readable.stdout
    assert "slack: anchor channel: ok: the bot reads C0INCIDENTS" in readable.stdout
    missing = run_tocsin(
        "integrations", "check", "slack", env={**env, "TOCSIN_SLACK__ANCHOR_CHANNEL": "C0GONE"}
    )
    assert missing.returncode == 1
    assert (
        "slack: anchor channel: PROBLEM: Slack refused conversations.history in C0GONE: "
        "channel_not_found"
    ) in missing.stdout
    # Without channels:history, the scope is named (verify needs it).
    lacking = run_tocsin(
        "integrations",
        "check",
        "slack",
        env={**env, "TOCSIN_SECRET_SLACK_BOT_TOKEN": SANDBOX_BOT_TOKEN},
    )
    assert "the bot token lacks channels:history (reading audit heads back" in lacking.stdout


def test_a_microsoft_app_missing_permissions_names_each_and_how_to_grant_consent(
    fakes: Fakes,
) -> None:
    env = live_env(
        fakes,
        TOCSIN_MICROSOFT__CLIENT_ID=LIMITED_CLIENT_ID,
        TOCSIN_SECRET_MICROSOFT_CLIENT_SECRET=LIMITED_SECRET,
    )
    result = run_tocsin("integrations", "check", "microsoft", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    graph = next(
        line for line in result.stdout.splitlines() if line.startswith("microsoft: Microsoft Graph")
    )
    assert "PROBLEM" in graph
    assert "UserAuthenticationMethod.ReadWrite.All (DELETE /users/{id}/authentication/…)" in graph
    assert "AuditLog.Read.All (GET /auditLogs/signIns…)" in graph
    # Reading methods is granted (UserAuthenticationMethod.Read.All): not named as missing.
    assert "UserAuthenticationMethod.Read.All" not in graph
    assert "Add a permission → Microsoft Graph → Application permissions" in result.stdout
    assert "Grant admin consent" in result.stdout
    assert "microsoft: Office 365 Exchange Online: ok" in result.stdout
    assert_no_secret_shown(result, env)


def test_a_wrong_microsoft_client_secret_says_to_give_its_value_and_never_shows_it(
    fakes: Fakes,
) -> None:
    env = live_env(fakes, TOCSIN_SECRET_MICROSOFT_CLIENT_SECRET="a-secret-id-not-its-value")
    result = run_tocsin("integrations", "check", "microsoft", env=env)
    assert result.returncode == 1, "a refused sign-in is a problem found, not exit 3"
    graph = next(line for line in result.stdout.splitlines() if "Microsoft Graph" in line)
    assert "PROBLEM" in graph and "AADSTS7000215" in graph
    assert "give its Value (not its Secret ID)" in result.stdout
    assert_no_secret_shown(result, env)


def test_a_service_that_is_down_is_a_problem_line_not_a_traceback(fakes: Fakes) -> None:
    down = f"https://127.0.0.1:{closed_port()}"
    env = live_env(
        fakes,
        TOCSIN_JIRA__URL=down,
        TOCSIN_SLACK__API_URL=f"{down}/api/",
        TOCSIN_MICROSOFT__AUTHORITY_HOST=down,
        TOCSIN_HTTP__SERVICES__PLATFORM=f"{down}/api/v1",
        TOCSIN_HTTP__SERVICES__LEGACY=f"https://svc:legacy-password@127.0.0.1:{closed_port()}/",
    )
    result = run_tocsin("integrations", "check", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for prefix in (
        "jira: credentials: PROBLEM: Jira cannot be reached at",
        "slack: bot token: PROBLEM: Slack cannot be reached at",
        "microsoft: Microsoft Graph: PROBLEM",
        "http: service platform: PROBLEM",
        "http: service legacy: PROBLEM: https://127.0.0.1:",
    ):
        assert any(line.startswith(prefix) for line in lines), (prefix, result.stdout)
    assert result.stderr == ""
    assert "legacy-password" not in result.stdout, "a password in a service URL was shown"
    assert_no_secret_shown(result, env)


def test_json_says_each_integration_and_check_for_machines(fakes: Fakes) -> None:
    env = live_env(fakes, TOCSIN_SECRET_SLACK_BOT_TOKEN="xoxb-not-the-right-one")
    result = run_tocsin("integrations", "check", "--json", env=env)
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["mode"] == "live"
    by_name = {i["name"]: i for i in data["integrations"]}
    assert by_name["core"]["state"] == "nothing to check"
    slack = by_name["slack"]
    assert slack["state"] == "problem" and slack["ok"] is False and slack["configured"] is True
    assert slack["checks"][0] == {
        "check": "bot token",
        "ok": False,
        "message": "Slack refused auth.test: invalid_auth",
        "hint": slack["checks"][0]["hint"],
    }
    assert {
        "name": "slack_bot_token",
        "variable": "TOCSIN_SECRET_SLACK_BOT_TOKEN",
        "set": True,
    } in (slack["secrets"])
    assert by_name["jira"]["state"] == "ok" and all(c["ok"] for c in by_name["jira"]["checks"])
    assert_no_secret_shown(result, env)


def test_an_integration_not_configured_is_no_failure_unless_named(tmp_path: Path) -> None:
    env = {"TOCSIN_MODE": "live"}
    result = run_tocsin("integrations", "check", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "jira: not configured" in result.stdout.splitlines()
    assert result.stdout.splitlines()[-1] == "no integration to check is configured"
    named = run_tocsin("integrations", "check", "jira", env=env)
    assert named.returncode == 1
    assert "jira: credentials: PROBLEM: Jira is not configured" in named.stdout
    unknown = run_tocsin("integrations", "check", "jiraa", env=env)
    assert unknown.returncode == 2
    assert "no installed integration is named 'jiraa'" in unknown.stderr
    wrong = run_tocsin(
        "integrations", "check", env={**env, "TOCSIN_SLACK__CHANNEL_PER_INCIDENT": "maybe"}
    )
    assert wrong.returncode == 3, "settings that cannot be read are a configuration error"
    assert "slack.channel_per_incident" in wrong.stderr and "Traceback" not in wrong.stderr


def test_the_list_says_what_is_configured_and_which_secrets_are_set_never_their_values(
    fakes: Fakes,
) -> None:
    env = live_env(fakes)
    del env["TOCSIN_SECRET_JIRA_WEBHOOK_SECRET"]
    for args in (("integrations",), ("integrations", "list")):
        result = run_tocsin(*args, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        lines = result.stdout.splitlines()
        assert any(line.startswith("slack: configured") for line in lines)
        assert any(line.startswith("core: nothing to configure") for line in lines)
        assert "    secret TOCSIN_SECRET_SLACK_BOT_TOKEN: set" in lines
        assert "    secret TOCSIN_SECRET_JIRA_WEBHOOK_SECRET: not set" in lines
        assert_no_secret_shown(result, env)
    data = json.loads(run_tocsin("integrations", "--json", env=env).stdout)
    jira = next(i for i in data["integrations"] if i["name"] == "jira")
    assert jira["configured"] is True and jira["checks"] == []
    assert jira["state"] == "not checked"
    assert {s["name"]: s["set"] for s in jira["secrets"]} == {
        "jira_api_token": True,
        "jira_webhook_secret": False,
    }


def test_sandbox_mode_checks_the_fakes_and_a_third_party_check_plugs_in(tmp_path: Path) -> None:
    site = install_toy(tmp_path / "site")
    env = {"PYTHONPATH": f"{site}:{ROOT}"}
    result = run_tocsin("integrations", "check", env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("SANDBOX mode: checking the local fakes")
    assert any(line.startswith("toy: token: ok: the bell at https://127.0.0.1:") for line in lines)
    assert any(line.startswith("microsoft: Microsoft Graph: ok") for line in lines)
    assert "Traceback" not in result.stderr


def test_a_jira_account_without_a_project_permission_is_told_which(tmp_path: Path) -> None:
    ca = LoopbackCA.create(tmp_path / "tls")
    jira = FakeJira(permissions=frozenset({"BROWSE_PROJECTS"})).start(tls=ca.server_context())
    try:
        env = {
            "TOCSIN_MODE": "live",
            "TOCSIN_JIRA__URL": jira.url,
            "TOCSIN_JIRA__USER": SANDBOX_JIRA_USER,
            "TOCSIN_JIRA__CA_BUNDLE": str(ca.ca_bundle),
            "TOCSIN_SECRET_JIRA_API_TOKEN": SANDBOX_JIRA_TOKEN,
        }
        result = run_tocsin("integrations", "check", env=env)
    finally:
        jira.stop()
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert (
        "jira: permissions: PROBLEM: the Tocsin account lacks Add comments (progress, gates, "
        "audit heads); Create attachments (the report) in every project"
    ) in lines
    assert any(
        line.startswith("jira: webhook secret: PROBLEM: the secret jira_webhook_secret")
        for line in lines
    )
    assert "2 problems found" == lines[-1]
    assert_no_secret_shown(result, env)


def test_a_check_that_breaks_is_a_problem_line_naming_the_integration() -> None:
    from tocsin.integration import CheckResult, Integration
    from tocsin.integration_checks import CheckState, check_integration
    from tocsin.settings import SecretStore, Settings, StaticSecrets, load_settings

    def broken(settings: Settings, secrets: SecretStore) -> list[CheckResult]:
        raise KeyError("roles")

    bell: Integration[Any] = Integration(name="bell", description="a bell", check=broken)
    state = check_integration(bell, load_settings(), StaticSecrets({}))
    assert state.state is CheckState.PROBLEM
    assert state.results[0].message == "the check itself failed: KeyError: 'roles'"
    assert "a bug of the bell integration" in state.results[0].hint
    with pytest.raises(KeyError):
        check_integration(bell, load_settings(), StaticSecrets({}), debug=True)
