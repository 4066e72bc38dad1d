"""Integrations: found through entry points alone, each the whole of its service.

The toy integration (``tests/toy_integration/``) is installed the way a third-party
package is, with an entry point and nothing else: its action runs in a runbook, its
settings slot is read from ``TOCSIN_TOY__...``, the sandbox starts its fake (over TLS)
and points the settings there, and nothing in the core names it.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli_runner import ROOT, run_tocsin
from tests.toy_integration import integration as toy
from tocsin.action_registry import ActionRegistry
from tocsin.errors import ConfigurationError
from tocsin.integration import installed_integrations, integration_named
from tocsin.integrations.http import integration as http
from tocsin.integrations.jira import integration as jira
from tocsin.integrations.slack import integration as slack
from tocsin.running import journal_for
from tocsin.settings import load_settings

TOY_RUNBOOK = """\
runbook: toy-bell
version: 1
title: Ring the toy bell
summary: A runbook using the toy integration's action
severity: low
sources: [{title: Test, document: test.txt}]
steps:
  - id: ring
    title: Ring the bell
    action: toy.ring_bell
    with: {times: 2}
"""


def install_toy(site: Path) -> Path:
    """A dist-info declaring the toy's entry point, in ``site`` (to put on the path)."""
    dist = site / "toy_tocsin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-tocsin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[tocsin.integrations]\ntoy = tests.toy_integration:integration\n"
    )
    return site


@pytest.fixture
def toy_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The toy integration installed in this process (and its path, for subprocesses)."""
    assert integration_named("toy") is None
    site = install_toy(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    assert integration_named("toy") is toy, "the toy integration was not discovered"
    yield site


# -- the built-ins --------------------------------------------------------------------------


def test_the_built_in_integrations_are_declared_like_a_third_partys() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    assert set(declared) == {"tocsin.integrations"}, "one entry-point group, no second list"
    names = {integration.name for integration in installed_integrations()}
    assert (
        names
        == set(declared["tocsin.integrations"])
        == {
            "core",
            "firewall",
            "http",
            "jira",
            "microsoft",
            "notify",
            "pki",
            "platform",
            "slack",
        }
    )


def test_every_secret_an_action_reads_is_declared_by_its_integration() -> None:
    registry = ActionRegistry.discover()
    for integration in installed_integrations():
        declared = {secret.name for secret in integration.secrets}
        for definition in registry:
            if definition.module in integration.action_modules:
                assert set(definition.secrets) <= declared, (integration.name, definition.name)


def test_each_integrations_settings_are_a_slot_named_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOCSIN_SLACK__API_URL", "https://slack.example/api/")
    monkeypatch.setenv("TOCSIN_HTTP__SERVICES__PLATFORM", "https://platform.example/api/v1")
    monkeypatch.setenv("TOCSIN_JIRA__URL", "https://jira.example")
    settings = load_settings()
    assert slack.settings_of(settings).api_url == "https://slack.example/api/"
    assert http.settings_of(settings).services == {"platform": "https://platform.example/api/v1"}
    assert jira.settings_of(settings).url == "https://jira.example"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("TOCSIN_SLACK_API_URL", "TOCSIN_SLACK__API_URL"),
        ("TOCSIN_SERVICES__PLATFORM", "TOCSIN_HTTP__SERVICES__PLATFORM"),
        ("TOCSIN_AUDIT__ANCHOR_CHANNEL", "TOCSIN_SLACK__ANCHOR_CHANNEL"),
    ],
)
def test_a_setting_of_the_old_name_is_refused_with_its_new_name(
    old: str, new: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(old, "https://example.invalid/")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert caught.value.message == f"the setting {old} was renamed {new}"


def test_a_wrong_value_in_a_slot_is_named_with_its_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOCSIN_SLACK__USERGROUP_CACHE_SECONDS", "-1")
    with pytest.raises(ConfigurationError, match=r"slack\.usergroup_cache_seconds: "):
        load_settings()


# -- the toy ----------------------------------------------------------------------------------


def test_the_toy_is_found_through_its_entry_point_alone(
    toy_installed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "toy.ring_bell" in ActionRegistry.discover()
    monkeypatch.setenv("TOCSIN_TOY__GREETING", "ahoy")
    assert toy.settings_of(load_settings()).greeting == "ahoy"
    # ...and in another process, by the CLI: its action and its parameters in the schema.
    schema = run_tocsin("schema", env={"PYTHONPATH": f"{toy_installed}{os.pathsep}{ROOT}"})
    assert schema.returncode == 0, schema.stderr
    assert '"const": "toy.ring_bell"' in schema.stdout


def test_the_sandbox_starts_the_toy_fake_over_tls_and_points_the_settings_at_it(
    toy_installed: Path,
) -> None:
    from tests.toy_integration.fake import SANDBOX_TOKEN, FakeBell
    from tocsin.sandbox.assembly import Sandbox

    environment = dict(os.environ)
    with Sandbox(load_settings()) as sandbox:
        bell = sandbox.fake("toy", FakeBell)
        settings = toy.settings_of(sandbox.settings)
        assert settings.url == bell.url and bell.url.startswith("https://127.0.0.1:")
        assert settings.ca_bundle is not None and settings.ca_bundle.exists()
        assert sandbox.secrets.get("toy_token") == SANDBOX_TOKEN
        assert f"the toy bell rings at {bell.url}" in sandbox.notes
        assert dict(os.environ) == environment, "the sandbox changed this process's environment"
    assert dict(os.environ) == environment


@pytest.mark.slow
def test_the_toy_action_runs_in_a_runbook_in_the_sandbox(
    toy_installed: Path, prefect_server: str, tmp_path: Path
) -> None:
    runbook = tmp_path / "toy-bell.yaml"
    runbook.write_text(TOY_RUNBOOK)
    data = tmp_path / "data"
    result = run_tocsin(
        "run",
        str(runbook),
        "--ticket",
        "TOY-1",
        env={
            "PYTHONPATH": f"{toy_installed}{os.pathsep}{ROOT}",
            "TOCSIN_DATA_DIR": str(data),
            "TOCSIN_PREFECT_API_URL": prefect_server,
            "TOCSIN_TOY__GREETING": "ahoy",
        },
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ring: succeeded" in result.stdout
    assert re.search(r"SANDBOX mode: local fakes of .*\btoy\b", result.stdout), result.stdout
    journal = journal_for(load_settings(data_dir=data))
    try:
        run = journal.find_run("TOY-1", "toy-bell")
        assert run is not None
        step = journal.step(run.id, "ring")
        assert step is not None and step.status == "succeeded"
        # The fake answered (its count, the greeting of the toy's own settings slot), over TLS.
        assert step.outputs["rings"] == 2 and step.outputs["heard"] == "ahoy"
        assert step.outputs["url"].startswith("https://127.0.0.1:")
    finally:
        journal.close()


class RecordingLauncher:
    """Stands in for the gateway's launcher: records the runs it is asked to start."""

    def __init__(self) -> None:
        self.started: list[tuple[str, str, str]] = []

    def start(self, loaded: Any, incident: Any, inputs: dict[str, Any]) -> str:
        self.started.append((loaded.id, incident.ticket, incident.requested_via))
        return "recorded"


