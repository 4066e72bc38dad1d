"""A declared service with ``auth: {type: mtls}``: the client certificate from its secret is
presented to a loopback TLS fake that requires one, and to nobody who does not ask."""

from __future__ import annotations

import ssl
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.declared_support import call, declared_settings
from tocsin.errors import ConfigurationError, IntegrationError
from tocsin.sandbox import FakeService, ReceivedRequest, Reply

DECLARATION = """\
service: vault
description: A service that knows its clients by their certificate
base_url: https://vault.example/api
secrets:
  vault_client_cert: PEM certificate and key of Tocsin's client certificate
auth: {type: mtls, certificate_secret: vault_client_cert}
defaults:
  retry: {attempts: 1}
operations:
  lock_office:
    description: Lock an office's vault
    method: POST
    path: /offices/{office_id}/lock
    destructive: true
    parameters:
      office_id: {type: string}
    outputs:
      locked: /locked
"""


class Vault(FakeService):
    name = "fake vault"

    def handle(self, request: ReceivedRequest) -> Reply:
        return Reply(200, {"locked": True, "path": request.path})


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def vault(ca: trustme.CA) -> Iterator[Vault]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.configure_trust(context)  # client certificates must be issued by this CA
    context.verify_mode = ssl.CERT_REQUIRED
    fake = Vault().start(tls=context)
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def folder(tmp_path: Path, ca: trustme.CA) -> Path:
    (tmp_path / "vault.yaml").write_text(textwrap.dedent(DECLARATION), encoding="utf-8")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    return tmp_path


def client_pem(ca: trustme.CA) -> str:
    return ca.issue_cert("tocsin-client").private_key_and_cert_chain_pem.bytes().decode()


def test_the_client_certificate_opens_the_service(
    vault: Vault, folder: Path, ca: trustme.CA
) -> None:
    vault.reset()
    settings = declared_settings(
        {"vault": f"{vault.url}/api"}, folder=folder, ca_bundle=folder / "ca.pem"
    )
    outputs = call(
        "vault.lock_office", settings, {"vault_client_cert": client_pem(ca)}, office_id="OF-7"
    )
    assert outputs == {"locked": True, "status_code": 200}
    assert [r.path for r in vault.requests] == ["/api/offices/OF-7/lock"]


def test_a_certificate_the_service_does_not_trust_gets_no_answer(
    vault: Vault, folder: Path
) -> None:
    vault.reset()
    settings = declared_settings(
        {"vault": f"{vault.url}/api"}, folder=folder, ca_bundle=folder / "ca.pem"
    )
    stranger = client_pem(trustme.CA())
    with pytest.raises(IntegrationError) as caught:
        call("vault.lock_office", settings, {"vault_client_cert": stranger}, office_id="OF-7")
    assert "cannot be reached" in caught.value.message
    assert "PRIVATE KEY" not in caught.value.message
    assert vault.requests == []


def test_a_secret_that_is_not_a_certificate_is_a_configuration_error(
    vault: Vault, folder: Path
) -> None:
    settings = declared_settings({"vault": f"{vault.url}/api"}, folder=folder)
    with pytest.raises(ConfigurationError) as caught:
        call("vault.lock_office", settings, {"vault_client_cert": "hunter2"}, office_id="OF-7")
    assert "client certificate of the vault service cannot be read" in caught.value.message
    assert "hunter2" not in f"{caught.value.message} {caught.value.hint}"
