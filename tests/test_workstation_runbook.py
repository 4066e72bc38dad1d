"""The workstation-malware runbook run in process on the sandbox, decided by the demo's
scripted people: the infected PC isolated then released in the fake Defender for Endpoint,
its old certificate revoked and on the CA's signed CRL, a new one issued before the release."""

from __future__ import annotations

from typing import Any

import pytest

from tests.office_runs import OfficeRun, run_office_demo, serial_number
from tocsin.integrations.pki.inventory import CertificateStatus
from tocsin.statuses import RunStatus, StepStatus

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def malware_run(prefect_server: str) -> OfficeRun:
    return run_office_demo("workstation-malware", "PCM-1")


def _device(run: OfficeRun) -> str:
    return str(run.inputs["device"])


def _isolation_actions(run: OfficeRun) -> list[dict[str, Any]]:
    dns = _device(run).lower() + "."
    tenant = run.fakes.microsoft.tenant
    with run.fakes.microsoft.lock:
        actions = [
            dict(a)
            for a in tenant.machine_actions
            if str(a["computerDnsName"]).startswith(dns) and a["type"] in ("Isolate", "Unisolate")
        ]
    return sorted(actions, key=lambda a: str(a["creationDateTimeUtc"]))


def test_the_run_succeeds_with_every_step_finished(malware_run: OfficeRun) -> None:
    assert malware_run.result["status"] == RunStatus.SUCCEEDED, malware_run.result
    unfinished = {
        step: record.status
        for step, record in malware_run.steps.items()
        if record.status not in (StepStatus.SUCCEEDED, StepStatus.APPROVED, StepStatus.DONE)
    }
    assert not unfinished
    for task in ("preserve_evidence", "reimage_device", "restore_from_backup", "verify_updates"):
        assert malware_run.steps[task].status == StepStatus.DONE


def test_the_pc_was_isolated_in_defender_then_released(malware_run: OfficeRun) -> None:
    actions = _isolation_actions(malware_run)
    assert [(a["type"], a["scope"]) for a in actions] == [("Isolate", "Full"), ("Unisolate", None)]
    assert actions[0]["status"] == "Succeeded"  # carried out before the PC was released
    # The online PC carries the release out by Defender's next request (the fake's rule).
    assert actions[1]["status"] in ("Pending", "Succeeded")
    assert malware_run.ticket in actions[0]["requestorComment"]


def test_only_the_pc_s_old_certificate_was_revoked_and_it_is_on_the_signed_crl(
    malware_run: OfficeRun,
) -> None:
    device = _device(malware_run)
    revoked = [e for e in malware_run.certificates if e.status == CertificateStatus.REVOKED]
    assert [e.device for e in revoked] == [device]
    outputs = malware_run.steps["revoke_certificate"].outputs
    assert outputs is not None and outputs["revoked_serials"] == [revoked[0].serial]
    assert serial_number(revoked[0].serial) in malware_run.signed_crl_serials()


def test_a_new_certificate_was_issued_before_the_pc_was_released(malware_run: OfficeRun) -> None:
    device = _device(malware_run)
    new = [
        e
        for e in malware_run.certificates
        if e.device == device and e.status == CertificateStatus.VALID
    ]
    assert len(new) == 1 and new[0].incident == malware_run.ticket
    assert malware_run.fakes.vault.stored(new[0].serial) is not None
    issued = malware_run.steps["reissue_certificate"].finished_at
    releasing = malware_run.steps["release_device"].started_at
    assert issued is not None and releasing is not None and issued <= releasing
    # Isolation came before the revocation, the release after the reissue.
    isolated = malware_run.steps["isolate_device"].finished_at
    revoking = malware_run.steps["revoke_certificate"].started_at
    assert isolated is not None and revoking is not None and isolated <= revoking