def test_the_gateway_serves_the_toys_route_which_hands_off_to_the_core(
    toy_installed: Path, tmp_path: Path
) -> None:
    from tocsin.gateway import GATEWAY_CHAIN, Gateway, GatewayServer
    from tocsin.settings import StaticSecrets

    settings = load_settings(data_dir=tmp_path / "data")
    secrets = StaticSecrets({"slack_signing_secret": "s3cret", "toy_token": "bell-token"})
    launcher = RecordingLauncher()
    gateway = Gateway(settings, secrets=secrets, launcher=launcher)  # type: ignore[arg-type]
    assert ("toy", "/toy/pressed") in [(source, r.path) for source, r in gateway.routes]
    press = {"runbook": "office-compromise", "ticket": "TOY-7"}
    try:
        with GatewayServer(gateway.app) as server:
            forged = httpx.post(
                f"{server.url}/toy/pressed", json=press, headers={"X-Toy-Token": "guess"}
            )
            pressed = httpx.post(
                f"{server.url}/toy/pressed", json=press, headers={"X-Toy-Token": "bell-token"}
            )
        refusals = [
            r["data"]
            for r in gateway.journal.events_of(GATEWAY_CHAIN)
            if r["kind"] == "gateway.request_refused"
        ]
    finally:
        gateway.close()
    # The forged press: refused by the toy's check, audited by the core under the toy's
    # name with what it claimed; nothing started.
    assert forged.status_code == 401 and forged.json()["error"] == "the bell's token is wrong"
    assert [(r["source"], r["claimed"]) for r in refusals] == [("toy", {"ticket": "TOY-7"})]
    # The genuine one: handed to the core, which found the runbook and asked the launcher.
    assert pressed.status_code == 202, pressed.text
    assert launcher.started == [("office-compromise", "TOY-7", "toy")]


