"""The Vault PKI client against the fake over HTTPS: the token and namespace headers, Vault's
``{"errors": [...]}`` said for the support engineer (the capability to grant, a wrong token,
an unknown role or mount), 412 and 5xx retried within bounds, and ``integrations check``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pki_support import OFFICE, Office, seeded_office
from tocsin.errors import IntegrationError
from tocsin.integrations.pki import integration
from tocsin.integrations.pki.fake import ALL_OPERATIONS, FakeToken
from tocsin.settings import StaticSecrets

READER = FakeToken(
    "hvs.reader-token", operations=ALL_OPERATIONS - {"revoke"}, policies=("default", "pki-reader")
)


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    with seeded_office(tmp_path) as started:
        started.fake.tokens[READER.token] = READER
        yield started


def _revokes(office: Office) -> int:
    return len([r for r in office.fake.requests if r.path == "/v1/pki/revoke"])


def test_every_call_carries_the_token_and_no_other_credential(office: Office) -> None:
    office.run("pki.find_certificates", {"office": OFFICE, "reconcile": True})
    listed = [r for r in office.fake.requests if r.path == "/v1/pki/certs"]
    assert listed and listed[0].query == {"list": ["true"]}
    assert listed[0].header("x-vault-token") == office.token
    assert listed[0].header("authorization") is None
    reads = [r for r in office.fake.requests if r.path.startswith("/v1/pki/cert/")]
    assert reads and all(r.header("x-vault-token") is None for r in reads), (
        "stored certificates are public: the token is not sent where it is not needed"
    )


def test_a_token_whose_policy_lacks_revoke_is_told_the_capability_and_path_to_grant(
    office: Office,
) -> None:
    with pytest.raises(IntegrationError) as caught:
        office.run("pki.revoke_certificates", {"office": OFFICE}, token=READER.token)
    error = caught.value
    assert error.status_code == 403 and not error.retryable
    assert "permission denied" in error.message
    assert "`update` on pki/revoke" in error.message
    assert "default, pki-reader" in error.message
    assert 'path "pki/revoke" { capabilities = ["update"] }' in error.hint
    assert READER.token not in error.message + error.hint
    found = office.run("pki.find_certificates", {"office": OFFICE})
    assert len(found["serials"]) == 2, "nothing was marked revoked"


def test_a_wrong_token_is_said_to_be_wrong_not_lacking_a_policy(office: Office) -> None:
    with pytest.raises(IntegrationError) as caught:
        office.run("pki.revoke_certificates", {"office": OFFICE}, token="hvs.not-a-token")
    error = caught.value
    assert error.status_code == 403
    assert "the token is not valid" in error.message
    assert "TOCSIN_SECRET_VAULT_TOKEN" in error.hint
    assert "hvs.not-a-token" not in error.message + error.hint
    assert _revokes(office) == 1


def test_412_is_retried_until_vault_is_consistent(office: Office) -> None:
    office.fake.fail_next(2, 412, {"errors": []})
    revoked = office.run("pki.revoke_certificates", {"devices": ["PC-1"]})
    assert revoked["newly_revoked"] == 1
    assert _revokes(office) == 3


def test_a_vault_that_keeps_failing_fails_the_step_as_retryable_after_bounded_retries(
    office: Office,
) -> None:
    office.fake.fail_next(10, 503, {"errors": ["Vault is sealed"]})
    with pytest.raises(IntegrationError) as caught:
        office.run("pki.revoke_certificates", {"devices": ["PC-1"]}, max_retries=2)
    error = caught.value
    assert error.retryable and error.status_code == 503
    assert "after 2 retries" in error.message and "Vault is sealed" in error.message
    assert "unseal" in error.hint
    assert _revokes(office) == 3


def test_a_500_while_issuing_is_not_sent_again_since_the_certificate_may_exist(
    office: Office,
) -> None:
    office.fake.fail_next(1, 500, {"errors": ["internal error"]})
    with pytest.raises(IntegrationError) as caught:
        office.run("pki.issue_certificates", {"office": OFFICE, "devices": ["PC-1"]})
    assert caught.value.retryable and caught.value.status_code == 500
    assert "reconcile: true" in caught.value.hint
    assert len([r for r in office.fake.requests if "/issue/" in r.path]) == 1
    assert list(office.keys.iterdir()) == []


def test_an_unknown_role_is_named(office: Office) -> None:
    with pytest.raises(IntegrationError) as caught:
        office.run(
            "pki.issue_certificates", {"office": OFFICE, "devices": ["PC-1"]}, role="no-such-role"
        )
    assert "the role no-such-role does not exist under pki" in caught.value.message
    assert "TOCSIN_PKI__ROLE" in caught.value.hint


def test_a_wrong_mount_says_there_is_no_pki_engine_there(office: Office) -> None:
    with pytest.raises(IntegrationError) as caught:
        office.run("pki.find_certificates", {"office": OFFICE, "reconcile": True}, mount="pki_int")
    assert caught.value.status_code == 404
    assert "no PKI engine at pki_int" in caught.value.message
    assert "TOCSIN_PKI__MOUNT" in caught.value.hint


def test_the_namespace_is_sent_and_an_engine_in_a_namespace_needs_it(office: Office) -> None:
    office.fake.namespace = "brokers"
    with pytest.raises(IntegrationError) as caught:
        office.run("pki.verify_revoked", {"serials": ["01:02"]})
    assert "TOCSIN_PKI__NAMESPACE" in caught.value.hint
    # With the namespace the engine is reached (a namespaced CA is another CA for the inventory).
    with pytest.raises(IntegrationError) as missing:
        office.run("pki.verify_revoked", {"serials": ["01:02"]}, namespace="brokers")
    assert "01:02" in missing.value.message and "does not list" in missing.value.message
    sent = [r for r in office.fake.requests if r.path == "/v1/pki/crl"]
    assert sent[-1].header("x-vault-namespace") == "brokers"


def test_integrations_check_reports_token_policy_role_crl_and_key_channel(
    office: Office,
) -> None:
    assert integration.check is not None
    crl_number = office.fake.crl_number
    checked = integration.check(office.settings, StaticSecrets({"vault_token": office.token}))
    results = {r.check: r for r in checked}
    assert list(results) == ["token", "policy", "role", "CRL", "key channel"]
    assert all(r.ok for r in results.values()), [r for r in results.values() if not r.ok]
    assert "default, tocsin-pki" in results["token"].message
    assert "CN=Broker offices device CA" in results["CRL"].message
    # Nothing changed: the one POST only reads the token's capabilities.
    assert [r.path for r in office.fake.requests if r.method != "GET"] == [
        "/v1/sys/capabilities-self"
    ]
    assert office.fake.crl_number == crl_number


def test_integrations_check_names_what_a_limited_or_wrong_token_lacks(office: Office) -> None:
    assert integration.check is not None
    limited = {
        r.check: r
        for r in integration.check(office.settings, StaticSecrets({"vault_token": READER.token}))
    }
    assert not limited["policy"].ok
    assert "`update` on pki/revoke (pki.revoke_certificates)" in limited["policy"].message
    (wrong,) = integration.check(office.settings, StaticSecrets({"vault_token": "hvs.nope"}))
    assert wrong.check == "token" and not wrong.ok
    assert "permission denied" in wrong.message
