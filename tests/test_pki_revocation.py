"""Revoking an office's device certificates at a fake Vault PKI over HTTPS, and checking the
CA's real, signed CRL lists them (with ``cryptography``, and ``openssl crl`` agreeing)."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tests.pki_support import DEVICES, OFFICE, Office, seeded_office
from tocsin.action_registry import ActionRegistry
from tocsin.errors import IntegrationError
from tocsin.integrations.pki.authority import serial_number


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    with seeded_office(tmp_path) as started:
        yield started


def _crl_der(office: Office) -> bytes:
    """The CRL as anyone downloads it from the fake (DER, no token)."""
    bundle = office.settings.pki.ca_bundle  # type: ignore[attr-defined]
    trusted = ssl.create_default_context(cafile=str(bundle))
    return httpx.get(f"{office.fake.url}/v1/pki/crl", verify=trusted).content


def _crl(office: Office) -> x509.CertificateRevocationList:
    return x509.load_der_x509_crl(_crl_der(office))


def test_the_office_s_certificates_are_revoked_and_on_the_ca_s_signed_crl(office: Office) -> None:
    found = office.run("pki.find_certificates", {"office": OFFICE})
    assert sorted(c["device"] for c in found["certificates"]) == list(DEVICES)
    assert len(found["serials"]) == 2 and found["devices_without_certificate"] == []
    crl_before = office.fake.crl_number

    revoked = office.run("pki.revoke_certificates", {"office": OFFICE})

    assert sorted(revoked["serials"]) == sorted(found["serials"])
    assert revoked["newly_revoked"] == 2
    assert all(r["revoked_at"] and not r["already_revoked"] for r in revoked["revoked"])
    for serial in revoked["serials"]:  # the CA itself holds them revoked
        stored = office.fake.stored(serial)
        assert stored is not None and stored.revoked_at is not None
    verified = office.run("pki.verify_revoked", {"serials": revoked["serials"]})
    assert verified["checked"] == 2 and verified["crl_number"] == office.fake.crl_number
    assert office.fake.crl_number > crl_before
    assert sorted(item["serial"] for item in verified["listed"]) == sorted(revoked["serials"])
    crl = _crl(office)
    assert crl.is_signature_valid(office.fake.ca_certificate.public_key())  # type: ignore[arg-type]
    for serial in revoked["serials"]:
        assert crl.get_revoked_certificate_by_serial_number(serial_number(serial)) is not None
    after = office.run("pki.find_certificates", {"office": OFFICE})
    assert {c["status"] for c in after["certificates"]} == {"revoked"}
    assert after["serials"] == []


def test_openssl_reads_the_same_revoked_serials_and_verifies_the_crl(
    office: Office, tmp_path: Path
) -> None:
    revoked = office.run("pki.revoke_certificates", {"office": OFFICE})
    office.run("pki.verify_revoked", {"serials": revoked["serials"]})
    crl_file = tmp_path / "crl.der"
    crl_file.write_bytes(_crl_der(office))
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(office.fake.ca_pem)
    shown = subprocess.run(
        ["openssl", "crl", "-inform", "DER", "-in", str(crl_file), "-text", "-noout"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    listed = {
        line.split(":", 1)[1].strip().upper()
        for line in shown.splitlines()
        if line.strip().startswith("Serial Number:")
    }
    assert listed == {s.replace(":", "").upper() for s in revoked["serials"]}
    assert "CN=Broker offices device CA" in shown.replace(" = ", "=")
    verified = subprocess.run(
        [
            "openssl",
            "crl",
            "-inform",
            "DER",
            "-in",
            str(crl_file),
            "-CAfile",
            str(ca_file),
            "-noout",
        ],
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 0 and "verify OK" in verified.stdout + verified.stderr


def test_revoking_twice_changes_nothing_and_keeps_the_first_revocation_times(
    office: Office,
) -> None:
    definition = ActionRegistry.discover().get("pki.revoke_certificates")
    assert definition.idempotent and definition.destructive and definition.needs_approval
    first = office.run("pki.revoke_certificates", {"office": OFFICE})
    revokes = len([r for r in office.fake.requests if r.path == "/v1/pki/revoke"])
    again = office.run("pki.revoke_certificates", {"office": OFFICE})
    assert again["newly_revoked"] == 0
    assert all(r["already_revoked"] for r in again["revoked"])
    assert {r["serial"]: r["revoked_at"] for r in again["revoked"]} == {
        r["serial"]: r["revoked_at"] for r in first["revoked"]
    }
    assert len([r for r in office.fake.requests if r.path == "/v1/pki/revoke"]) == revokes


def test_a_certificate_revoked_outside_the_inventory_is_revoked_again_without_error(
    office: Office,
) -> None:
    serial = office.run("pki.find_certificates", {"devices": ["PC-1"]})["serials"][0]
    office.fake.revoke_now(serial)  # someone used the Vault UI; the inventory does not know
    stored = office.fake.stored(serial)
    assert stored is not None and stored.revoked_at is not None
    revoked = office.run("pki.revoke_certificates", {"devices": ["PC-1"]})
    (only,) = revoked["revoked"]
    assert only["serial"] == serial
    assert only["revoked_at"].startswith(stored.revoked_at.strftime("%Y-%m-%dT%H:%M:%S"))


def test_a_serial_missing_from_the_crl_fails_verification_naming_it(office: Office) -> None:
    office.fake.rebuild_crl_on_revoke = False  # Vault's auto_rebuild: the CRL lags
    first = office.run("pki.revoke_certificates", {"devices": ["PC-1"]})
    office.fake.rebuild_crl()
    second = office.run("pki.revoke_certificates", {"devices": ["PC-2"]})
    missing = second["serials"][0]
    serials = [first["serials"][0], missing]

    with pytest.raises(IntegrationError) as caught:
        office.run("pki.verify_revoked", {"serials": serials})

    error = caught.value
    assert missing in error.message and first["serials"][0] not in error.message
    assert "1 of 2" in error.message and error.retryable
    assert "crl/rotate" in error.hint
    office.fake.rebuild_crl()
    assert office.run("pki.verify_revoked", {"serials": serials})["checked"] == 2


def test_a_crl_not_signed_by_the_ca_is_refused(office: Office) -> None:
    revoked = office.run("pki.revoke_certificates", {"office": OFFICE})
    office.fake.crl_signer = ec.generate_private_key(ec.SECP256R1())
    office.fake.rebuild_crl()
    with pytest.raises(IntegrationError) as caught:
        office.run("pki.verify_revoked", {"serials": revoked["serials"]})
    assert "signature does not verify" in caught.value.message


def test_revoking_an_office_the_inventory_does_not_know_fails_and_says_how_to_find_them(
    office: Office,
) -> None:
    with pytest.raises(IntegrationError) as caught:
        office.run("pki.revoke_certificates", {"office": "OF-9999"})
    assert "OF-9999" in caught.value.message and "none was revoked" in caught.value.message
    assert "reconcile: true" in caught.value.hint
    assert not [r for r in office.fake.requests if r.path == "/v1/pki/revoke"]


def test_an_expired_certificate_is_left_alone_and_said_so(office: Office) -> None:
    from datetime import timedelta

    from tocsin.integrations.pki.authority import CertificateFacts
    from tocsin.integrations.pki.inventory import Source, inventory_for

    old = office.fake.issue_now(
        "pc-1.of-1042.devices.broker-office.example", valid_for=timedelta(hours=-1)
    )
    facts = CertificateFacts.of(old)
    with inventory_for(office.settings) as inventory:
        authority = f"vault:{office.fake.url}/pki"
        inventory.record(authority, facts, office=OFFICE, device="PC-1", source=Source.ISSUED)
    before = office.run("pki.find_certificates", {"devices": ["PC-1"]})
    assert before["count"] == 2 and len(before["serials"]) == 1
    assert facts.serial not in before["serials"], "an expired one is not to revoke"
    revoked = office.run("pki.revoke_certificates", {"office": OFFICE})
    assert revoked["expired"] == [facts.serial] and facts.serial not in revoked["serials"]
    assert revoked["newly_revoked"] == 2
    stored = office.fake.stored(facts.serial)
    assert stored is not None and stored.revoked_at is None
    found = office.run("pki.find_certificates", {"devices": ["PC-1"]})
    assert [c["expired"] for c in found["certificates"] if c["serial"] == facts.serial] == [True]


def test_serials_are_written_as_vault_writes_them_whatever_form_they_are_given_in() -> None:
    from tocsin.integrations.pki.authority import normal_serial, serial_number, serial_text

    assert serial_text(0x3967DD2E) == "39:67:dd:2e" and serial_text(5) == "05"
    assert serial_number("39:67:DD:2E") == serial_number("39-67-dd-2e") == 0x3967DD2E
    assert normal_serial("3967dd2e") == "39:67:dd:2e"
    with pytest.raises(ValueError):
        serial_number("not hex")
