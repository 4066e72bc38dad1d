"""The Microsoft 365 client against the fake identity platform and Graph over HTTPS on loopback:
msal really signs in (secret and certificate), throttling is waited out within bounds, a
``$batch`` reports each item, and every refusal says what to do."""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests import microsoft_support
from tests.microsoft_support import (
    LIMITED_CLIENT_ID,
    LIMITED_SECRET,
    fake_tenant,
    graph,
    run_action,
    settings_for,
    signed_in,
)
from tocsin.errors import ConfigurationError, IntegrationError
from tocsin.integrations.microsoft import (
    CERTIFICATE_KEY_SECRET,
    CERTIFICATE_THUMBPRINT_SECRET,
    CLIENT_SECRET,
    integration,
)
from tocsin.integrations.microsoft.client import (
    BatchItem,
    Graph,
    MicrosoftCredentials,
    acquire_token,
    backoff_seconds,
    retry_after_seconds,
    scopes,
)
from tocsin.integrations.microsoft.fake import SANDBOX_USER, FakeApp, FakeMicrosoft
from tocsin.sandbox.tls import LoopbackCA
from tocsin.settings import Settings, StaticSecrets

USER = SANDBOX_USER
USER_PATH = "/v1.0/users/alice%40broker-office.example"
CERT_CLIENT_ID = "33333333-4444-4555-8666-certificate0"


def _certificate() -> tuple[bytes, bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tocsin test app")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return (
        key_pem,
        cert.public_bytes(serialization.Encoding.PEM),
        cert.fingerprint(hashes.SHA1()).hex(),
    )


CERT_KEY, CERT_PEM, CERT_THUMBPRINT = _certificate()


@pytest.fixture(scope="module")
def tenant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeMicrosoft, LoopbackCA]]:
    certificate_app = FakeApp(client_id=CERT_CLIENT_ID, secret=None, certificate_pem=CERT_PEM)
    with fake_tenant(tmp_path_factory.mktemp("microsoft"), apps=(certificate_app,)) as started:
        yield started


# The Microsoft modules' shared per-test fixtures (tests.microsoft_support).
fake = microsoft_support.fake
settings = microsoft_support.settings


@pytest.fixture
def ca(tenant: tuple[FakeMicrosoft, LoopbackCA]) -> LoopbackCA:
    return tenant[1]


def graph_calls_since(fake: FakeMicrosoft, seen: int) -> list[str]:
    return [f"{r.method} {r.path}" for r in fake.requests[seen:] if r.path.startswith("/v1.0/")]


def batch_sizes(fake: FakeMicrosoft, seen: int) -> list[int]:
    return [len(r.json()["requests"]) for r in fake.requests[seen:] if r.path == "/v1.0/$batch"]


# -- signing in ---------------------------------------------------------------------------


