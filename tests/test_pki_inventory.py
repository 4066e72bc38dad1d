"""Tocsin's certificate inventory: written when the sandbox seeds an office, when Tocsin
issues or revokes, and reconciled against the CA (list + read) when asked; on SQLite and
PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pki_support import DEVICES, OFFICE, Office, seeded_office
from tests.test_audit import postgres_url  # noqa: F401  (the fixture)
from tocsin.integration import SandboxSeed
from tocsin.integrations.pki import integration
from tocsin.integrations.pki.authority import CertificateFacts
from tocsin.integrations.pki.fake import FakeVaultPKI
from tocsin.integrations.pki.inventory import Source, inventory_at
from tocsin.sandbox.assembly import Sandbox
from tocsin.settings import load_settings

DOMAIN = "devices.broker-office.example"


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    with seeded_office(tmp_path) as started:
        yield started


def _reconciliation(office: Office) -> None:
    """Certificates issued and revoked at the CA behind Tocsin's back are found, attributed
    by their names, and revoked with the others."""
    outside = CertificateFacts.of(office.fake.issue_now(f"pc-3.of-1042.{DOMAIN}"))
    office.fake.issue_now("printer.other-domain.example")  # not a device name: left alone
    pc1 = office.run("pki.find_certificates", {"devices": ["PC-1"]})["serials"][0]
    office.fake.revoke_now(pc1)
    assert office.run("pki.find_certificates", {"office": OFFICE})["count"] == 2

    found = office.run("pki.find_certificates", {"office": OFFICE, "reconcile": True})

    summary = found["reconciled"]
    assert summary["added"] == [outside.serial] and summary["updated"] == [pc1]
    assert summary["unattributed"] == 1 and summary["not_at_ca"] == []
    assert summary["read"] == 4 and not summary["truncated"]
    by_serial = {c["serial"]: c for c in found["certificates"]}
    assert by_serial[outside.serial]["device"] == "pc-3"
    assert by_serial[outside.serial]["source"] == "reconciled"
    assert by_serial[pc1]["status"] == "revoked" and by_serial[pc1]["revoked_at"]
    assert sorted(found["serials"]) == sorted(s for s in by_serial if s != pc1)
    # Read by serial from the CA, one each: Vault cannot search by subject.
    reads = [r.path for r in office.fake.requests if r.path.startswith("/v1/pki/cert/")]
    assert len(reads) == 4

    again = office.run("pki.find_certificates", {"office": OFFICE, "reconcile": True})
    assert again["reconciled"]["added"] == [] and again["reconciled"]["updated"] == []
    assert again["reconciled"]["read"] == 3, "a revoked certificate is not read again"

    revoked = office.run("pki.revoke_certificates", {"office": OFFICE})
    assert revoked["newly_revoked"] == 2 and len(revoked["serials"]) == 3
    assert office.run("pki.verify_revoked", {"serials": revoked["serials"]})["checked"] == 3


def test_reconciling_finds_what_was_issued_and_revoked_outside_tocsin(office: Office) -> None:
    _reconciliation(office)


@pytest.mark.postgres
def test_the_inventory_works_on_postgresql(tmp_path: Path, postgres_url: str) -> None:  # noqa: F811
    with seeded_office(tmp_path, journal_url=postgres_url) as office:
        _reconciliation(office)


def test_a_certificate_the_ca_no_longer_lists_is_reported(office: Office) -> None:
    serial = office.run("pki.find_certificates", {"devices": ["PC-2"]})["serials"][0]
    with office.fake.lock:  # tidied away (expired and past safety_buffer)
        del office.fake._ca.stored[int(serial.replace(":", ""), 16)]
    found = office.run("pki.find_certificates", {"office": OFFICE, "reconcile": True})
    assert found["reconciled"]["not_at_ca"] == [serial]


def test_devices_are_found_by_name_whatever_their_case_and_missing_ones_are_said(
    office: Office,
) -> None:
    found = office.run("pki.find_certificates", {"devices": ["pc-1", "PC-9"]})
    assert [c["device"] for c in found["certificates"]] == ["PC-1"]
    assert found["devices_without_certificate"] == ["PC-9"]


def test_finding_needs_an_office_or_devices(office: Office) -> None:
    from tocsin.errors import ActionError

    with pytest.raises(ActionError) as caught:
        office.run("pki.find_certificates", {})
    assert "give the office, or the devices" in caught.value.message


def test_the_sandbox_seeds_the_demo_office_in_the_runs_journal(tmp_path: Path) -> None:
    settings = load_settings(data_dir=str(tmp_path / "data"))
    inputs = {"office_id": "OF-1042", "office_name": "Courtage Dupont", "devices": "PC-1,PC-2"}
    with Sandbox(settings, SandboxSeed(inputs=inputs, ticket="DEMO-1")) as sandbox:
        fake = sandbox.fake("pki", FakeVaultPKI)
        pki = integration.settings_of(sandbox.settings)
        assert pki.vault_url == fake.url and pki.key_channel
        assert any("OF-1042" in note for note in sandbox.notes)
        journal = f"sqlite:///{tmp_path / 'data' / 'journal.db'}"
        with inventory_at(journal) as inventory:
            authority = f"vault:{fake.url}/pki"
            entries = inventory.find(authority, office="OF-1042")
        assert [e.device for e in entries] == list(DEVICES)
        for entry in entries:  # real certificates of the fake's CA, valid, not revoked
            stored = fake.stored(entry.serial)
            assert stored is not None and stored.revoked_at is None
            assert stored.certificate.issuer == fake.ca_certificate.subject


def test_rows_of_a_ca_that_is_gone_can_be_forgotten_and_others_stay(office: Office) -> None:
    # The sandbox does this when its new fake CA listens where an earlier one did.
    authority = f"vault:{office.fake.url}/pki"
    journal = str(office.settings.journal_url)
    with inventory_at(journal) as inventory:
        other = CertificateFacts.of(office.fake.issue_now(f"pc-1.of-7.{DOMAIN}"))
        inventory.record(
            "vault:https://other:8200/pki",
            other,
            office="OF-7",
            device="PC-1",
            source=Source.ISSUED,
        )
        assert inventory.forget(authority) == 2
        assert inventory.find(authority, office=OFFICE) == []
        assert [
            e.serial for e in inventory.find("vault:https://other:8200/pki", office="OF-7")
        ] == [other.serial]
