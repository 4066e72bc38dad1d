"""The device actions against the fake tenant over HTTPS on loopback, as steps call them:
Defender for Endpoint's isolate and release, Intune's lock, retire and wipe; each one's
re-run changing nothing, the errors a support engineer reads, and the validation warning
for a wipe without an approval gate."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests import microsoft_support
from tests.cli_runner import run_tocsin
from tests.microsoft_support import fake_tenant, run_action, settings_for
from tocsin.action_registry import ActionRegistry
from tocsin.errors import IntegrationError
from tocsin.integrations.microsoft.fake import ALL_ROLES, SANDBOX_USER, FakeApp, FakeMicrosoft
from tocsin.integrations.microsoft.fake_devices import (
    LAPTOP_NAME,
    NOT_ONBOARDED,
    office_workstation,
)
from tocsin.sandbox.tls import LoopbackCA
from tocsin.settings import Settings
from tocsin.validation import load_runbook_bytes

USER = SANDBOX_USER
COMMENT = "INC-13: the phished user's laptop"
NO_DEVICES_CLIENT_ID = "55555555-6666-4777-8888-nodevicesapp"
NO_DEVICES = {"microsoft_client_secret": "no-devices"}


@pytest.fixture(scope="module")
def tenant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeMicrosoft, LoopbackCA]]:
    reader = FakeApp(
        client_id=NO_DEVICES_CLIENT_ID,
        secret="no-devices",
        roles=ALL_ROLES
        - {"Machine.Isolate", "DeviceManagementManagedDevices.PrivilegedOperations.All"},
    )
    with fake_tenant(tmp_path_factory.mktemp("devices"), apps=(reader,)) as started:
        yield started


# The Microsoft modules' shared per-test fixtures (tests.microsoft_support).
fake = microsoft_support.fake
settings = microsoft_support.settings


def posts(fake: FakeMicrosoft) -> list[str]:
    return [r.path for r in fake.requests if r.method == "POST" and "/oauth2/" not in r.path]


def isolation_actions(fake: FakeMicrosoft) -> list[tuple[str, str]]:
    with fake.lock:
        return [(a["type"], a["status"]) for a in fake.tenant.machine_actions]


def laptop(fake: FakeMicrosoft) -> dict[str, object]:
    with fake.lock:
        return dict(next(d for d in fake.tenant.managed_devices if d["deviceName"] == LAPTOP_NAME))


# -- Defender for Endpoint ----------------------------------------------------------------------


def test_isolate_then_isolate_again_changes_nothing_and_release_undoes_it(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    first = run_action(
        "defender.isolate_device", {"device": LAPTOP_NAME, "comment": COMMENT}, settings
    )
    assert first["changed"] is True and first["isolated"] is True
    assert first["found"] == "not isolated" and first["action_status"] == "Pending"
    assert first["computer_dns_name"] == "alice-lt01.broker-office.example"
    assert first["isolation_type"] == "Full" and len(first["machine_id"]) == 40
    assert isolation_actions(fake) == [("Isolate", "Pending")]

    again = run_action(
        "defender.isolate_device", {"device": first["machine_id"], "comment": COMMENT}, settings
    )
    assert again["changed"] is False and again["isolated"] is True
    assert again["found"].startswith("isolated (Full) since")
    assert again["action_id"] == first["action_id"] and again["action_status"] == "Succeeded"
    assert posts(fake) == [f"/api/machines/{first['machine_id']}/isolate"]

    released = run_action(
        "defender.release_device",
        {"device": "alice-lt01.broker-office.example", "comment": "INC-13: clean"},
        settings,
    )
    assert released["changed"] is True and released["isolated"] is False
    assert released["found"].startswith("isolated (Full)")
    twice = run_action(
        "defender.release_device", {"device": LAPTOP_NAME, "comment": "INC-13"}, settings
    )
    assert twice["changed"] is False and twice["found"] == "released from isolation"
    assert isolation_actions(fake) == [("Isolate", "Succeeded"), ("Unisolate", "Succeeded")]


def test_releasing_a_device_never_isolated_changes_nothing(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    released = run_action(
        "defender.release_device", {"device": LAPTOP_NAME, "comment": COMMENT}, settings
    )
    assert released["changed"] is False and released["found"] == "not isolated"
    assert posts(fake) == [] and isolation_actions(fake) == []


def test_a_repeated_isolate_is_refused_by_defender_as_already_in_progress(
    fake: FakeMicrosoft, tenant: tuple[FakeMicrosoft, LoopbackCA], settings: Settings
) -> None:
    # The fake answers a repeat as Defender does; the action's read-first never sends one.
    first = run_action(
        "defender.isolate_device", {"device": LAPTOP_NAME, "comment": COMMENT}, settings
    )
    with fake.lock:
        token = next(iter(fake._tokens))
    answer = httpx.post(
        f"{fake.url}/api/machines/{first['machine_id']}/isolate",
        json={"Comment": "again", "IsolationType": "Full"},
        headers={"Authorization": f"Bearer {token}"},
        verify=ssl.create_default_context(cafile=str(tenant[1].ca_bundle)),
    )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "ActiveRequestAlreadyExists"
    assert error["message"] == "Action is already in progress" and error["target"]


def test_a_device_not_onboarded_is_named_with_what_to_check(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    with pytest.raises(IntegrationError) as caught:
        run_action("defender.isolate_device", {"device": "BOB-LT07", "comment": COMMENT}, settings)
    assert "has no machine named 'BOB-LT07'" in caught.value.message
    assert "onboarded" in caught.value.hint and "intune.lock_device" in caught.value.hint
    with pytest.raises(IntegrationError) as discovered:
        run_action(
            "defender.isolate_device", {"device": NOT_ONBOARDED, "comment": COMMENT}, settings
        )
    assert "onboardingStatus CanBeOnboarded" in discovered.value.message
    assert posts(fake) == []


def test_several_devices_are_isolated_one_by_one_and_a_rerun_changes_none(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    with fake.lock:  # a second office PC beside the laptop, as the office sandbox seeds
        fake.tenant.machines.append(
            office_workstation("PC-2", "broker-office.example", datetime.now(UTC))
        )
    both = {"devices": [LAPTOP_NAME, "PC-2"], "comment": COMMENT}
    first = run_action("defender.isolate_devices", both, settings)
    assert first["changed"] == [LAPTOP_NAME, "PC-2"]
    assert [d["computer_dns_name"] for d in first["devices"]] == [
        "alice-lt01.broker-office.example",
        "pc-2.broker-office.example",
    ]
    again = run_action("defender.isolate_devices", both, settings)
    assert again["changed"] == []
    released = run_action("defender.release_devices", both, settings)
    assert released["changed"] == [LAPTOP_NAME, "PC-2"]
    assert [kind for kind, _ in isolation_actions(fake)] == [
        "Isolate",
        "Isolate",
        "Unisolate",
        "Unisolate",
    ]


def test_isolating_several_stops_at_a_device_not_onboarded_with_the_earlier_ones_isolated(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    with pytest.raises(IntegrationError) as caught:
        run_action(
            "defender.isolate_devices",
            {"devices": [LAPTOP_NAME, "BOB-LT07"], "comment": COMMENT},
            settings,
        )
    assert caught.value.action == "defender.isolate_devices"
    assert "has no machine named 'BOB-LT07'" in caught.value.message
    assert [kind for kind, _ in isolation_actions(fake)] == ["Isolate"]


def test_a_reimaged_devices_old_entry_is_passed_over_and_two_live_ones_are_listed(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    with fake.lock:
        live = fake.tenant.machines[0]
        old = {
            **live,
            "id": "0" * 40,
            "healthStatus": "Inactive",
            "lastSeen": "2025-01-01T00:00:00Z",
        }
        fake.tenant.machines.append(old)
    isolated = run_action(
        "defender.isolate_device", {"device": LAPTOP_NAME, "comment": COMMENT}, settings
    )
    assert isolated["machine_id"] == live["id"]
    with fake.lock:
        old["healthStatus"] = "Active"
    with pytest.raises(IntegrationError) as caught:
        run_action("defender.release_device", {"device": LAPTOP_NAME, "comment": COMMENT}, settings)
    assert "has 2 machines named 'ALICE-LT01'" in caught.value.message
    assert "0" * 40 in caught.value.message and "machine id" in caught.value.hint


def test_an_app_without_machine_isolate_is_told_which_permission_to_grant(
    fake: FakeMicrosoft, tenant: tuple[FakeMicrosoft, LoopbackCA]
) -> None:
    settings = settings_for(fake, tenant[1], client_id=NO_DEVICES_CLIENT_ID)
    with pytest.raises(IntegrationError) as caught:
        run_action(
            "defender.isolate_device",
            {"device": LAPTOP_NAME, "comment": COMMENT},
            settings,
            NO_DEVICES,
        )
    assert caught.value.status_code == 403 and caught.value.retryable is False
    assert "WindowsDefenderATP application permission Machine.Isolate" in caught.value.message
    assert "its token lacks Machine.Isolate" in caught.value.message
    assert (
        "grant Machine.Isolate" in caught.value.hint and "WindowsDefenderATP" in caught.value.hint
    )


def test_a_throttled_defender_call_is_sent_again_after_retry_after(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    fake.throttle_defender(2, retry_after="0.1")
    isolated = run_action(
        "defender.isolate_device",
        {
            "device": "alice-lt01.broker-office.example",
            "comment": COMMENT,
            "isolation_type": "Selective",
        },
        settings,
    )
    assert isolated["changed"] is True and isolated["isolation_type"] == "Selective"
    throttled = [r for r in fake.requests if r.path.startswith("/api/")]
    # the machine's look-up sent again after each 429, then its actions and the isolate
    paths = [r.path for r in throttled]
    assert paths.count("/api/machines") >= 3
    assert paths[-2:] == ["/api/machineactions", f"/api/machines/{isolated['machine_id']}/isolate"]


# -- Intune -------------------------------------------------------------------------------------


def test_lock_queues_one_lock_and_a_rerun_while_pending_queues_none(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    locked = run_action("intune.lock_device", {"device": LAPTOP_NAME}, settings)
    assert locked["changed"] is True and locked["action"] == "remoteLock"
    assert locked["action_state"] == "pending" and locked["user"] == USER
    assert locked["operating_system"] == "Windows" and locked["management_state"] == "managed"
    again = run_action("intune.lock_device", {"device": locked["device_id"]}, settings)
    assert again["changed"] is False and "remoteLock already pending" in again["found"]
    assert posts(fake) == [
        f"/v1.0/deviceManagement/managedDevices/{locked['device_id']}/remoteLock"
    ]


def test_the_users_devices_are_found_and_several_must_be_told_apart(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    with pytest.raises(IntegrationError) as caught:
        run_action("intune.lock_device", {"user": USER}, settings)
    assert "has 2 devices" in caught.value.message and LAPTOP_NAME in caught.value.message
    assert "Alice's iPhone" in caught.value.message
    phone = run_action("intune.lock_device", {"device": "Alice's iPhone", "user": USER}, settings)
    assert phone["changed"] is True and phone["operating_system"] == "iOS"
    with pytest.raises(IntegrationError) as other:
        run_action("intune.lock_device", {"device": LAPTOP_NAME, "user": "bob@x.example"}, settings)
    assert "no enrolled device ALICE-LT01 of bob@x.example" in other.value.message
    with pytest.raises(IntegrationError) as by_id:
        run_action(
            "intune.lock_device", {"device": phone["device_id"], "user": "bob@x.example"}, settings
        )
    assert f"no enrolled device {phone['device_id']} of bob@x.example" in by_id.value.message


def test_retire_is_not_asked_twice(fake: FakeMicrosoft, settings: Settings) -> None:
    retired = run_action("intune.retire_device", {"device": LAPTOP_NAME}, settings)
    assert retired["changed"] is True and laptop(fake)["managementState"] == "retirePending"
    again = run_action("intune.retire_device", {"device": LAPTOP_NAME}, settings)
    assert again["changed"] is False and again["management_state"] == "retirePending"
    assert len([p for p in posts(fake) if p.endswith("/retire")]) == 1


def test_wipe_sends_its_options_once(fake: FakeMicrosoft, settings: Settings) -> None:
    wiped = run_action(
        "intune.wipe_device", {"device": LAPTOP_NAME, "keep_enrollment_data": True}, settings
    )
    assert wiped["changed"] is True and wiped["action"] == "wipe"
    device = laptop(fake)
    assert device["managementState"] == "wipePending"
    assert device["deviceActionResults"][-1]["options"] == {  # type: ignore[index]
        "keepEnrollmentData": True,
        "keepUserData": False,
    }
    again = run_action("intune.wipe_device", {"device": LAPTOP_NAME}, settings)
    assert again["changed"] is False and again["management_state"] == "wipePending"
    assert len([p for p in posts(fake) if p.endswith("/wipe")]) == 1


def test_a_device_not_enrolled_and_a_missing_permission_are_said(
    fake: FakeMicrosoft, tenant: tuple[FakeMicrosoft, LoopbackCA], settings: Settings
) -> None:
    with pytest.raises(IntegrationError) as missing:
        run_action("intune.wipe_device", {"device": "BOB-LT07"}, settings)
    assert "Intune has no enrolled device BOB-LT07" in missing.value.message
    limited = settings_for(fake, tenant[1], client_id=NO_DEVICES_CLIENT_ID)
    with pytest.raises(IntegrationError) as refused:
        run_action("intune.wipe_device", {"device": LAPTOP_NAME}, limited, NO_DEVICES)
    assert refused.value.status_code == 403
    assert "DeviceManagementManagedDevices.PrivilegedOperations.All" in refused.value.message
    assert "grant DeviceManagementManagedDevices.PrivilegedOperations.All" in refused.value.hint
    assert laptop(fake)["managementState"] == "managed"


def test_a_throttled_intune_call_is_sent_again(fake: FakeMicrosoft, settings: Settings) -> None:
    fake.throttle(1, retry_after="0.1")
    assert run_action("intune.lock_device", {"device": LAPTOP_NAME}, settings)["changed"] is True


def test_the_device_actions_are_declared_honestly() -> None:
    registry = ActionRegistry.discover()
    wipe = registry.get("intune.wipe_device")
    assert wipe.destructive and wipe.needs_approval and not wipe.idempotent
    for name in (
        "defender.isolate_device",
        "defender.release_device",
        "defender.isolate_devices",
        "defender.release_devices",
        "intune.lock_device",
        "intune.retire_device",
    ):
        definition = registry.get(name)
        assert definition.destructive and definition.idempotent and not definition.needs_approval
    sentence = wipe.describe_call(wipe.parameters.model_validate({"device": LAPTOP_NAME}))
    assert sentence.startswith(f"WIPE {LAPTOP_NAME}") and "cannot be undone" in sentence
    with pytest.raises(Exception, match="give `device`"):
        wipe.check_parameters({})


# -- validation: a wipe behind an approval gate ---------------------------------------------------

_HEAD = """runbook: lost-laptop
version: 1
title: Lost laptop
summary: Wipe a laptop
severity: high
sources: [{title: D, document: d.txt}]
inputs:
  lost: {type: boolean, description: Whether the laptop is lost, default: false}