def test_msal_signs_in_over_tls_with_the_ca_setting_and_leaves_the_environment_alone(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    environment = dict(os.environ)
    client = graph(settings)
    assert client.call("GET", "/users/{user}", user=USER).body["userPrincipalName"] == USER
    # msal read the OIDC discovery document, then asked the token endpoint.
    identity = [(r.method, r.path) for r in fake.requests if not r.path.startswith("/v1.0")]
    assert ("POST", "/5f1c7a5e-7d2b-4f0e-9a11-0c0ffee00001/oauth2/v2.0/token") in identity
    token_call = next(r for r in fake.requests if r.path.endswith("/token"))
    assert b"grant_type=client_credentials" in token_call.body
    assert (
        f"scope={fake.url}/.default".replace(":", "%3A").replace("/", "%2F").encode()
        in token_call.body
    )
    assert dict(os.environ) == environment


def test_the_token_cache_lives_for_the_process(fake: FakeMicrosoft, settings: Settings) -> None:
    for _ in range(3):
        graph(settings).call("GET", "/users/{user}", user=USER)
    assert fake.tokens_issued == 1


def test_an_expired_token_is_dropped_and_renewed_once(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    seen = signed_in(graph(settings), fake)
    issued = fake.tokens_issued
    fake.expire_tokens()
    assert graph(settings).call("GET", "/users/{user}", user=USER).status == 200
    assert fake.tokens_issued == issued + 1
    # The call, refused once (401), then sent again with the new token.
    assert [r.path for r in fake.requests[seen:]] == [
        USER_PATH,
        "/5f1c7a5e-7d2b-4f0e-9a11-0c0ffee00001/oauth2/v2.0/token",
        USER_PATH,
    ]


def test_a_wrong_client_secret_is_a_configuration_error_saying_which_secret(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        graph(settings, secret="the-secret-id-not-its-value").token()
    assert "AADSTS7000215" in caught.value.message
    assert "Value (not its Secret ID)" in caught.value.hint
    assert "TOCSIN_SECRET_MICROSOFT_CLIENT_SECRET" in caught.value.hint
    assert "the-secret-id-not-its-value" not in caught.value.message + caught.value.hint


def test_an_app_the_tenant_does_not_know_is_a_configuration_error(
    fake: FakeMicrosoft, ca: LoopbackCA
) -> None:
    settings = settings_for(fake, ca, client_id="99999999-9999-4999-8999-999999999999")
    with pytest.raises(ConfigurationError, match="AADSTS700016") as caught:
        graph(settings).token()
    assert "TOCSIN_MICROSOFT__CLIENT_ID" in caught.value.hint


def test_an_unknown_tenant_is_a_configuration_error(fake: FakeMicrosoft, ca: LoopbackCA) -> None:
    settings = settings_for(fake, ca, tenant_id="00000000-0000-0000-0000-000000000000")
    with pytest.raises(ConfigurationError, match="cannot be set up") as caught:
        graph(settings).token()
    assert "TENANT_ID" in caught.value.hint


def test_without_the_ca_bundle_the_fakes_certificate_is_refused(
    fake: FakeMicrosoft, ca: LoopbackCA
) -> None:
    settings = settings_for(
        fake, ca, ca_bundle=None, authority_host=fake.url.replace("127.0.0.1", "localhost")
    )
    with pytest.raises(ConfigurationError, match="does not trust") as caught:
        graph(settings).token()
    assert "TOCSIN_MICROSOFT__CA_BUNDLE" in caught.value.hint


def test_a_sign_in_host_that_does_not_answer_is_retryable(
    fake: FakeMicrosoft, ca: LoopbackCA
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    settings = settings_for(fake, ca, authority_host=f"https://127.0.0.1:{closed}")
    with pytest.raises(IntegrationError, match="cannot be reached") as caught:
        graph(settings).token()
    assert caught.value.retryable is True


def test_a_certificate_credential_signs_in_with_an_assertion(
    fake: FakeMicrosoft, ca: LoopbackCA
) -> None:
    settings = settings_for(fake, ca, client_id=CERT_CLIENT_ID)
    secrets = StaticSecrets(
        {
            CERTIFICATE_KEY_SECRET: CERT_KEY.decode(),
            CERTIFICATE_THUMBPRINT_SECRET: CERT_THUMBPRINT.upper(),
        }
    )
    credentials = MicrosoftCredentials.from_secrets(settings, secrets)
    assert credentials.client_secret is None and "BEGIN" not in repr(credentials)
    client = Graph(credentials, integration.settings_of(settings), "test.action")
    assert client.call("GET", "/users/{user}", user=USER).status == 200
    token_call = next(r for r in fake.requests if r.path.endswith("/token"))
    assert b"client_assertion=" in token_call.body and b"client_secret" not in token_call.body


def test_a_certificate_the_app_does_not_know_is_refused(
    fake: FakeMicrosoft, ca: LoopbackCA
) -> None:
    other_key, _, other_thumbprint = _certificate()
    settings = settings_for(fake, ca, client_id=CERT_CLIENT_ID)
    secrets = StaticSecrets(
        {
            CERTIFICATE_KEY_SECRET: other_key.decode(),
            CERTIFICATE_THUMBPRINT_SECRET: other_thumbprint,
        }
    )
    with pytest.raises(ConfigurationError, match="AADSTS700027"):
        Graph(
            MicrosoftCredentials.from_secrets(settings, secrets),
            integration.settings_of(settings),
            "t",
        ).token()


def test_no_tenant_or_no_credential_names_what_to_set(
    settings: Settings, fake: FakeMicrosoft, ca: LoopbackCA
) -> None:
    with pytest.raises(ConfigurationError, match="TOCSIN_MICROSOFT__TENANT_ID"):
        MicrosoftCredentials.from_secrets(
            settings_for(fake, ca, tenant_id=None), StaticSecrets({CLIENT_SECRET: "x"})
        )
    with pytest.raises(ConfigurationError, match="no credential") as caught:
        MicrosoftCredentials.from_secrets(settings, StaticSecrets({}))
    assert "TOCSIN_SECRET_MICROSOFT_CLIENT_SECRET" in caught.value.hint


# -- throttling -----------------------------------------------------------------------------


def test_a_429_storm_is_waited_out_honouring_fractional_retry_after(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    seen = signed_in(graph(settings), fake)
    fake.throttle(3, retry_after="0.25")
    started = time.monotonic()
    outputs = run_action("microsoft.list_inbox_rules", {"user": USER}, settings)
    waited = time.monotonic() - started
    assert len(outputs["rules"]) == 4
    assert waited >= 0.75, "each Retry-After was waited"
    assert waited < 5
    assert graph_calls_since(fake, seen)[:4] == [f"GET {USER_PATH}"] * 4


def test_a_429_without_retry_after_backs_off_within_the_bound(
    fake: FakeMicrosoft, ca: LoopbackCA
) -> None:
    settings = settings_for(fake, ca, max_retry_wait_seconds=0.2)
    fake.throttle(2, retry_after=None)
    started = time.monotonic()
    assert graph(settings).call("GET", "/users/{user}", user=USER).status == 200
    assert 0.1 <= time.monotonic() - started < 2


def test_endless_throttling_fails_the_step_as_retryable_after_max_retries(
    fake: FakeMicrosoft, ca: LoopbackCA
) -> None:
    settings = settings_for(fake, ca, max_retries=2)
    client = graph(settings)
    seen = signed_in(client, fake)
    fake.throttle(10, retry_after="0")
    with pytest.raises(IntegrationError, match="still answers 429 after 2 retries") as caught:
        client.call("GET", "/users/{user}", user=USER)
    assert caught.value.retryable is True and caught.value.status_code == 429
    assert len(graph_calls_since(fake, seen)) == 3


def test_a_retry_after_longer_than_the_bound_is_not_waited(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    fake.throttle(1, retry_after="120")
    started = time.monotonic()
    with pytest.raises(IntegrationError, match="asks to wait 120 s") as caught:
        graph(settings).call("GET", "/users/{user}", user=USER)
    assert time.monotonic() - started < 2 and caught.value.retryable is True


def test_retry_after_and_backoff_values() -> None:
    assert retry_after_seconds("2.5") == 2.5
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past
    waits = [backoff_seconds(attempt, 10.0) for attempt in range(8)]
    assert all(0 < w <= 10.0 for w in waits) and max(waits[5:]) > 2


# -- $batch ---------------------------------------------------------------------------------


def test_a_batch_reports_each_item_and_an_outer_200_proves_nothing(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    client = graph(settings)
    outcomes = client.batch(
        [
            BatchItem("1", "GET", f"/users/{USER}"),
            BatchItem("2", "GET", "/users/nobody@broker-office.example"),
            BatchItem("3", "DELETE", "/oauth2PermissionGrants/no-such-grant"),
        ]
    )
    assert [o.status for o in outcomes] == [200, 404, 404]
    assert outcomes[0].ok and outcomes[0].error is None
    assert (
        outcomes[1].error is not None
        and "has no user nobody@broker-office.example" in outcomes[1].error.message
    )
    assert outcomes[2].error is not None and not outcomes[2].ok


def test_a_batch_of_45_goes_in_three_requests_of_at_most_20(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    client = graph(settings)
    seen = signed_in(client, fake)
    outcomes = client.batch([BatchItem(str(n), "GET", f"/users/{USER}") for n in range(45)])
    assert len(outcomes) == 45 and all(o.ok for o in outcomes)
    assert batch_sizes(fake, seen) == [20, 20, 5]


def test_items_throttled_inside_a_batch_are_sent_again(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    client = graph(settings)
    seen = signed_in(client, fake)
    fake.throttle_batch_items(2, retry_after="0.1")
    outcomes = client.batch([BatchItem(str(n), "GET", f"/users/{USER}") for n in range(3)])
    assert all(o.ok for o in outcomes)
    assert batch_sizes(fake, seen) == [3, 2]


def test_a_partial_batch_failure_fails_the_action_naming_each_item(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    fake.throttle_batch_items(1, retry_after="7", method="DELETE")
    limited = settings_for(fake, fake_ca(settings), max_retries=0)
    with pytest.raises(IntegrationError) as caught:
        run_action("microsoft.revoke_oauth_grants", {"user": USER, "keep": []}, limited)
    message = caught.value.message
    assert (
        "could not remove 1 of 2 item(s) (the others are gone): consent to Mail Backup Pro: "
        in message
    )
    assert caught.value.retryable is True
    # The step's retry waits as Graph asked; refused before acting, it may run again.
    assert caught.value.retry_after == 7.0 and caught.value.unapplied is True
    # The other grant went; the failed one is still there for a re-run.
    assert [g["scope"].split()[0] for g in fake.grants_of(USER)] == ["Mail.ReadWrite"]
    run_action("microsoft.revoke_oauth_grants", {"user": USER, "keep": []}, settings)
    assert fake.grants_of(USER) == []


def fake_ca(settings: Settings) -> LoopbackCA:
    bundle = integration.settings_of(settings).ca_bundle
    assert bundle is not None
    return LoopbackCA(bundle, Path(), Path())


# -- refusals said for the support engineer ---------------------------------------------------


def test_a_403_names_the_missing_application_permission_and_how_to_grant_it(
    fake: FakeMicrosoft, settings: Settings, ca: LoopbackCA
) -> None:
    limited = settings_for(fake, ca, client_id=LIMITED_CLIENT_ID)
    secrets = {CLIENT_SECRET: LIMITED_SECRET}
    with pytest.raises(IntegrationError) as caught:
        run_action("microsoft.remove_auth_methods", {"user": USER, "keep": []}, limited, secrets)
    error = caught.value
    assert error.status_code == 403 and error.retryable is False
    assert "accessDenied" in error.message
    assert (
        "needs the application permission UserAuthenticationMethod.ReadWrite.All" in error.message
    )
    assert (
        f"grant UserAuthenticationMethod.ReadWrite.All to the app {LIMITED_CLIENT_ID}" in error.hint
    )
    assert "API permissions" in error.hint and "Grant admin consent" in error.hint
    assert len(fake.methods_of(USER)) == 4

    with pytest.raises(IntegrationError) as caught:
        run_action("microsoft.recent_sign_ins", {"user": USER}, limited, secrets)
    assert "AuditLog.Read.All and Directory.Read.All" in caught.value.message
    assert "its token lacks AuditLog.Read.All" in caught.value.message


def test_a_user_who_does_not_exist_is_named(fake: FakeMicrosoft, settings: Settings) -> None:
    with pytest.raises(IntegrationError) as caught:
        run_action("microsoft.disable_user", {"user": "mallory@broker-office.example"}, settings)
    assert caught.value.message == (
        "microsoft.disable_user: Microsoft 365 has no user mallory@broker-office.example "
        "(Request_ResourceNotFound)"
    )
    assert "UPN" in caught.value.hint and caught.value.status_code == 404


def test_a_synchronised_users_password_cannot_be_reset_in_the_cloud(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    fake.tenant.users[0]["onPremisesSyncEnabled"] = True
    client = graph(settings)
    with pytest.raises(IntegrationError) as caught:
        client.call(
            "PATCH",
            "/users/{user}",
            user=USER,
            json_body={"passwordProfile": {"forceChangePasswordNextSignIn": True, "password": "x"}},
            what="reset the password",
        )
    assert (
        "synchronised from on-premises Active Directory or signs in through a federated domain"
        in caught.value.message
    )
    assert "on-premises AD" in caught.value.hint
    # Disabling still works for such a user, with a word about the next sync.
    disabled = run_action("microsoft.disable_user", {"user": USER}, settings)
    assert "next sync sets it back" in disabled["note"]


def test_missing_licences_are_said_as_such(fake: FakeMicrosoft, settings: Settings) -> None:
    fake.tenant.premium = False
    with pytest.raises(IntegrationError) as caught:
        run_action("microsoft.recent_sign_ins", {"user": USER}, settings)
    assert "no Entra ID P1 or P2 licence" in caught.value.message
    fake.tenant.rules.clear()  # nobody has a mailbox now
    with pytest.raises(IntegrationError) as caught:
        run_action("microsoft.list_inbox_rules", {"user": USER}, settings)
    assert "no Exchange Online mailbox" in caught.value.message
    assert "MailboxNotEnabledForRESTAPI" in caught.value.message


def _audience(token: str) -> str:
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["aud"])


def test_graph_defender_and_exchange_each_get_their_own_scope_and_token(
    fake: FakeMicrosoft, ca: LoopbackCA
) -> None:
    settings = settings_for(
        fake,
        ca,
        defender_url="https://api.securitycenter.microsoft.com",
        exchange_url="https://outlook.office365.com/",
    )
    microsoft = integration.settings_of(settings)
    assert scopes(microsoft) == {
        "graph": f"{fake.url}/.default",
        "defender": "https://api.securitycenter.microsoft.com/.default",
        "exchange": "https://outlook.office365.com/.default",
    }
    credentials = MicrosoftCredentials.from_secrets(
        settings, StaticSecrets({CLIENT_SECRET: "sandbox~microsoft~client~secret"})
    )
    tokens = {
        api: acquire_token(credentials, scope, "t") for api, scope in scopes(microsoft).items()
    }
    assert {api: _audience(token) for api, token in tokens.items()} == {
        "graph": fake.url,
        "defender": "https://api.securitycenter.microsoft.com",
        "exchange": "https://outlook.office365.com",
    }
    issued = fake.tokens_issued
    assert acquire_token(credentials, scopes(microsoft)["defender"], "t") == tokens["defender"]
    assert fake.tokens_issued == issued, "the second ask came from msal's cache"
    # Graph refuses a token meant for another API.
    refused = httpx.get(
        f"{fake.url}/v1.0/users/{USER}",
        headers={"Authorization": f"Bearer {tokens['defender']}"},
        verify=ssl.create_default_context(cafile=str(ca.ca_bundle)),
    )
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "InvalidAuthenticationToken"
