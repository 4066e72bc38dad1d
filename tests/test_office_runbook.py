"""The office-compromise runbook run in process on the sandbox, decided by the demo's scripted
people: what the fake platform, the fake firewall and the fake Vault PKI themselves end up
with, and the order in which the platform and the firewall received the calls."""

from __future__ import annotations

import pytest

from tests.office_runs import OfficeRun, run_office_demo, serial_number
from tocsin.integrations.pki.inventory import CertificateStatus
from tocsin.statuses import RunStatus, StepStatus

pytestmark = pytest.mark.slow

OFFICE = "OF-1042"
RANGE = "198.51.100.0/24"


@pytest.fixture(scope="module")
def office_run(prefect_server: str) -> OfficeRun:
    return run_office_demo("office-compromise", "OFC-1")


def _platform_calls(run: OfficeRun) -> list[str]:
    prefix = f"/api/v1/offices/{OFFICE}"
    return [
        f"{r.method} {r.path[len(prefix) :] or '/'}"
        for r in run.fakes.platform.requests
        if r.path.startswith(prefix)
    ]


def test_the_run_succeeds_with_every_step_finished(office_run: OfficeRun) -> None:
    assert office_run.result["status"] == RunStatus.SUCCEEDED, office_run.result
    unfinished = {
        step: record.status
        for step, record in office_run.steps.items()
        if record.status not in (StepStatus.SUCCEEDED, StepStatus.APPROVED, StepStatus.DONE)
    }
    assert not unfinished
    assert office_run.steps["reinstall_devices"].status == StepStatus.DONE  # reinstall_needed


def test_the_platform_disconnected_the_office_before_revoking_and_reconnected_it_last(
    office_run: OfficeRun,
) -> None:
    calls = [call for call in _platform_calls(office_run) if call.startswith("POST")]
    assert calls.index("POST /disconnect") < calls.index("POST /credentials/revoke")
    assert calls.index("POST /disconnect") < calls.index("POST /certificates/revoke")
    assert calls.index("POST /certificates/issue") < calls.index("POST /reconnect")
    assert calls[-1] == "POST /reconnect"
    # The reconnection was checked by reading the office back afterwards.
    assert _platform_calls(office_run)[-1] == "GET /"
    office = office_run.fakes.platform.office(OFFICE)
    assert office.status == "connected"
    assert office.open_sessions == 0  # the sessions open at the report were closed


def test_every_account_password_was_revoked_and_every_device_has_a_new_access(
    office_run: OfficeRun,
) -> None:
    office = office_run.fakes.platform.office(OFFICE)
    assert office.accounts and all(a.credentials_status == "revoked" for a in office.accounts)
    assert {d.id for d in office.devices} == {"PC-1", "PC-2"}
    assert all(
        d.certificate_status == "active" and d.certificate_serial.startswith("CERT-NEW-")
        for d in office.devices
    )


def test_the_firewall_blocked_the_office_range_then_lifted_the_block(
    office_run: OfficeRun,
) -> None:
    blocks = f"/api/v2/offices/{OFFICE}/blocks"
    calls = [r.method for r in office_run.fakes.firewall.requests if r.path.startswith(blocks)]
    assert calls == ["POST", "DELETE"]
    assert office_run.fakes.firewall.requests[0].json()["cidr"] == RANGE
    assert office_run.fakes.firewall.active_blocks(OFFICE) == []


def test_every_old_certificate_is_on_the_crl_the_ca_signed(office_run: OfficeRun) -> None:
    revoked = office_run.steps["revoke_device_certificates"].outputs
    assert revoked is not None
    old = [e for e in office_run.certificates if e.status == CertificateStatus.REVOKED]
    assert {e.device for e in old} == {"PC-1", "PC-2"}
    assert sorted(revoked["revoked_serials"]) == sorted(e.serial for e in old)
    on_crl = office_run.signed_crl_serials()
    for entry in old:
        assert serial_number(entry.serial) in on_crl, entry.serial


def test_new_certificates_were_issued_and_recorded_before_the_office_reconnected(
    office_run: OfficeRun,
) -> None:
    issued = office_run.steps["issue_certificates"].outputs
    assert issued is not None
    new = [e for e in office_run.certificates if e.status == CertificateStatus.VALID]
    assert {e.device for e in new} == {"PC-1", "PC-2"}
    assert all(e.incident == office_run.ticket for e in new)
    assert sorted(issued["new_serials"]) == sorted(e.serial for e in new)
    for entry in new:
        assert office_run.fakes.vault.stored(entry.serial) is not None  # the CA holds it
    finished = office_run.steps["issue_certificates"].finished_at
    reconnecting = office_run.steps["reconnect_office"].started_at
    assert finished is not None and reconnecting is not None
    assert finished <= reconnecting


def test_the_office_devices_were_isolated_in_defender_then_released(
    office_run: OfficeRun,
) -> None:
    microsoft = office_run.fakes.microsoft
    with microsoft.lock:
        actions = [
            (str(a["computerDnsName"]).split(".")[0], a["type"], a["status"])
            for a in sorted(
                microsoft.tenant.machine_actions, key=lambda a: a["creationDateTimeUtc"]
            )
            if a["type"] in ("Isolate", "Unisolate")
        ]
    for device in ("pc-1", "pc-2"):
        mine = [(kind, status) for name, kind, status in actions if name == device]
        assert [kind for kind, _ in mine] == ["Isolate", "Unisolate"], actions
        assert mine[0][1] == "Succeeded"  # carried out while the office was disconnected
    isolated = office_run.steps["isolate_office_devices"].finished_at
    revoking = office_run.steps["revoke_device_certificates"].started_at
    released = office_run.steps["release_office_devices"].started_at
    issued = office_run.steps["issue_certificates"].finished_at
    assert isolated and revoking and released and issued
    assert isolated <= revoking and issued <= released
