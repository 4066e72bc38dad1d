"""Entra ID against the fake tenant over HTTPS on loopback: the password reset (delivered to
the password folder only, never in outputs, errors or logs) and the admin roles."""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import microsoft_support
from tests.microsoft_support import fake_tenant, run_action, settings_for
from tocsin.action_registry import ActionRegistry
from tocsin.errors import ConfigurationError, IntegrationError
from tocsin.integrations.microsoft import CLIENT_SECRET
from tocsin.integrations.microsoft.fake import ALL_ROLES, SANDBOX_USER, FakeApp, FakeMicrosoft
from tocsin.integrations.microsoft.fake_entra import (
    ATTACKER_ELIGIBLE_ROLE,
    ATTACKER_GROUP,
    ATTACKER_GROUP_ROLE,
    ATTACKER_ROLE,
    GENUINE_ROLE,
    ROLE_TEMPLATES,
    STAFF_GROUP,
)
from tocsin.integrations.microsoft.password_delivery import temporary_password
from tocsin.sandbox.tls import LoopbackCA
from tocsin.settings import Settings

USER = SANDBOX_USER
READER_ID = "22222222-3333-4444-8555-readonlyapp0"
READER_SECRET = "reader~secret"
READER = FakeApp(
    client_id=READER_ID,
    secret=READER_SECRET,
    roles=ALL_ROLES - {"RoleManagement.ReadWrite.Directory", "User-PasswordProfile.ReadWrite.All"}
    | {"RoleManagement.Read.Directory"},
)
"""An app that may read role assignments but not remove them, nor reset passwords."""


@pytest.fixture(scope="module")
def tenant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeMicrosoft, LoopbackCA]]:
    with fake_tenant(tmp_path_factory.mktemp("microsoft"), apps=(READER,)) as started:
        yield started


# The Microsoft modules' shared per-test fixtures (tests.microsoft_support).
fake = microsoft_support.fake


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    made = tmp_path / "passwords"
    made.mkdir(mode=0o700)
    return made


@pytest.fixture
def settings(
    tenant: tuple[FakeMicrosoft, LoopbackCA], fake: FakeMicrosoft, folder: Path
) -> Settings:
    return settings_for(fake, tenant[1], password_folder=str(folder))


def password_patches(fake: FakeMicrosoft) -> list[dict[str, object]]:
    return [
        r.json()["passwordProfile"]
        for r in fake.requests
        if r.method == "PATCH" and r.body and "passwordProfile" in r.json()
    ]


def delivered(folder: Path) -> dict[Path, str]:
    """Each delivered file and the password written in it (its second line)."""
    return {p: p.read_text().splitlines()[1] for p in sorted(folder.iterdir())}


# -- the password -------------------------------------------------------------------------------


def test_the_password_reset_is_declared_not_idempotent_and_says_where_the_password_goes() -> None:
    definition = ActionRegistry.discover().get("microsoft.reset_password")
    assert definition.destructive and not definition.idempotent
    sentence = definition.describe_call(definition.parameters.model_validate({"user": USER}))
    assert USER in sentence and "password channel" in sentence and "again" in sentence
    assert definition.output_names is not None and not {
        n for n in definition.output_names if "password" in n and n != "force_change_next_sign_in"
    }


def test_temporary_passwords_are_long_random_and_of_every_kind() -> None:
    made = {temporary_password() for _ in range(50)}
    assert len(made) == 50
    for password in made:
        assert len(password) == 24
        assert re.search(r"[a-z]", password) and re.search(r"[A-Z]", password)
        assert re.search(r"\d", password) and re.search(r"[^A-Za-z0-9]", password)