approver_groups:
  leads: {users: [U012AB3CD]}
steps:
"""
_WIPE = """  - id: wipe
    title: Wipe the laptop
    action: intune.wipe_device
    with: {device: ALICE-LT01}
"""
_GATE = """  - id: approve_wipe
    title: Approve the wipe
    approval: {approvers: leads, prompt: Wipe the laptop%s}
"""
_LOCK = """  - id: lock
    title: Lock it
    action: intune.lock_device
    with: {device: ALICE-LT01}
"""


def _warnings(text: str) -> list[str]:
    loaded = load_runbook_bytes(text.encode(), "lost.yaml", ActionRegistry.discover())
    return [f"{w.location}: {w.message}" for w in loaded.warnings]


def test_a_wipe_without_an_approval_gate_is_warned_at_its_line() -> None:
    [warning] = _warnings(_HEAD + _LOCK + _WIPE)
    assert warning.startswith("lost.yaml:18:13:")
    assert "step 'wipe' calls intune.wipe_device" in warning and "no approval gate" in warning
    # A gate covers the steps after it up to the next gate: one before the lock covers both.
    assert _warnings(_HEAD + _GATE % "" + _LOCK + _WIPE) == []
    # A gate after the wipe covers nothing before it.
    [late] = _warnings(_HEAD + _WIPE + _GATE % "")
    assert "step 'wipe'" in late
    [lenient] = _warnings(_HEAD + _GATE % ", on_timeout: continue" + _WIPE)
    assert "lets the run continue when nobody answers" in lenient
    parallel = "  - id: both\n    title: Both\n    parallel:\n" + (_LOCK + _WIPE).replace(
        "\n  ", "\n      "
    ).replace("  - id:", "      - id:", 1)
    assert _warnings(_HEAD + _GATE % "" + parallel) == []
    assert len(_warnings(_HEAD + parallel)) == 1
    [skippable] = _warnings(
        _HEAD + _GATE.replace("    approval:", "    when: inputs.lost\n    approval:") % "" + _WIPE
    )
    assert "is skipped when `inputs.lost` is false" in skippable


def test_tocsin_validate_prints_the_warning_and_does_not_fail(tmp_path: Path) -> None:
    runbook = tmp_path / "lost.yaml"
    runbook.write_text(_HEAD + _WIPE, encoding="utf-8")
    result = run_tocsin("validate", str(runbook))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        ":13:" in result.stdout and "warning: step 'wipe' calls intune.wipe_device" in result.stdout
    )
    assert "hint: put an approval step right before it" in result.stdout
    assert "ok: 1 runbook valid (lost-laptop)" in result.stdout


def test_shipped_runbooks_carry_no_warning() -> None:
    registry = ActionRegistry.discover()
    shipped = sorted((Path(__file__).resolve().parent.parent / "runbooks").glob("*.yaml"))
    assert shipped
    for path in shipped:
        loaded = load_runbook_bytes(path.read_bytes(), path.name, registry)
        assert loaded.warnings == (), [str(w) for w in loaded.warnings]


def test_the_sandbox_seeds_the_phished_users_laptop_onboarded_and_enrolled() -> None:
    from tocsin.actions import ActionContext
    from tocsin.integration import SandboxSeed
    from tocsin.sandbox.assembly import Sandbox
    from tocsin.settings import load_settings

    carol = "carol@broker-office.example"
    with Sandbox(load_settings(), SandboxSeed(inputs={"user": carol})) as sandbox:
        context = ActionContext("INC-13", "isolate", sandbox.secrets, sandbox.settings)
        registry = ActionRegistry.discover()
        isolated = registry.get("defender.isolate_device").invoke(
            context, {"device": "carol-lt01", "comment": COMMENT}
        )
        assert isolated["changed"] is True
        assert isolated["computer_dns_name"] == "carol-lt01.broker-office.example"
        locked = registry.get("intune.lock_device").invoke(
            context, {"device": "CAROL-LT01", "user": carol}
        )
        assert locked["changed"] is True and locked["user"] == carol
        assert any("Defender for Endpoint" in note for note in sandbox.notes)


UNDO_RUNBOOK = """\
runbook: ms-isolate
version: 1
title: Isolate the phished user's laptop
summary: Isolate it, then lock a device that does not exist, so the run aborts and undoes
severity: high
sources: [{title: Test, document: test.txt}]
steps:
  - id: isolate
    title: Isolate the laptop
    action: defender.isolate_device
    with: {device: ALICE-LT01, comment: "MS-2: the phished user's laptop"}
    undo:
      action: defender.release_device
      with: {device: ALICE-LT01, comment: "MS-2: undone, the run failed"}
  - id: lock_missing
    title: Lock a device Intune does not have
    action: intune.lock_device
    with: {device: NOSUCH-LT99}