# -- the toy as the ticket system -------------------------------------------------------------


def test_the_configured_ticket_systems_key_form_is_read_without_its_secrets(
    toy_installed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.toy_integration.tickets import SERVICENOW_STYLE_KEYS
    from tocsin.integration import ticket_keys, ticket_system
    from tocsin.settings import EnvironmentSecrets

    assert ticket_keys(load_settings()) is None  # no ticket system configured: none
    monkeypatch.setenv("TOCSIN_TOY__TICKET_DESK", "https://desk.invalid")
    settings = load_settings()
    assert ticket_keys(settings) is SERVICENOW_STYLE_KEYS
    with pytest.raises(ConfigurationError, match="secret 'toy_token' is not set"):
        ticket_system(settings, EnvironmentSecrets({}))  # building it needs them


def test_jira_configured_gives_jiras_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    from tocsin.integration import ticket_keys
    from tocsin.tickets import JIRA_KEYS

    monkeypatch.setenv("TOCSIN_JIRA__URL", "https://jira.example")
    assert ticket_keys(load_settings()) is JIRA_KEYS


def test_a_ticket_system_without_its_key_form_is_a_bug_of_its_package() -> None:
    from tocsin.integration import Integration

    with pytest.raises(
        TypeError, match="the acme integration has a ticket_system but no ticket_keys"
    ):
        Integration(name="acme", description="ACME", ticket_system=lambda settings, secrets: None)


def test_a_servicenow_style_key_is_refused_saying_the_form_when_no_ticket_system_is_configured(
    toy_installed: Path, tmp_path: Path
) -> None:
    runbook = tmp_path / "toy-bell.yaml"
    runbook.write_text(TOY_RUNBOOK)
    result = run_tocsin(
        "run",
        str(runbook),
        "--ticket",
        "INC0010001",
        env={"PYTHONPATH": f"{toy_installed}{os.pathsep}{ROOT}"},
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "'INC0010001' is not a ticket key" in result.stderr
    assert (
        "ticket keys are a project code, a dash and a number, like INC-1234: Jira's form, "
        "used while no ticket system is configured" in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_a_jira_key_is_refused_saying_the_form_of_the_configured_ticket_system(
    toy_installed: Path,
) -> None:
    environment = {
        "PYTHONPATH": f"{toy_installed}{os.pathsep}{ROOT}",
        "TOCSIN_TOY__TICKET_DESK": "https://desk.invalid",
    }
    result = run_tocsin("status", "INC-12", env=environment)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "'INC-12' is not a ticket key" in result.stderr
    assert "ticket keys are INC and seven digits, like INC0010001" in result.stderr


@pytest.mark.slow
def test_tocsin_run_accepts_the_configured_ticket_systems_keys(
    toy_installed: Path, prefect_server: str, tmp_path: Path
) -> None:
    runbook = tmp_path / "toy-bell.yaml"
    runbook.write_text(TOY_RUNBOOK)
    data = tmp_path / "data"
    result = run_tocsin(
        "run",
        str(runbook),
        "--ticket",
        "INC0010001",
        env={
            "PYTHONPATH": f"{toy_installed}{os.pathsep}{ROOT}",
            "TOCSIN_DATA_DIR": str(data),
            "TOCSIN_PREFECT_API_URL": prefect_server,
            # The toy desk is the ticket system; its token is not set: checking a key
            # needs neither the token nor a call to the desk.
            "TOCSIN_TOY__TICKET_DESK": "https://desk.invalid",
        },
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ring: succeeded" in result.stdout
    journal = journal_for(load_settings(data_dir=data))
    try:
        run = journal.find_run("INC0010001", "toy-bell")
        assert run is not None and run.status == "succeeded"
    finally:
        journal.close()


def test_nothing_outside_the_toys_folder_names_it() -> None:
    # Adding the toy touched its own folder and its tests: no core module, no packaging file,
    # no committed schema knows it.
    core = [
        path
        for path in (ROOT / "tocsin").rglob("*")
        if path.is_file() and not {"flows", "integrations"} & set(path.relative_to(ROOT).parts)
    ]
    places = [
        *core,
        *(ROOT / "integrations").rglob("*.py"),
        *(ROOT / "flows").rglob("*.py"),
        ROOT / "pyproject.toml",
        ROOT / "schema" / "runbook.schema.json",
    ]
    naming = [
        str(path.relative_to(ROOT))
        for path in places
        if path.suffix != ".pyc" and re.search(r"\btoy\b", path.read_text(errors="replace"))
    ]
    assert naming == []
