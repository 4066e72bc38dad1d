"""The fake identity platform, like ``login.microsoftonline.com``: the app registrations
(``FakeApp``), the OIDC discovery document msal reads first, and the token endpoint's
client-credentials grant (a client secret or a certificate assertion), each refusal with
the AADSTS code, ``error_codes``, ``trace_id``, ``correlation_id`` and ``timestamp`` the
real ones carry. ``FakeMicrosoft`` (fake.py) serves these routes and holds the tokens.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tocsin.sandbox.fake_service import ReceivedRequest, Reply

if TYPE_CHECKING:
    from tocsin.integrations.microsoft.fake import FakeMicrosoft

SANDBOX_CLIENT_ID = "9d3e6c1a-2b4f-4e8a-8c7d-70c5170c5170"
SANDBOX_CLIENT_SECRET = "sandbox~microsoft~client~secret"

ALL_ROLES = frozenset(
    {
        "User.Read.All",
        "User.EnableDisableAccount.All",
        "User.RevokeSessions.All",
        "User-PasswordProfile.ReadWrite.All",
        "UserAuthenticationMethod.ReadWrite.All",
        "AuditLog.Read.All",
        "Directory.Read.All",
        "DelegatedPermissionGrant.ReadWrite.All",
        "Application.Read.All",
        "MailboxSettings.ReadWrite",
        "Mail.ReadBasic.All",
        "Mail.Send",  # notify.transport = graph (fake_mail)
        "IdentityRiskyUser.ReadWrite.All",
        "Exchange.ManageAsApp",
        "RoleManagement.ReadWrite.Directory",
        "GroupMember.ReadWrite.All",
        # the device actions (fake_devices)
        "Machine.Read.All",
        "Machine.Isolate",
        "DeviceManagementManagedDevices.Read.All",
        "DeviceManagementManagedDevices.PrivilegedOperations.All",
    }
)
"""Every application permission the integration's actions use (docs/microsoft.md); the
fake puts them in every token, whatever the API (Exchange.ManageAsApp is Exchange Online's)."""


@dataclass
class FakeApp:
    """An app registration: its client id, its credentials, its consented application roles."""

    client_id: str = SANDBOX_CLIENT_ID
    secret: str | None = SANDBOX_CLIENT_SECRET
    certificate_pem: bytes | None = None
    """A certificate uploaded to the app (PEM); assertions signed by its key are accepted."""
    roles: frozenset[str] = ALL_ROLES
    display_name: str = "Tocsin incident response"
    exchange_role: bool = True
    """Whether an Exchange role (Exchange Administrator) is assigned to the app."""
    entra_roles: frozenset[str] = frozenset({"Privileged Authentication Administrator"})
    """The Entra roles of the app's service principal (a password reset needs one)."""


@dataclass
class IssuedToken:
    """A token the fake issued: whose, for which resource, with which roles, until when."""

    client_id: str
    audience: str
    roles: frozenset[str]
    expires_at: float


def _identity_error(status: int, error: str, code: int, text: str) -> Reply:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    return Reply(
        status,
        {
            "error": error,
            "error_description": f"AADSTS{code}: {text}\r\nTrace ID: {trace}\r\n"
            f"Correlation ID: {correlation}\r\nTimestamp: {now}",
            "error_codes": [code],
            "timestamp": now,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": f"https://login.microsoftonline.com/error?code={code}",
        },
    )


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def known_tenant(fake: FakeMicrosoft, tenant: str) -> bool:
    """Whether ``tenant`` (id or domain) is the fake's."""
    return tenant.lower() in (fake.tenant_id, fake.tenant_domain.lower())


def discovery(fake: FakeMicrosoft, tenant: str) -> Reply:
    """The OIDC discovery document msal reads first; an unknown tenant AADSTS90002."""
    if not known_tenant(fake, tenant):
        return _identity_error(
            400,
            "invalid_tenant",
            90002,
            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
            "and are signing into the correct cloud.",
        )
    base = f"{fake.url}/{tenant}"
    return Reply(
        200,
        {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{fake.url}/{fake.tenant_id}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{fake.url}/{fake.tenant_id}/v2.0",
            "request_uri_parameter_supported": False,
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
        },
    )


def issue_token(fake: FakeMicrosoft, tenant: str, request: ReceivedRequest) -> Reply:
    """The client-credentials grant: a secret or a certificate assertion, one scope."""
    if not known_tenant(fake, tenant):
        return _identity_error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
    form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8")).items()}
    if form.get("grant_type") != "client_credentials":
        return _identity_error(
            400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type."
        )
    client_id = form.get("client_id", "")
    app = fake.apps.get(client_id)
    if app is None:
        return _identity_error(
            400,
            "unauthorized_client",
            700016,
            f"Application with identifier '{client_id}' was not found in the directory "
            f"'{fake.tenant_domain}'. This can happen if the application has not been "
            "installed by the administrator of the tenant.",
        )
    if "client_assertion" in form:
        refused = _check_assertion(app, form["client_assertion"], request.path)
        if refused is not None:
            return refused
    elif app.secret is None or not secrets.compare_digest(
        form.get("client_secret", "").encode(), app.secret.encode()
    ):
        return _identity_error(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is "
            f"the client secret value, not the client secret ID, for a secret added to app "
            f"'{client_id}'.",
        )
    scope = form.get("scope", "")
    resources = [s[: -len("/.default")] for s in scope.split() if s.endswith("/.default")]
    if len(resources) != 1:
        return _identity_error(
            400,
            "invalid_scope",
            1002012,
            f"The provided value for scope {scope} is not valid. Client credential flows "
            "must have a scope value with /.default suffixed to the resource identifier "
            "(application ID URI).",
        )
    now = time.time()
    claims = {
        "aud": resources[0],
        "iss": f"https://sts.windows.net/{fake.tenant_id}/",
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now) + fake.token_lifetime_seconds,
        "appid": client_id,
        "app_displayname": app.display_name,
        "idtyp": "app",
        "roles": sorted(app.roles),
        "tid": fake.tenant_id,
        "ver": "1.0",
    }
    header = {"typ": "JWT", "alg": "RS256", "kid": "fake-key"}
    token = ".".join(
        (
            b64url(json.dumps(header).encode()),
            b64url(json.dumps(claims).encode()),
            b64url(secrets.token_bytes(32)),
        )
    )
    with fake.lock:
        fake._tokens[token] = IssuedToken(
            client_id, resources[0], app.roles, now + fake.token_lifetime_seconds
        )
        fake.tokens_issued += 1
    return Reply(
        200,
        {
            "token_type": "Bearer",
            "expires_in": fake.token_lifetime_seconds,
            "ext_expires_in": fake.token_lifetime_seconds,
            "access_token": token,
        },
    )


