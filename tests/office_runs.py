"""A shipped office runbook (office-compromise, workstation-malware) run in this process on
the sandbox with its demo inputs, decided by the demo's scripted people, with the fakes it
ran against kept so that a test reads their own final state afterwards."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tests.cli_runner import ROOT
from tocsin.action_registry import ActionRegistry
from tocsin.demo import scripted_approver
from tocsin.incident import Incident
from tocsin.integration import demo_runs
from tocsin.integrations.firewall.fake import FakeFirewall
from tocsin.integrations.microsoft.fake import FakeMicrosoft
from tocsin.integrations.pki.fake import FakeVaultPKI
from tocsin.integrations.pki.inventory import InventoryEntry, inventory_for
from tocsin.integrations.platform.fake import FakePlatform
from tocsin.journal.runs import StepRecord
from tocsin.running import journal_for, start_run
from tocsin.sandbox.assembly import Sandbox
from tocsin.sandbox.fake_service import ReceivedRequest
from tocsin.settings import load_settings
from tocsin.validation import load_runbook


@dataclass(frozen=True)
class Fakes:
    platform: FakePlatform
    firewall: FakeFirewall
    vault: FakeVaultPKI
    microsoft: FakeMicrosoft
    authority: str
    """The inventory's name of the fake CA (``vault:<url>/<mount>``)."""


@dataclass(frozen=True)
class OfficeRun:
    ticket: str
    inputs: dict[str, Any]
    result: dict[str, Any]
    fakes: Fakes
    steps: dict[str, StepRecord]
    """Each step as the journal ends with it."""
    certificates: list[InventoryEntry]
    """The office's certificates in the inventory after the run."""

    def signed_crl_serials(self) -> set[int]:
        """The serials on the fake CA's CRL, once its issuer and signature check against the CA."""
        vault = self.fakes.vault
        served = vault.handle(ReceivedRequest("GET", f"/v1/{vault.mount}/crl", {}, {}, b""))
        assert served.status == 200 and isinstance(served.body, bytes)
        crl = x509.load_der_x509_crl(served.body)
        ca = vault.ca_certificate
        key = ca.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)  # the fake CA's key
        assert crl.issuer == ca.subject
        assert crl.is_signature_valid(key)
        return {entry.serial_number for entry in crl}


def serial_number(serial: str) -> int:
    """A serial as Vault writes it (``17:67:…``) as the CRL's integer."""
    return int(serial.replace(":", ""), 16)


def run_office_demo(runbook: str, ticket: str) -> OfficeRun:
    """The demo run of ``runbook`` until it ends, with the fakes it ran against."""
    settings = load_settings()
    loaded = load_runbook(ROOT / "runbooks" / f"{runbook}.yaml", ActionRegistry.discover())
    inputs = dict(demo_runs()[runbook].inputs)
    kept: list[Fakes] = []
    said: list[str] = []

    def people_decide(sandbox: Sandbox | None) -> None:
        assert sandbox is not None  # the tests run in sandbox mode
        vault = sandbox.fake("pki", FakeVaultPKI)
        # Kept while the sandbox lives: their state outlives it.
        kept.append(
            Fakes(
                sandbox.fake("platform", FakePlatform),
                sandbox.fake("firewall", FakeFirewall),
                vault,
                sandbox.fake("microsoft", FakeMicrosoft),
                f"vault:{vault.url}/{vault.mount}",
            )
        )
        scripted_approver(settings, ticket, said.append, sandbox)

    result = start_run(
        loaded,
        Incident(ticket=ticket, title=f"{runbook} (test)", requested_by="U0REQUESTER"),
        inputs,
        settings=settings,
        printer=said.append,
        on_started=people_decide,
    )
    assert kept, "\n".join(said)
    journal = journal_for(settings)
    try:
        (run,) = journal.runs_of(ticket)
        steps = {record.step_id: record for record in journal.steps_of(run.id)}
    finally:
        journal.close()
    with inventory_for(settings) as inventory:
        certificates = inventory.find(kept[0].authority, office=str(inputs["office_id"]))
    return OfficeRun(ticket, inputs, result, kept[0], steps, certificates)
