"""A run whose steps call actions needing an integration setting that is not set (a PKI
without its Vault URL, Microsoft 365 without its tenant) is refused before it starts, the
setting named with where to set it; `tocsin doctor RUNBOOK` says the same."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from pydantic import BaseModel

from tests.cli_runner import run_tocsin
from tests.engine_support import settings_journal
from tocsin.action_registry import ActionRegistry
from tocsin.integration import Integration
from tocsin.preflight import Finding, runbook_needs
from tocsin.settings import StaticSecrets, load_settings
from tocsin.validation import LoadedRunbook, load_runbook_bytes

NEEDS_SETTINGS = """\
runbook: needs-settings
version: 1
title: Needs settings
summary: Calls PKI and Microsoft 365 actions
severity: low
sources: [{title: Test, document: test.txt}]
inputs:
  devices: {type: list, items: string, description: Devices}
steps:
  - id: find
    title: Find the certificates
    action: pki.find_certificates
    with: {office: OF-1042}
  - id: issue
    title: Issue new ones
    action: pki.issue_certificates
    with: {office: OF-1042, devices: "{{ inputs.devices }}"}
  - id: sign_out
    title: Sign the user out
    action: microsoft.revoke_sessions
    with: {user: dupont@broker-office.example}
"""
SECRETS = StaticSecrets(
    {"vault_token": "hvs.test", "microsoft_client_secret": "s", "slack_bot_token": "x"}
)


def _loaded() -> tuple[LoadedRunbook, ActionRegistry]:
    registry = ActionRegistry.discover()
    return load_runbook_bytes(NEEDS_SETTINGS.encode(), "needs-settings.yaml", registry), registry


def _settings_needs(**given: object) -> list[Finding]:
    loaded, registry = _loaded()
    settings = load_settings(mode="live", **given)
    needs = runbook_needs(loaded.runbook, registry, settings, SECRETS)
    return [n for n in needs if n.area.startswith("setting ")]


def test_each_setting_the_steps_need_and_is_not_set_is_a_finding_naming_where_to_set_it() -> None:
    needs = {n.area: n for n in _settings_needs()}
    assert sorted(needs) == [
        "setting microsoft.client_id",
        "setting microsoft.tenant_id",
        "setting pki.role",
        "setting pki.vault_url",
    ]
    vault = needs["setting pki.vault_url"]
    assert not vault.ok
    assert vault.message.startswith(
        "setting pki.vault_url is not set (needed by steps find, issue): Base URL of the Vault"
    )
    assert vault.hint.startswith(
        "set the environment variable TOCSIN_PKI__VAULT_URL, or vault_url under [pki] in the "
        "settings file"
    )
    assert "(needed by step issue)" in needs["setting pki.role"].message  # issuing only
    assert "TOCSIN_MICROSOFT__TENANT_ID" in needs["setting microsoft.tenant_id"].hint


def test_settings_that_are_set_are_not_findings() -> None:
    assert (
        _settings_needs(
            pki={"vault_url": "https://vault.example:8200", "role": "devices"},
            microsoft={"tenant_id": "contoso.onmicrosoft.com", "client_id": "0000-1111"},
        )
        == []
    )
    left = _settings_needs(
        pki={"vault_url": "https://vault.example:8200"},
        microsoft={"tenant_id": "", "client_id": "0000-1111"},  # empty is not set
    )
    assert [n.area for n in left] == ["setting microsoft.tenant_id", "setting pki.role"]


def test_an_integration_declaring_a_setting_it_does_not_have_fails_at_once() -> None:
    class Slot(BaseModel):
        url: str | None = None

    declared = Integration(
        name="acme", description="Acme", settings=Slot, action_settings={"acme.*": ("url",)}
    )
    assert declared.settings_needed_by("acme.fetch") == ("url",)
    assert declared.settings_needed_by("other.fetch") == ()
    with pytest.raises(TypeError, match="name no field of its settings: uri"):
        Integration(
            name="acme", description="Acme", settings=Slot, action_settings={"acme.*": ("uri",)}
        )


def _files(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    from tocsin.audit import AuditKey

    runbook = tmp_path / "needs-settings.yaml"
    runbook.write_text(NEEDS_SETTINGS)
    key = tmp_path / "signing.key"
    AuditKey.generate(key)
    key.chmod(0o600)
    config = tmp_path / "config.toml"
    config.write_text('[microsoft]\ntenant_id = "contoso.onmicrosoft.com"\nclient_id = "0000"\n')
    env = {
        "TOCSIN_MODE": "live",
        "TOCSIN_AUDIT__KEY_PATH": str(key),
        "TOCSIN_CONFIG": str(config),
        "TOCSIN_SECRET_VAULT_TOKEN": "hvs.test",
        "TOCSIN_SECRET_MICROSOFT_CLIENT_SECRET": "s",
    }
    return runbook, config, env


@pytest.mark.slow
def test_a_run_missing_a_setting_is_refused_before_it_opens_and_doctor_says_so(
    prefect_server: str, tmp_path: Path
) -> None:
    runbook, config, env = _files(tmp_path)
    ticket = f"PRS-{uuid.uuid4().int % 10**9}"
    result = run_tocsin(
        "run", str(runbook), "--ticket", ticket, "--as", "U0REQUESTER",
        "--set", "devices=PC-1", "--set", "devices=PC-2", env=env,
    )  # fmt: skip
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"needs-settings for {ticket} was not started: 2 things to set first" in result.stderr
    assert "setting pki.vault_url is not set (needed by steps find, issue)" in result.stderr
    assert (
        f"fix: set the environment variable TOCSIN_PKI__VAULT_URL, or vault_url under [pki] "
        f"in the settings file ({config})"
    ) in result.stderr
    assert "setting pki.role is not set (needed by step issue)" in result.stderr
    assert "microsoft" not in result.stderr  # set in the settings file
    assert "Traceback" not in result.stderr
    journal = settings_journal()
    try:
        assert journal.find_run(ticket, "needs-settings") is None
        assert journal.events_of(ticket) == []
    finally:
        journal.close()

    doctor = run_tocsin(
        "doctor", str(runbook), env={**env, "TOCSIN_DATA_DIR": str(tmp_path)}, timeout=120
    )
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    assert (
        "runbook needs-settings: setting pki.vault_url: PROBLEM: setting pki.vault_url is not "
        "set (needed by steps find, issue)"
    ) in doctor.stdout
    assert "fix: set the environment variable TOCSIN_PKI__ROLE" in doctor.stdout

    # Set where the hint says, in the settings file: the run is no longer refused for them.
    config.write_text(
        config.read_text() + '[pki]\nvault_url = "http://127.0.0.1:9"\nrole = "devices"\n'
    )
    doctor = run_tocsin(
        "doctor", str(runbook), env={**env, "TOCSIN_DATA_DIR": str(tmp_path)}, timeout=120
    )
    assert "setting pki." not in doctor.stdout, doctor.stdout