def _check_assertion(app: FakeApp, assertion: str, path: str) -> Reply | None:
    def refused(text: str) -> Reply:
        return _identity_error(401, "invalid_client", 700027, text)

    if app.certificate_pem is None:
        return refused(
            "Client assertion contains an invalid signature: no certificate is "
            f"registered for application '{app.client_id}'."
        )
    certificate = x509.load_pem_x509_certificate(app.certificate_pem)
    try:
        head, body, signature = assertion.split(".")
        header = json.loads(_unb64url(head))
        claims = json.loads(_unb64url(body))
    except ValueError:
        return refused("Client assertion is not a well-formed JWT.")
    thumbprint = certificate.fingerprint(hashes.SHA1())  # noqa: S324 - Entra's x5t is SHA-1
    if _unb64url(str(header.get("x5t", ""))) != thumbprint:
        return refused(
            "Client assertion failed signature validation: the key identified by x5t "
            f"was not found for application '{app.client_id}'."
        )
    public_key = certificate.public_key()
    if header.get("alg") != "RS256" or not isinstance(public_key, rsa.RSAPublicKey):
        return refused("Client assertion must be signed with RS256.")
    try:
        public_key.verify(
            _unb64url(signature),
            f"{head}.{body}".encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except InvalidSignature:
        return refused("Client assertion failed signature validation.")
    if claims.get("iss") != app.client_id or claims.get("sub") != app.client_id:
        return refused("Client assertion's iss and sub must be the client id.")
    if not str(claims.get("aud", "")).endswith(path):
        return refused("Client assertion's audience is not this token endpoint.")
    if float(claims.get("exp", 0)) < time.time():
        return _identity_error(
            401,
            "invalid_client",
            700024,
            "Client assertion is not within its valid time range.",
        )
    return None
