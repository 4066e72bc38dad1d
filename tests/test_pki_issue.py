"""Issuing device certificates at the fake Vault PKI: a CSR made on the device is signed (its
key never leaves it); a key the CA makes goes only to the key channel, never to the outputs,
the errors or the logs; a revoked office gets new certificates."""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.pki_support import OFFICE, Office, seeded_office
from tocsin.action_registry import ActionRegistry
from tocsin.errors import ActionError, ConfigurationError, IntegrationError

DOMAIN = "devices.broker-office.example"


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    with seeded_office(tmp_path) as started:
        yield started


def _csr(name: str) -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    return key, request.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _public(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _issue_requests(office: Office) -> list[str]:
    return [r.path for r in office.fake.requests if "/issue/" in r.path or "/sign/" in r.path]


def test_a_csr_made_on_the_device_is_signed_and_its_key_never_leaves_it(office: Office) -> None:
    key, csr = _csr("pc-1")
    issued = office.run(
        "pki.issue_certificates", {"office": OFFICE, "devices": ["PC-1"], "csrs": {"PC-1": csr}}
    )
    (made,) = issued["certificates"]
    assert made["method"] == "signed" and made["delivered_to"] is None
    certificate = x509.load_pem_x509_certificate(made["certificate"].encode())
    assert _public(certificate.public_key()) == _public(key.public_key())
    assert made["subject"] == f"CN=pc-1.of-1042.{DOMAIN}" and made["sans"] == [
        f"pc-1.of-1042.{DOMAIN}"
    ]
    assert certificate.issuer == office.fake.ca_certificate.subject
    assert _issue_requests(office) == ["/v1/pki/sign/office-device"]
    sent = next(r for r in office.fake.requests if r.path.endswith("/sign/office-device")).json()
    assert sent["csr"].strip() == csr.strip() and sent["common_name"] == f"pc-1.of-1042.{DOMAIN}"
    assert list(office.keys.iterdir()) == [], "nothing secret was made, nothing delivered"
    found = office.run("pki.find_certificates", {"devices": ["PC-1"]})
    assert made["serial"] in found["serials"]
    assert {c["source"] for c in found["certificates"] if c["serial"] == made["serial"]} == {
        "signed"
    }


def test_a_key_the_ca_makes_goes_to_the_key_channel_only(
    office: Office, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    issued = office.run("pki.issue_certificates", {"office": OFFICE, "devices": ["PC-2"]})

    (made,) = issued["certificates"]
    (delivered,) = office.keys.iterdir()
    assert stat.S_IMODE(os.stat(delivered).st_mode) == 0o600
    text = delivered.read_text()
    key_pem = text[
        text.index("-----BEGIN EC PRIVATE KEY-----") : text.index("-----END EC PRIVATE KEY-----")
        + 29
    ]
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    certificate = x509.load_pem_x509_certificate(made["certificate"].encode())
    assert _public(key.public_key()) == _public(certificate.public_key())
    assert made["serial"] in text and "INC-14" in text and "PC-2" in text
    assert made["method"] == "generated" and made["delivered_to"] == f"file {delivered} (mode 0600)"
    body = key_pem.splitlines()[1]  # a line of the key itself
    assert body not in json.dumps(issued) and "PRIVATE KEY" not in json.dumps(issued)
    assert body not in caplog.text and "PRIVATE KEY" not in caplog.text
    assert office.token not in caplog.text


def test_without_a_key_channel_a_device_without_csr_gets_nothing_and_nothing_is_issued(
    office: Office,
) -> None:
    _, csr = _csr("pc-1")
    with pytest.raises(ConfigurationError) as caught:
        office.run(
            "pki.issue_certificates",
            {"office": OFFICE, "devices": ["PC-1", "PC-2"], "csrs": {"PC-1": csr}},
            key_channel=None,
        )
    assert "PC-2" in caught.value.message and "TOCSIN_PKI__KEY_CHANNEL" in caught.value.hint
    assert _issue_requests(office) == []


def test_a_key_channel_others_can_read_is_refused_before_anything_is_issued(
    office: Office,
) -> None:
    office.keys.chmod(0o755)
    with pytest.raises(ConfigurationError) as caught:
        office.run("pki.issue_certificates", {"office": OFFICE, "devices": ["PC-2"]})
    assert "chmod 700" in caught.value.hint
    assert _issue_requests(office) == [] and list(office.keys.iterdir()) == []


def test_a_malformed_csr_is_refused_before_anything_is_issued(office: Office) -> None:
    with pytest.raises(ActionError) as caught:
        office.run(
            "pki.issue_certificates",
            {"office": OFFICE, "devices": ["PC-1"], "csrs": {"PC-1": "not a CSR"}},
        )
    assert "PC-1" in caught.value.message and "BEGIN CERTIFICATE REQUEST" in caught.value.hint
    assert _issue_requests(office) == []


def test_a_name_the_role_does_not_allow_is_refused_with_vault_s_words(office: Office) -> None:
    with pytest.raises(IntegrationError) as caught:
        office.run(
            "pki.issue_certificates",
            {"office": OFFICE, "devices": ["PC-1"]},
            domain="elsewhere.example",
        )
    error = caught.value
    assert error.status_code == 400 and "not allowed by this role" in error.message
    assert "allowed_domains" in error.hint and "TOCSIN_PKI__DOMAIN" in error.hint
    assert list(office.keys.iterdir()) == []


def test_a_revoked_office_is_issued_new_certificates_which_are_then_the_valid_ones(
    office: Office,
) -> None:
    old = office.run("pki.revoke_certificates", {"office": OFFICE})["serials"]
    _, csr = _csr("pc-1")
    issued = office.run(
        "pki.issue_certificates",
        {"office": OFFICE, "devices": ["PC-1", "PC-2"], "csrs": {"PC-1": csr}, "ttl": "720h"},
    )
    new = issued["serials"]
    assert len(new) == 2 and not set(new) & set(old)
    found = office.run("pki.find_certificates", {"office": OFFICE})
    assert sorted(found["serials"]) == sorted(new)
    assert found["count"] == 4
    by_serial = {c["serial"]: c for c in found["certificates"]}
    assert {by_serial[s]["status"] for s in old} == {"revoked"}
    assert {by_serial[s]["device"] for s in new} == {"PC-1", "PC-2"}
    # The old ones stay on the CRL; the new ones are not on it.
    assert office.run("pki.verify_revoked", {"serials": old})["checked"] == 2
    with pytest.raises(IntegrationError):
        office.run("pki.verify_revoked", {"serials": new})


def test_issuing_is_declared_not_idempotent_and_its_plan_says_where_keys_go() -> None:
    definition = ActionRegistry.discover().get("pki.issue_certificates")
    assert definition.destructive and not definition.idempotent
    sentence = definition.describe_call(
        definition.parameters.model_validate({"office": OFFICE, "devices": ["PC-1", "PC-2"]})
    )
    assert "PC-1, PC-2" in sentence and "key channel" in sentence
    assert definition.output_names is not None
    assert not {name for name in definition.output_names if "key" in name}


# -- in a runbook, through Prefect, in the sandbox -----------------------------------------------

OFFICE_RUNBOOK = """\
runbook: pki-office
version: 1
title: Revoke and reissue an office's device certificates
summary: Find, revoke, check the CRL, issue again
severity: high
sources: [{title: Test, document: test.txt}]
inputs:
  office_id: {type: string, description: The office}
  devices: {type: list, items: string, description: Its devices}
steps:
  - id: find
    title: Find the office's certificates
    action: pki.find_certificates
    with: {office: "{{ inputs.office_id }}"}
  - id: revoke
    title: Revoke them
    action: pki.revoke_certificates
    with: {office: "{{ inputs.office_id }}"}
  - id: crl
    title: Check the CRL lists them
    action: pki.verify_revoked
    with: {serials: "{{ steps.revoke.outputs.serials }}"}
  - id: issue
    title: Issue new ones, keys made by the CA
    action: pki.issue_certificates
    with: {office: "{{ inputs.office_id }}", devices: "{{ inputs.devices }}"}
"""


def _files_holding(folder: Path, needle: bytes) -> list[Path]:
    return [
        path
        for path in folder.rglob("*")
        if path.is_file() and not path.is_symlink() and needle in path.read_bytes()
    ]


@pytest.mark.slow
def test_the_sandbox_office_is_revoked_and_reissued_and_no_key_reaches_journal_or_prefect(
    prefect_server: str, tmp_path: Path
) -> None:
    import re
    import shutil

    import httpx

    from tests.cli_runner import ROOT, run_tocsin
    from tocsin.embedded import prefect_home
    from tocsin.running import journal_for
    from tocsin.settings import load_settings

    runbook = tmp_path / "pki-office.yaml"
    runbook.write_text(OFFICE_RUNBOOK)
    data = tmp_path / "data"
    result = run_tocsin(
        "run",
        str(runbook),
        "--ticket",
        "PKI-1",
        "--set",
        "office_id=OF-1042",
        "--set",
        "devices=PC-1,PC-2",
        env={
            "PYTHONPATH": str(ROOT),
            "TOCSIN_DATA_DIR": str(data),
            "TOCSIN_PREFECT_API_URL": prefect_server,
        },
        timeout=240,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    journal = journal_for(load_settings(data_dir=data))
    try:
        run = journal.find_run("PKI-1", "pki-office")
        assert run is not None
        steps = {name: journal.step(run.id, name) for name in ("find", "revoke", "crl", "issue")}
        events = journal.events_of("PKI-1")
    finally:
        journal.close()
    assert all(step is not None and step.status == "succeeded" for step in steps.values())
    found, revoked, crl, issue = (steps[n].outputs for n in ("find", "revoke", "crl", "issue"))  # type: ignore[union-attr]
    assert found is not None and revoked is not None and crl is not None and issue is not None
    assert len(found["serials"]) == 2 and sorted(revoked["serials"]) == sorted(found["serials"])
    assert crl["checked"] == 2
    assert not set(issue["serials"]) & set(revoked["serials"])
    keys: list[str] = []
    folders: set[Path] = set()
    for made in issue["certificates"]:
        path = Path(re.sub(r"^file (.+) \(mode 0600\)$", r"\1", str(made["delivered_to"])))
        folders.add(path.parent)
        text = path.read_text()
        keys.append(text.split("-----BEGIN EC PRIVATE KEY-----\n", 1)[1].splitlines()[0])
    try:
        for key_line in keys:
            secret = key_line.encode()
            assert secret not in repr(events).encode() and key_line not in output
            assert _files_holding(data, secret) == []
            assert _files_holding(prefect_home(load_settings()), secret) == []
            with httpx.Client(base_url=prefect_server, timeout=30) as api:
                logs = api.post("/logs/filter", json={"limit": 200, "sort": "TIMESTAMP_DESC"})
                tasks = api.post("/task_runs/filter", json={"limit": 200})
            assert logs.status_code == tasks.status_code == 200
            assert key_line not in logs.text and key_line not in tasks.text
    finally:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