"""


@pytest.mark.slow
def test_release_undoes_isolate_when_a_later_step_fails(
    prefect_server: str, tmp_path: Path
) -> None:
    from tests.cli_runner import ROOT
    from tocsin.running import journal_for
    from tocsin.settings import load_settings

    runbook = tmp_path / "ms-isolate.yaml"
    runbook.write_text(UNDO_RUNBOOK, encoding="utf-8")
    data = tmp_path / "data"
    result = run_tocsin(
        "run",
        str(runbook),
        "--ticket",
        "MS-2",
        env={
            "PYTHONPATH": str(ROOT),
            "TOCSIN_DATA_DIR": str(data),
            "TOCSIN_PREFECT_API_URL": prefect_server,
        },
        timeout=240,
    )
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Intune has no enrolled device NOSUCH-LT99" in result.stdout + result.stderr
    journal = journal_for(load_settings(data_dir=data))
    try:
        run = journal.find_run("MS-2", "ms-isolate")
        assert run is not None
        isolate = journal.step(run.id, "isolate")
        assert isolate is not None and isolate.status == "undone"
        assert isolate.outputs["changed"] is True
    finally:
        journal.close()


def test_the_plan_says_a_wipe_cannot_be_undone_and_which_gate_approves_it(tmp_path: Path) -> None:
    guarded = tmp_path / "guarded.yaml"
    guarded.write_text(_HEAD + _GATE % "" + _WIPE, encoding="utf-8")
    bare = tmp_path / "bare.yaml"
    bare.write_text(_HEAD + _WIPE, encoding="utf-8")

    shown = run_tocsin("plan", str(guarded), "--ticket", "INC-1")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "cannot be undone: approved at gate approve_wipe" in shown.stdout
    warned = run_tocsin("plan", str(bare), "--ticket", "INC-1")
    assert "cannot be undone and no approval gate covers it" in warned.stdout

    as_json = run_tocsin("plan", str(guarded), "--ticket", "INC-1", "--json")
    wipe = next(s for s in json.loads(as_json.stdout)["steps"] if s["id"] == "wipe")
    assert wipe["needs_approval"] is True and wipe["approved_by_gate"] == "approve_wipe"
    listed = json.loads(run_tocsin("actions", "--json").stdout)
    flags = {a["name"]: a["needs_approval"] for a in listed}
    assert flags["intune.wipe_device"] is True and flags["intune.lock_device"] is False