def test_the_password_goes_to_a_0600_file_only_and_must_be_changed_at_next_sign_in(
    fake: FakeMicrosoft, settings: Settings, folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    outputs = run_action("microsoft.reset_password", {"user": USER}, settings)
    (sent,) = password_patches(fake)
    assert sent["forceChangePasswordNextSignIn"] is True
    ((path, password),) = delivered(folder).items()
    assert password == sent["password"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert USER in path.read_text() and "INC-13" in path.read_text()
    assert outputs["delivered_to"] == f"file {path} (mode 0600)"
    assert outputs["force_change_next_sign_in"] is True
    assert password not in repr(outputs) and password not in caplog.text
    assert fake.user(USER).get("lastPasswordChangeDateTime")


def test_a_rerun_resets_the_password_again(
    fake: FakeMicrosoft, settings: Settings, folder: Path
) -> None:
    run_action("microsoft.reset_password", {"user": USER}, settings)
    run_action("microsoft.reset_password", {"user": USER}, settings)
    first, second = password_patches(fake)
    assert first["password"] != second["password"]
    assert sorted(delivered(folder).values()) == sorted(
        [str(first["password"]), str(second["password"])]
    )


def test_without_a_password_folder_nothing_is_reset(
    fake: FakeMicrosoft, tenant: tuple[FakeMicrosoft, LoopbackCA]
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        run_action("microsoft.reset_password", {"user": USER}, settings_for(fake, tenant[1]))
    assert "TOCSIN_MICROSOFT__PASSWORD_FOLDER" in caught.value.hint
    assert password_patches(fake) == []


def test_a_folder_others_can_read_is_refused_before_the_password_changes(
    fake: FakeMicrosoft, settings: Settings, folder: Path
) -> None:
    folder.chmod(0o755)
    with pytest.raises(ConfigurationError) as caught:
        run_action("microsoft.reset_password", {"user": USER}, settings)
    assert "chmod 700" in caught.value.hint
    assert password_patches(fake) == [] and list(folder.iterdir()) == []


def test_a_synchronised_user_is_refused_and_no_password_is_left_behind(
    fake: FakeMicrosoft, settings: Settings, folder: Path
) -> None:
    with fake.lock:
        fake.tenant.users[0]["onPremisesSyncEnabled"] = True
    with pytest.raises(IntegrationError) as caught:
        run_action("microsoft.reset_password", {"user": USER}, settings)
    assert "on-premises Active Directory" in caught.value.message
    assert "twice on-premises" in caught.value.hint
    (sent,) = password_patches(fake)
    assert str(sent["password"]) not in caught.value.message + caught.value.hint
    assert list(folder.iterdir()) == []


def test_without_the_password_permission_the_refusal_names_it_and_the_role(
    fake: FakeMicrosoft, tenant: tuple[FakeMicrosoft, LoopbackCA], folder: Path
) -> None:
    settings = settings_for(fake, tenant[1], client_id=READER_ID, password_folder=str(folder))
    with pytest.raises(IntegrationError) as caught:
        run_action(
            "microsoft.reset_password", {"user": USER}, settings, {CLIENT_SECRET: READER_SECRET}
        )
    error = caught.value
    assert error.status_code == 403
    assert "User-PasswordProfile.ReadWrite.All" in error.message
    assert "User Administrator" in error.message and READER_ID in error.hint
    assert list(folder.iterdir()) == [], "a password never set is not delivered"


# -- admin roles --------------------------------------------------------------------------------


def _roles_of_user(fake: FakeMicrosoft) -> list[str]:
    user_id = fake.user(USER)["id"]
    return [
        a["roleDefinitionId"] for a in fake.tenant.role_assignments if a["principalId"] == user_id
    ]


def test_admin_roles_are_listed_and_all_but_the_kept_ones_removed_then_nothing(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    user_id = fake.user(USER)["id"]
    listed = run_action("microsoft.list_admin_roles", {"user": USER}, settings)
    by_kind = {(r["kind"], r["role"], r["group"]) for r in listed["roles"]}
    assert by_kind == {
        ("active", ATTACKER_ROLE, None),
        ("active", GENUINE_ROLE, None),
        ("eligible", ATTACKER_ELIGIBLE_ROLE, None),
        ("group", ATTACKER_GROUP_ROLE, ATTACKER_GROUP),
    }
    queries = [r.query["$filter"] for r in fake.requests if r.path.endswith("/roleAssignments")]
    assert [f"principalId eq '{user_id}'"] in queries
    removed = run_action(
        "microsoft.remove_admin_roles", {"user": USER, "keep": [GENUINE_ROLE]}, settings
    )
    assert sorted(r["role"] for r in removed["removed"]) == sorted(
        [ATTACKER_ROLE, ATTACKER_ELIGIBLE_ROLE, ATTACKER_GROUP_ROLE]
    )
    assert [r["role"] for r in removed["kept"]] == [GENUINE_ROLE]
    # The tenant itself: the attacker's assignment, eligibility and group membership are gone;
    # the office's ordinary group is untouched, and so is the group's own role.
    assert _roles_of_user(fake) == [ROLE_TEMPLATES[GENUINE_ROLE]]
    assert fake.tenant.role_eligibilities == []
    groups = {g["displayName"]: g["members"] for g in fake.tenant.groups}
    assert user_id not in groups[ATTACKER_GROUP] and user_id in groups[STAFF_GROUP]
    (request,) = [
        r.json() for r in fake.requests if r.path.endswith("/roleEligibilityScheduleRequests")
    ]
    assert request["action"] == "adminRemove" and "INC-13" in request["justification"]
    again = run_action(
        "microsoft.remove_admin_roles", {"user": USER, "keep": [GENUINE_ROLE]}, settings
    )
    assert again["removed"] == [] and len(again["kept"]) == 1


def test_a_kept_group_keeps_the_membership_and_its_roles(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    removed = run_action(
        "microsoft.remove_admin_roles",
        {"user": USER, "keep": [GENUINE_ROLE, ATTACKER_GROUP]},
        settings,
    )
    assert {r["kind"] for r in removed["removed"]} == {"active", "eligible"}
    assert any(r["group"] == ATTACKER_GROUP for r in removed["kept"])
    group = next(g for g in fake.tenant.groups if g["displayName"] == ATTACKER_GROUP)
    assert fake.user(USER)["id"] in group["members"]


def test_a_misspelt_kept_role_removes_nothing(fake: FakeMicrosoft, settings: Settings) -> None:
    with pytest.raises(IntegrationError) as caught:
        run_action(
            "microsoft.remove_admin_roles", {"user": USER, "keep": ["Report Reader"]}, settings
        )
    assert "'Report Reader'" in caught.value.message and GENUINE_ROLE in caught.value.hint
    assert f"{ATTACKER_ELIGIBLE_ROLE} (eligible in PIM)" in caught.value.hint
    assert len(_roles_of_user(fake)) == 2 and len(fake.tenant.role_eligibilities) == 1


def test_removing_roles_without_the_permission_names_role_management(
    fake: FakeMicrosoft, tenant: tuple[FakeMicrosoft, LoopbackCA]
) -> None:
    settings = settings_for(fake, tenant[1], client_id=READER_ID)
    with pytest.raises(IntegrationError) as caught:
        run_action(
            "microsoft.remove_admin_roles", {"user": USER}, settings, {CLIENT_SECRET: READER_SECRET}
        )
    assert "RoleManagement.ReadWrite.Directory" in caught.value.message
    assert caught.value.status_code == 403
    assert len(_roles_of_user(fake)) == 2 and len(fake.tenant.role_eligibilities) == 1


def test_leaving_a_role_group_without_group_permission_names_it(
    fake: FakeMicrosoft, tenant: tuple[FakeMicrosoft, LoopbackCA]
) -> None:
    no_groups = FakeApp(
        client_id="77777777-8888-4999-8aaa-nogroupwrite",
        secret="no-groups",
        roles=ALL_ROLES - {"GroupMember.ReadWrite.All"},
    )
    fake.apps[no_groups.client_id] = no_groups
    settings = settings_for(fake, tenant[1], client_id=no_groups.client_id)
    with pytest.raises(IntegrationError) as caught:
        run_action(
            "microsoft.remove_admin_roles",
            {"user": USER, "keep": [GENUINE_ROLE]},
            settings,
            {CLIENT_SECRET: "no-groups"},
        )
    # The others are gone; the group is named with the permission to grant.
    assert "could not remove 1 of 3" in caught.value.message
    assert ATTACKER_GROUP in caught.value.message
    assert "GroupMember.ReadWrite.All" in caught.value.message + caught.value.hint
    assert fake.tenant.role_eligibilities == []


# -- in a runbook, through Prefect ---------------------------------------------------------------

RESET_RUNBOOK = """\
runbook: ms-reset
version: 1
title: Reset a phished Microsoft 365 user
summary: Reset the password, turn off POP and IMAP, take the admin roles away
severity: high
sources: [{title: Test, document: test.txt}]
inputs:
  user: {type: email, description: Sign-in address of the phished user}
steps:
  - id: reset
    title: Reset the password
    action: microsoft.reset_password
    with: {user: "{{ inputs.user }}"}
  - id: protocols
    title: Turn off POP and IMAP
    action: microsoft.disable_mail_protocols
    with: {user: "{{ inputs.user }}"}
    undo:
      action: microsoft.enable_mail_protocols
      with:
        user: "{{ inputs.user }}"
        protocols: "{{ steps.protocols.outputs.changed }}"
  - id: roles
    title: Take the admin roles away, but a misspelt one (so the run stops and undoes)
    action: microsoft.remove_admin_roles
    with: {user: "{{ inputs.user }}", keep: ["Report Reader"]}
"""


def _files_holding(folder: Path, needle: bytes) -> list[Path]:
    return [
        path
        for path in folder.rglob("*")
        if path.is_file() and not path.is_symlink() and needle in path.read_bytes()
    ]


@pytest.mark.slow
def test_the_password_reaches_its_file_and_nothing_else_in_a_runbook_run(
    prefect_server: str, tmp_path: Path
) -> None:
    import shutil

    import httpx

    from tests.cli_runner import ROOT, run_tocsin
    from tocsin.embedded import prefect_home
    from tocsin.running import journal_for
    from tocsin.settings import load_settings

    runbook = tmp_path / "ms-reset.yaml"
    runbook.write_text(RESET_RUNBOOK)
    data = tmp_path / "data"
    result = run_tocsin(
        "run",
        str(runbook),
        "--ticket",
        "MS-2",
        "--set",
        f"user={USER}",
        env={
            "PYTHONPATH": str(ROOT),
            "TOCSIN_DATA_DIR": str(data),
            "TOCSIN_PREFECT_API_URL": prefect_server,
        },
        timeout=240,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output  # the roles step fails on purpose
    journal = journal_for(load_settings(data_dir=data))
    try:
        run = journal.find_run("MS-2", "ms-reset")
        assert run is not None
        reset, protocols = journal.step(run.id, "reset"), journal.step(run.id, "protocols")
        assert reset is not None and reset.status == "succeeded"
        assert protocols is not None and protocols.status == "undone"
        events = journal.events_of("MS-2")
    finally:
        journal.close()
    # The undo gave back what the step had turned off, read from the step's own outputs.
    (undone,) = [e for e in events if e["kind"] == "step.undone"]
    assert undone["data"]["parameters"] == {"user": USER, "protocols": ["pop", "imap"]}
    delivered_to = str(reset.outputs["delivered_to"])
    path = Path(re.sub(r"^file (.+) \(mode 0600\)$", r"\1", delivered_to))
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        password = path.read_text().splitlines()[1]
        assert len(password) == 24
        secret = password.encode()
        # Not in the journal (events, step rows, outputs), not in what the run printed...
        assert secret not in repr(events).encode() and secret not in repr(reset.outputs).encode()
        assert password not in output
        assert _files_holding(data, secret) == []
        # ...nor in Prefect: its database and files, its task runs and the logs it kept.
        assert _files_holding(prefect_home(load_settings()), secret) == []
        with httpx.Client(base_url=prefect_server, timeout=30) as api:
            logs = api.post("/logs/filter", json={"limit": 200, "sort": "TIMESTAMP_DESC"})
            tasks = api.post("/task_runs/filter", json={"limit": 200})
            flows = api.post("/flow_runs/filter", json={"limit": 50})
        assert logs.status_code == tasks.status_code == flows.status_code == 200
        assert {"reset", "protocols", "undo-protocols"} <= {t["name"] for t in tasks.json()}
        assert any("reset: succeeded" in line["message"] for line in logs.json()), logs.text
        for answer in (logs, tasks, flows):
            assert password not in answer.text
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


def test_the_permission_without_the_entra_role_is_refused_and_the_role_named(
    tmp_path: Path, folder: Path
) -> None:
    user_admin_only = FakeApp(
        client_id="33333333-4444-4555-8666-useradminon0",
        secret="ua",
        entra_roles=frozenset({"User Administrator"}),
    )
    with fake_tenant(tmp_path, apps=(user_admin_only,)) as (fake, ca):
        settings = settings_for(
            fake, ca, client_id=user_admin_only.client_id, password_folder=str(folder)
        )
        # The phished user holds admin roles: User Administrator is not enough for them.
        with pytest.raises(IntegrationError) as caught:
            run_action("microsoft.reset_password", {"user": USER}, settings, {CLIENT_SECRET: "ua"})
        assert "Privileged Authentication Administrator" in caught.value.message
        assert list(folder.iterdir()) == []
        with fake.lock:
            fake.tenant.role_assignments.clear()
        done = run_action(
            "microsoft.reset_password", {"user": USER}, settings, {CLIENT_SECRET: "ua"}
        )
        assert done["force_change_next_sign_in"] is True and len(list(folder.iterdir())) == 1
