"""A fake Microsoft identity platform and Microsoft Graph v1.0, for the integration's tests
and the sandbox. Both hosts are one loopback server (https with the sandbox's CA, since
msal accepts only https authorities).

The identity platform, like ``login.microsoftonline.com``:

- ``GET /{tenant}/v2.0/.well-known/openid-configuration``: the OIDC discovery document msal
  reads first; an unknown tenant answers 400 ``invalid_tenant`` (AADSTS90002);
- ``POST /{tenant}/oauth2/v2.0/token``, ``grant_type=client_credentials``, a client secret
  or a certificate assertion (RS256, ``x5t`` the certificate's SHA-1 thumbprint): an
  access token (JWT-shaped; its ``roles`` are the app's consented application
  permissions, ``aud`` the scope's resource) with ``expires_in``. A wrong secret answers
  401 ``invalid_client`` AADSTS7000215, an unknown app 400 ``unauthorized_client``
  AADSTS700016, a bad assertion 401 AADSTS700027; bodies carry ``error_codes``,
  ``trace_id``, ``correlation_id`` and ``timestamp`` as the real ones do.

Graph (``/v1.0``), each call checking the token (401 ``InvalidAuthenticationToken``:
missing, unknown, expired, another audience) and the role it needs (403 with the body of
the service behind it: ``Authorization_RequestDenied`` for the directory, ``accessDenied``
for authentication methods, ``ErrorAccessDenied`` for the mailbox,
``Authentication_MSGraphPermissionMissing`` for sign-in logs):

- ``GET/PATCH /users/{id or UPN}`` (``accountEnabled``, ``passwordProfile``: 204; a user
  synchronised from on-premises refuses a password with 400 ``Request_BadRequest``, an app
  without the Entra role for it with 403: ``fake_entra.password_role_check``);
  unknown users 404 ``Request_ResourceNotFound``;
- ``POST /users/{id}/revokeSignInSessions``: 200 ``{"value": true}`` (as Graph does);
- ``GET /users/{id}/authentication/methods``, ``DELETE /users/{id}/authentication/
  {phoneMethods|emailMethods|microsoftAuthenticatorMethods|fido2Methods|softwareOathMethods|
  temporaryAccessPassMethods|windowsHelloForBusinessMethods}/{id}``: 204; the default
  method cannot go while other methods (the password aside) remain: 400;
- ``GET /auditLogs/signIns?$filter=userId eq '...' [and createdDateTime ge ...]``, ``$top``
  and ``@odata.nextLink`` paging; without Entra ID P1/P2 403
  ``Authentication_RequestFromNonPremiumTenantOrB2CTenant``;
- ``GET /oauth2PermissionGrants?$filter=principalId eq '...'``, ``DELETE
  /oauth2PermissionGrants/{id}``, ``GET /servicePrincipals/{id}``;
- ``GET /users/{id}/mailFolders`` (top-level folders), ``GET/DELETE
  /users/{id}/mailFolders/inbox/messageRules[/{id}]`` (404 ``ErrorItemNotFound`` once gone;
  a user without a mailbox 404 ``MailboxNotEnabledForRESTAPI``);
- ``POST /identityProtection/riskyUsers/confirmCompromised`` ``{"userIds": [...]}``: 204
  (without Entra ID P2, 403: the exact body is not verified);
- ``/roleManagement/directory/roleAssignments``: ``fake_entra``;
- ``POST /$batch``: at most 20 requests, each answered on its own, ``dependsOn`` giving 424
  when the dependency failed.

Exchange Online's admin API, ``POST /adminapi/beta/{tenant}/InvokeCommand`` (not a
documented API: the request and answer shapes are those peer tools rely on):
``Get-Mailbox`` and ``Set-Mailbox`` (forwarding) of ``Tenant.mailboxes``, and those of
``fake_exchange`` (hidden inbox rules, protocols, delegates); a cmdlet's error
is ``{"error": {"details": [{"message": "Ex...|Microsoft.Exchange...Exception|..."}]}}``;
an app without ``Exchange.ManageAsApp`` or an Exchange role 403.

Defender for Endpoint (``/api/machines``, ``/api/machineactions``, isolate and unisolate) and
Intune's managed devices (``/v1.0/deviceManagement/managedDevices``) are served by
``fake_devices``; ``throttle_defender(n, ...)`` throttles Defender.

Throttling: ``throttle(n, retry_after)`` answers the next n Graph requests 429 with
``Retry-After`` (omitted when None); ``throttle_batch_items(n, ...)`` does it to the next n
items inside batches, ``throttle_exchange(n, ...)`` to InvokeCommand. ``expire_tokens()``
makes every issued token expired.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import secrets
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tocsin.integrations.microsoft import fake_entra
from tocsin.integrations.microsoft.client import METHOD_KINDS
from tocsin.integrations.microsoft.fake_entra import (
    password_role_check,
    role_management,
    seeded_assignments,
)
from tocsin.integrations.microsoft.fake_exchange import CMDLETS, seeded_exchange
from tocsin.sandbox.fake_service import FakeService, ReceivedRequest, Reply

SANDBOX_TENANT_ID = "5f1c7a5e-7d2b-4f0e-9a11-0c0ffee00001"
SANDBOX_TENANT_DOMAIN = "broker-office.example"
SANDBOX_CLIENT_ID = "9d3e6c1a-2b4f-4e8a-8c7d-70c5170c5170"
SANDBOX_CLIENT_SECRET = "sandbox~microsoft~client~secret"
SANDBOX_USER = "alice@broker-office.example"

GRAPH_RESOURCE = "https://graph.microsoft.com"
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
EXCHANGE_RESOURCE = "https://outlook.office365.com"

PASSWORD_METHOD = "#microsoft.graph.passwordAuthenticationMethod"
_BATCH_LIMIT = 20


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
class _Token:
    client_id: str
    audience: str
    roles: frozenset[str]
    expires_at: float


@dataclass
class Tenant:
    """What the fake tenant holds; every list is of Graph's own JSON objects."""

    users: list[dict[str, Any]] = field(default_factory=list)
    methods: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Authentication methods by user id."""
    default_method: dict[str, str] = field(default_factory=dict)
    """The default sign-in method's id by user id."""
    rules: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Inbox rules by user id; a user absent here has no mailbox."""
    folders: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    grants: list[dict[str, Any]] = field(default_factory=list)
    service_principals: list[dict[str, Any]] = field(default_factory=list)
    sign_ins: list[dict[str, Any]] = field(default_factory=list)
    premium: bool = True
    """Entra ID P1 or P2: the sign-in logs API."""
    p2: bool = True
    """Entra ID P2: Identity Protection."""
    mailboxes: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Exchange Online's view of each user's mailbox (Get-Mailbox properties), by user id."""
    exchange: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The rest of Exchange's view, by user id (``fake_exchange``: protocols, delegates...)."""
    role_assignments: list[dict[str, Any]] = field(default_factory=list)
    """Directory role assignments (``fake_entra``), of users and of role-assignable groups."""
    role_eligibilities: list[dict[str, Any]] = field(default_factory=list)
    """PIM eligibility schedules (``fake_entra``)."""
    groups: list[dict[str, Any]] = field(default_factory=list)
    """Groups, each with its ``members`` (user ids) (``fake_entra``)."""
    machines: list[dict[str, Any]] = field(default_factory=list)
    """Defender for Endpoint's machines, and their machine actions (fake_devices)."""
    machine_actions: list[dict[str, Any]] = field(default_factory=list)
    managed_devices: list[dict[str, Any]] = field(default_factory=list)
    """Intune's managed devices, each with its ``deviceActionResults``."""


class GraphError(Exception):
    """Raised by a route: answer ``status`` with Graph's error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, code, message)
        self.status, self.code, self.message = status, code, message

    def reply(self) -> Reply:
        return Reply(self.status, graph_error_body(self.code, self.message))


def graph_error_body(code: str, message: str) -> dict[str, Any]:
    """Graph's error body, with its ``innerError`` (date, request ids)."""
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": str(uuid.uuid4()),
                "client-request-id": str(uuid.uuid4()),
            },
        }
    }


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


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class FakeMicrosoft(FakeService):
    """One tenant's identity platform and Graph; see the module docstring."""

    name = "fake Microsoft 365"

    def __init__(
        self,
        tenant: Tenant | None = None,
        *,
        tenant_id: str = SANDBOX_TENANT_ID,
        tenant_domain: str = SANDBOX_TENANT_DOMAIN,
        apps: Sequence[FakeApp] = (FakeApp(),),
        token_lifetime_seconds: int = 3599,
    ) -> None:
        super().__init__()
        self.tenant_id = tenant_id
        self.tenant_domain = tenant_domain
        self.apps = {app.client_id: app for app in apps}
        self.token_lifetime_seconds = token_lifetime_seconds
        self._seed = copy.deepcopy(tenant or Tenant())
        self._restore()

    def _restore(self) -> None:
        with self.lock:
            self.tenant = copy.deepcopy(self._seed)
            self._tokens: dict[str, _Token] = {}
            self.tokens_issued = 0
            self.revocations: list[str] = []
            """User ids whose sessions were revoked, once per call."""
            self.confirmed_compromised: list[str] = []
            self._throttle: list[tuple[int, str | None, str | None]] = []
            self._throttle_items: list[tuple[int, str | None, str | None]] = []
            self._throttle_exchange: list[tuple[int, str | None, str | None]] = []
            self._throttle_defender: list[tuple[int, str | None, str | None]] = []

    def reset(self) -> None:
        super().reset()
        self._restore()

    # -- misbehaviour ----------------------------------------------------------------------

    def throttle(self, count: int, retry_after: str | None = "1") -> None:
        """Answer the next ``count`` Graph requests 429 (``Retry-After`` omitted when None)."""
        with self.lock:
            self._throttle.append((count, retry_after, None))

    def throttle_exchange(self, count: int, retry_after: str | None = "1") -> None:
        """Answer the next ``count`` Exchange Online InvokeCommand requests 429."""
        with self.lock:
            self._throttle_exchange.append((count, retry_after, None))

    def throttle_defender(self, count: int, retry_after: str | None = "1") -> None:
        """Answer the next ``count`` Defender for Endpoint requests 429."""
        with self.lock:
            self._throttle_defender.append((count, retry_after, None))

    def throttle_batch_items(
        self, count: int, retry_after: str | None = "1", *, method: str | None = None
    ) -> None:
        """Answer the next ``count`` requests inside ``$batch`` requests (those of ``method``
        only, when given) 429."""
        with self.lock:
            self._throttle_items.append((count, retry_after, method))

    def expire_tokens(self) -> None:
        """Every token issued so far is now expired (Graph answers 401)."""
        with self.lock:
            for token in self._tokens.values():
                token.expires_at = 0.0

    # -- looking at the tenant -------------------------------------------------------------

    def user(self, key: str) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self._user(key))

    def methods_of(self, key: str) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self.tenant.methods.get(self._user(key)["id"], []))

    def rules_of(self, key: str) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self.tenant.rules.get(self._user(key)["id"], []))

    def grants_of(self, key: str) -> list[dict[str, Any]]:
        with self.lock:
            user_id = self._user(key)["id"]
            return [copy.deepcopy(g) for g in self.tenant.grants if g.get("principalId") == user_id]

    # -- serving ---------------------------------------------------------------------------

    def handle(self, request: ReceivedRequest) -> Reply:
        path = request.path
        if path.startswith("/v1.0/") or path == "/v1.0":
            return self._graph_request(request)
        if path.startswith("/api/"):
            from tocsin.integrations.microsoft.fake_devices import defender_request

            return defender_request(self, request)
        exchange = re.match(r"^/adminapi/beta/([^/]+)/InvokeCommand$", path)
        if exchange and request.method == "POST":
            return self._invoke_command(exchange.group(1), request)
        discovery = re.match(r"^/([^/]+)/v2\.0/\.well-known/openid-configuration$", path)
        if discovery and request.method == "GET":
            return self._discovery(discovery.group(1))
        token = re.match(r"^/([^/]+)/oauth2/v2\.0/token$", path)
        if token and request.method == "POST":
            return self._token(token.group(1), request)
        return Reply(404, {"error": "not_found", "error_description": f"no such endpoint {path}"})

    # -- the identity platform -------------------------------------------------------------

    def _known_tenant(self, tenant: str) -> bool:
        return tenant.lower() in (self.tenant_id, self.tenant_domain.lower())

    def _discovery(self, tenant: str) -> Reply:
        if not self._known_tenant(tenant):
            return _identity_error(
                400,
                "invalid_tenant",
                90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
                "and are signing into the correct cloud.",
            )
        base = f"{self.url}/{tenant}"
        return Reply(
            200,
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{self.url}/{self.tenant_id}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": f"{self.url}/{self.tenant_id}/v2.0",
                "request_uri_parameter_supported": False,
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "tenant_region_scope": "EU",
                "cloud_instance_name": "microsoftonline.com",
            },
        )

    def _token(self, tenant: str, request: ReceivedRequest) -> Reply:
        if not self._known_tenant(tenant):
            return _identity_error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
        form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8")).items()}
        if form.get("grant_type") != "client_credentials":
            return _identity_error(
                400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type."
            )
        client_id = form.get("client_id", "")
        app = self.apps.get(client_id)
        if app is None:
            return _identity_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{self.tenant_domain}'. This can happen if the application has not been "
                "installed by the administrator of the tenant.",
            )
        if "client_assertion" in form:
            refused = self._check_assertion(app, form["client_assertion"], request.path)
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
            "iss": f"https://sts.windows.net/{self.tenant_id}/",
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now) + self.token_lifetime_seconds,
            "appid": client_id,
            "app_displayname": app.display_name,
            "idtyp": "app",
            "roles": sorted(app.roles),
            "tid": self.tenant_id,
            "ver": "1.0",
        }
        header = {"typ": "JWT", "alg": "RS256", "kid": "fake-key"}
        token = ".".join(
            (
                _b64url(json.dumps(header).encode()),
                _b64url(json.dumps(claims).encode()),
                _b64url(secrets.token_bytes(32)),
            )
        )
        with self.lock:
            self._tokens[token] = _Token(
                client_id, resources[0], app.roles, now + self.token_lifetime_seconds
            )
            self.tokens_issued += 1
        return Reply(
            200,
            {
                "token_type": "Bearer",
                "expires_in": self.token_lifetime_seconds,
                "ext_expires_in": self.token_lifetime_seconds,
                "access_token": token,
            },
        )

    def _check_assertion(self, app: FakeApp, assertion: str, path: str) -> Reply | None:
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

    # -- Exchange Online's admin API ----------------------------------------------------------
    # The shapes peer tools rely on (CIPP, Microsoft Extractor Suite); the API is not documented.

    def _exchange_error(self, status: int, exception: str, message: str) -> Reply:
        detail = f"Ex6F9304|Microsoft.Exchange.{exception}|{message}"
        return Reply(
            status,
            {
                "error": {
                    "code": "InternalServerError" if status >= 500 else "BadRequest",
                    "message": "Error executing cmdlet",
                    "details": [{"code": "Context", "target": "", "message": detail}],
                    "innererror": {
                        "message": detail,
                        "type": "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
                        "internalException": {
                            "message": message,
                            "type": f"Microsoft.Exchange.{exception}",
                        },
                    },
                }
            },
        )

    def _invoke_command(self, tenant: str, request: ReceivedRequest) -> Reply:
        throttled = self._throttled(self._throttle_exchange)
        if throttled is not None:
            return throttled
        given = request.bearer_token()
        with self.lock:
            token = self._tokens.get(given or "")
        if token is None or token.expires_at <= time.time():
            return Reply(
                401,
                {
                    "error": {
                        "code": "InvalidToken",
                        "message": "The token is not valid or has expired.",
                    }
                },
                {"WWW-Authenticate": 'Bearer realm="outlook.office365.com"'},
            )
        app = self.apps.get(token.client_id)
        if token.audience not in (self.url, EXCHANGE_RESOURCE) or not self._known_tenant(tenant):
            return Reply(
                401,
                {
                    "error": {
                        "code": "InvalidToken",
                        "message": "The token's audience or tenant is not this one.",
                    }
                },
            )
        if "Exchange.ManageAsApp" not in token.roles or app is None or not app.exchange_role:
            return Reply(
                403,
                {
                    "error": {
                        "code": "Forbidden",
                        "message": "The application is not allowed to run this cmdlet: it has no Exchange.ManageAsApp permission or no Exchange role.",
                    }
                },
            )
        try:
            cmdlet_input = request.json()["CmdletInput"]
            cmdlet, parameters = (
                str(cmdlet_input["CmdletName"]),
                dict(cmdlet_input.get("Parameters") or {}),
            )
        except (ValueError, KeyError, TypeError):
            return Reply(
                400,
                {
                    "error": {
                        "code": "BadRequest",
                        "message": "The request body is not a CmdletInput.",
                    }
                },
            )
        with self.lock:
            if cmdlet == "Get-Mailbox":
                return self._get_mailbox(parameters)
            if cmdlet == "Set-Mailbox":
                return self._set_mailbox(parameters)
            if cmdlet in CMDLETS:
                return CMDLETS[cmdlet](self, parameters)
        return self._exchange_error(
            400,
            "Management.RestApiClient.RestClientException",
            f"The term '{cmdlet}' is not recognized as a name of a cmdlet.",
        )

    def _exchange_mailbox(self, identity: Any) -> tuple[dict[str, Any], dict[str, Any]] | Reply:
        for user in self.tenant.users:
            if str(identity).lower() in (user["id"], user["userPrincipalName"].lower()):
                mailbox = self.tenant.mailboxes.get(user["id"])
                if mailbox is not None:
                    return user, mailbox
        return self._exchange_error(
            404,
            "Configuration.Tasks.ManagementObjectNotFoundException",
            f"The operation couldn't be performed because object '{identity}' couldn't be found "
            "on 'AM0PR01A001DC01.EURPR01A001.prod.outlook.com'.",
        )

    def _get_mailbox(self, parameters: Mapping[str, Any]) -> Reply:
        found = self._exchange_mailbox(parameters.get("Identity"))
        if isinstance(found, Reply):
            return found
        user, mailbox = found
        return Reply(
            200,
            {
                "@odata.context": f"{self.url}/adminapi/beta/{self.tenant_id}/$metadata#Collection(Exchange.GenericHashTable)",
                "adminapi.warnings@odata.type": "#Collection(String)",
                "@adminapi.warnings": [],
                "value": [
                    {
                        "Identity": user["displayName"],
                        "Name": user["displayName"],
                        "DisplayName": user["displayName"],
                        "UserPrincipalName": user["userPrincipalName"],
                        "PrimarySmtpAddress": user["mail"],
                        "ExternalDirectoryObjectId": user["id"],
                        "RecipientTypeDetails": "UserMailbox",
                        **copy.deepcopy(mailbox),
                    }
                ],
            },
        )

    _SETTABLE = ("ForwardingSmtpAddress", "ForwardingAddress", "DeliverToMailboxAndForward")

    def _set_mailbox(self, parameters: Mapping[str, Any]) -> Reply:
        found = self._exchange_mailbox(parameters.get("Identity"))
        if isinstance(found, Reply):
            return found
        _, mailbox = found
        unknown = [name for name in parameters if name not in ("Identity", *self._SETTABLE)]
        if unknown:
            return self._exchange_error(
                400,
                "Management.RestApiClient.RestClientException",
                f"A parameter cannot be found that matches parameter name '{unknown[0]}'.",
            )
        before = {name: mailbox.get(name) for name in self._SETTABLE}
        for name in self._SETTABLE:
            if name in parameters:
                value = parameters[name]
                if name == "ForwardingSmtpAddress" and value:
                    value = f"smtp:{str(value).removeprefix('smtp:')}"
                mailbox[name] = value
        warnings = (
            [
                f"The command completed successfully but no settings of '{parameters['Identity']}' have been modified."
            ]
            if before == {name: mailbox.get(name) for name in self._SETTABLE}
            else []
        )
        return Reply(200, {"@adminapi.warnings": warnings, "value": []})

    # -- Graph: the token and the throttle --------------------------------------------------

    def _caller(self, request: ReceivedRequest) -> _Token:
        given = request.bearer_token()
        if not given:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
        with self.lock:
            token = self._tokens.get(given)
        if token is None:
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "IDX14100: JWT is not well formed, there are no dots (.).",
            )
        if token.expires_at <= time.time():
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
            )
        if token.audience not in (self.url, GRAPH_RESOURCE):
            raise GraphError(401, "InvalidAuthenticationToken", "Invalid audience.")
        return token

    def _throttled(
        self, queue: list[tuple[int, str | None, str | None]], method: str = ""
    ) -> Reply | None:
        with self.lock:
            if not queue or queue[0][2] not in (None, method):
                return None
            count, retry_after, only = queue[0]
            if count <= 1:
                queue.pop(0)
            else:
                queue[0] = (count - 1, retry_after, only)
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return Reply(
            429,
            graph_error_body(
                "TooManyRequests",
                "Too many requests. Please retry after the time in the Retry-After header.",
            ),
            headers,
        )

    def _graph_request(self, request: ReceivedRequest) -> Reply:
        throttled = self._throttled(self._throttle)
        if throttled is not None:
            return throttled
        try:
            caller = self._caller(request)
            path = request.path[len("/v1.0") :]
            query = {k: v[0] for k, v in request.query.items()}
            body = request.json() if request.body else None
            if (request.method, path) == ("POST", "/$batch"):
                return self._batch(caller, body)
            return self._route(caller, request.method, path, query, body)
        except GraphError as error:
            return error.reply()
        except ValueError:
            return GraphError(400, "BadRequest", "Unable to read JSON request payload.").reply()

    def _batch(self, caller: _Token, body: Any) -> Reply:
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            raise GraphError(400, "BadRequest", "Invalid batch payload format.")
        if len(requests) > _BATCH_LIMIT:
            raise GraphError(
                400, "BadRequest", f"Invalid batch payload: more than {_BATCH_LIMIT} requests."
            )
        ids = [str(item.get("id")) for item in requests if isinstance(item, dict)]
        if len(set(ids)) != len(ids) or len(ids) != len(requests):
            raise GraphError(400, "BadRequest", "Batch request ids must be unique.")
        statuses: dict[str, int] = {}
        responses = []
        for item in requests:
            item_id = str(item["id"])
            depends = [str(d) for d in item.get("dependsOn") or []]
            if any(not 200 <= statuses.get(d, 424) < 300 for d in depends):
                reply = GraphError(424, "FailedDependency", "The dependent request failed.").reply()
            else:
                method = str(item.get("method", "GET")).upper()
                reply = self._throttled(self._throttle_items, method) or self._batch_item(
                    caller, item
                )
            statuses[item_id] = reply.status
            entry: dict[str, Any] = {
                "id": item_id,
                "status": reply.status,
                "headers": {"Content-Type": "application/json", **dict(reply.headers)}
                if reply.body is not None
                else dict(reply.headers),
            }
            if reply.body is not None:
                entry["body"] = reply.body
            responses.append(entry)
        return Reply(200, {"responses": responses})

    def _batch_item(self, caller: _Token, item: Mapping[str, Any]) -> Reply:
        url = str(item.get("url", ""))
        if url.startswith(("http://", "https://")):
            return GraphError(400, "BadRequest", "Batch request urls must be relative.").reply()
        split = urlsplit(url if url.startswith("/") else "/" + url)
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        try:
            return self._route(
                caller, str(item.get("method", "GET")).upper(), split.path, query, item.get("body")
            )
        except GraphError as error:
            return error.reply()

    # -- Graph: the routes -----------------------------------------------------------------

    def _route(
        self, caller: _Token, method: str, path: str, query: Mapping[str, str], body: Any
    ) -> Reply:
        parts = [unquote(part) for part in path.strip("/").split("/")]
        from tocsin.integrations.microsoft import fake_devices

        with self.lock:
            if fake_devices.is_intune_path(parts):
                return fake_devices.intune_route(self, caller, method, parts, query, body)
            if parts[0] == "users" and len(parts) >= 2:
                return self._user_route(caller, method, parts[1], parts[2:], query, body)
            if parts == ["auditLogs", "signIns"] and method == "GET":
                return self._sign_ins(caller, query)
            if parts[0] == "roleManagement":
                return role_management(self, caller, method, parts, query, body)
            if parts[0] == "groups" and len(parts) >= 2:
                return fake_entra.groups_route(self, caller, method, parts)
            if parts[0] == "oauth2PermissionGrants":
                return self._grants(caller, method, parts[1:], query)
            if parts[0] == "servicePrincipals" and len(parts) == 2 and method == "GET":
                self._need(caller, "directory", {"Application.Read.All", "Directory.Read.All"})
                found = [sp for sp in self.tenant.service_principals if sp["id"] == parts[1]]
                if not found:
                    raise self._not_found(parts[1])
                return Reply(200, copy.deepcopy(found[0]))
            if (
                parts == ["identityProtection", "riskyUsers", "confirmCompromised"]
                and method == "POST"
            ):
                return self._confirm_compromised(caller, body)
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{parts[0]}'.")

    _DENIED = {
        "directory": (
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        ),
        "methods": ("accessDenied", "Request Authorization failed"),
        "mailbox": ("ErrorAccessDenied", "Access is denied. Check credentials and try again."),
    }

    def _need(self, caller: _Token, area: str, any_of: Iterable[str]) -> None:
        if caller.roles & set(any_of):
            return
        code, message = self._DENIED[area]
        raise GraphError(403, code, message)

    def _not_found(self, key: str) -> GraphError:
        return GraphError(
            404,
            "Request_ResourceNotFound",
            f"Resource '{key}' does not exist or one of its queried reference-property objects "
            "are not present.",
        )

    def _user(self, key: str) -> dict[str, Any]:
        for user in self.tenant.users:
            if key.lower() in (user["id"], user["userPrincipalName"].lower()):
                return user
        raise self._not_found(key)

    def _user_route(
        self,
        caller: _Token,
        method: str,
        key: str,
        rest: list[str],
        query: Mapping[str, str],
        body: Any,
    ) -> Reply:
        if not rest:
            if method == "GET":
                self._need(
                    caller,
                    "directory",
                    {"User.Read.All", "User.ReadWrite.All", "Directory.Read.All"},
                )
                user = self._user(key)
                return Reply(200, _selected(user, query.get("$select")))
            if method == "PATCH":
                return self._update_user(caller, key, body)
        if rest == ["revokeSignInSessions"] and method == "POST":
            self._need(
                caller,
                "directory",
                {"User.RevokeSessions.All", "User.ReadWrite.All", "Directory.ReadWrite.All"},
            )
            user = self._user(key)
            self.revocations.append(user["id"])
            return Reply(
                200,
                {"@odata.context": f"{self.url}/v1.0/$metadata#Edm.Boolean", "value": True},
            )
        if rest == ["memberOf", "microsoft.graph.group"] and method == "GET":
            return fake_entra.member_of(self, caller, self._user(key), query)
        if rest[:1] == ["authentication"]:
            return self._methods(caller, method, key, rest[1:])
        if rest[:1] == ["mailFolders"]:
            return self._mailbox(caller, method, key, rest[1:])
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{rest[0]}'.")

    def _update_user(self, caller: _Token, key: str, body: Any) -> Reply:
        if not isinstance(body, dict) or not body:
            raise GraphError(400, "Request_BadRequest", "Invalid request body.")
        for name in body:
            if name == "accountEnabled":
                self._need(
                    caller,
                    "directory",
                    {
                        "User.EnableDisableAccount.All",
                        "User.ReadWrite.All",
                        "Directory.ReadWrite.All",
                    },
                )
            elif name == "passwordProfile":
                self._need(
                    caller,
                    "directory",
                    {
                        "User-PasswordProfile.ReadWrite.All",
                        "User.ReadWrite.All",
                        "Directory.ReadWrite.All",
                    },
                )
            else:
                raise GraphError(
                    400, "Request_BadRequest", f"Property '{name}' is not writable here."
                )
        user = self._user(key)
        if "passwordProfile" in body:
            password_role_check(self, caller, user)
        if "passwordProfile" in body and user.get("onPremisesSyncEnabled"):
            raise GraphError(
                400,
                "Request_BadRequest",
                "Unable to update the specified properties for on-premises mastered Directory "
                "Sync objects or objects currently undergoing migration.",
            )
        if "accountEnabled" in body:
            if not isinstance(body["accountEnabled"], bool):
                raise GraphError(400, "Request_BadRequest", "Invalid value for accountEnabled.")
            user["accountEnabled"] = body["accountEnabled"]
        if "passwordProfile" in body:
            user["lastPasswordChangeDateTime"] = _iso(datetime.now(UTC))
        return Reply(204)

    def _methods(self, caller: _Token, method: str, key: str, rest: list[str]) -> Reply:
        if rest == ["methods"] and method == "GET":
            self._need(
                caller,
                "methods",
                {"UserAuthenticationMethod.Read.All", "UserAuthenticationMethod.ReadWrite.All"},
            )
            user = self._user(key)
            return Reply(
                200,
                {
                    "@odata.context": f"{self.url}/v1.0/$metadata#users('{user['id']}')/authentication/methods",
                    "value": copy.deepcopy(self.tenant.methods.get(user["id"], [])),
                },
            )
        if len(rest) == 2 and rest[0] in METHOD_KINDS and method == "DELETE":
            self._need(caller, "methods", {"UserAuthenticationMethod.ReadWrite.All"})
            user = self._user(key)
            methods = self.tenant.methods.get(user["id"], [])
            found = [
                m
                for m in methods
                if m["id"] == rest[1] and m["@odata.type"] == METHOD_KINDS[rest[0]]
            ]
            if not found:
                raise GraphError(
                    404,
                    "itemNotFound",
                    f"The requested authentication method '{rest[1]}' was not found.",
                )
            others = [
                m for m in methods if m is not found[0] and m["@odata.type"] != PASSWORD_METHOD
            ]
            if self.tenant.default_method.get(user["id"]) == rest[1] and others:
                raise GraphError(
                    400,
                    "badRequest",
                    "Cannot delete default method. Please change the user's default sign-in "
                    "method, or delete their other methods first.",
                )
            methods.remove(found[0])
            return Reply(204)
        raise GraphError(400, "BadRequest", "Resource not found for the segment 'authentication'.")

    def _mailbox(self, caller: _Token, method: str, key: str, rest: list[str]) -> Reply:
        user = self._user(key)
        if rest[:2] == ["inbox", "messageRules"]:
            self._need(
                caller,
                "mailbox",
                {"MailboxSettings.ReadWrite"}
                if method == "DELETE"
                else {"MailboxSettings.Read", "MailboxSettings.ReadWrite"},
            )
        else:
            self._need(caller, "mailbox", {"Mail.ReadBasic.All", "Mail.Read", "Mail.ReadWrite"})
        if user["id"] not in self.tenant.rules:
            raise GraphError(
                404,
                "MailboxNotEnabledForRESTAPI",
                "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
            )
        if not rest and method == "GET":
            return Reply(200, {"value": copy.deepcopy(self.tenant.folders.get(user["id"], []))})
        rules = self.tenant.rules[user["id"]]
        if rest == ["inbox", "messageRules"] and method == "GET":
            return Reply(200, {"value": copy.deepcopy(rules)})
        if len(rest) == 3 and rest[:2] == ["inbox", "messageRules"] and method == "DELETE":
            found = [rule for rule in rules if rule["id"] == rest[2]]
            if not found:
                raise GraphError(
                    404, "ErrorItemNotFound", "The specified object was not found in the store."
                )
            rules.remove(found[0])
            return Reply(204)
        raise GraphError(400, "BadRequest", "Resource not found for the segment 'mailFolders'.")

    def _sign_ins(self, caller: _Token, query: Mapping[str, str]) -> Reply:
        if not caller.roles >= {"AuditLog.Read.All", "Directory.Read.All"}:
            missing = (
                "AuditLog.Read.All"
                if "AuditLog.Read.All" not in caller.roles
                else "Directory.Read.All"
            )
            raise GraphError(
                403,
                "Authentication_MSGraphPermissionMissing",
                f"Calling principal does not have required MSGraph permissions {missing}",
            )
        if not self.tenant.premium:
            raise GraphError(
                403,
                "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
                "Neither tenant is B2C or tenant doesn't have premium license",
            )
        wanted = query.get("$filter", "")
        user = re.search(r"userId eq '([^']+)'", wanted)
        since = re.search(r"createdDateTime ge (\S+)", wanted)
        found = [
            s
            for s in self.tenant.sign_ins
            if (user is None or s["userId"] == user.group(1))
            and (since is None or s["createdDateTime"] >= since.group(1))
        ]
        found.sort(key=lambda s: s["createdDateTime"], reverse=True)
        top = int(query.get("$top", "1000"))
        skip = int(query.get("$skiptoken", "0"))
        page = found[skip : skip + top]
        answer: dict[str, Any] = {
            "@odata.context": f"{self.url}/v1.0/$metadata#auditLogs/signIns",
            "value": copy.deepcopy(page),
        }
        if skip + top < len(found):
            answer["@odata.nextLink"] = (
                f"{self.url}/v1.0/auditLogs/signIns?$filter={quote(wanted)}&$top={top}"
                f"&$skiptoken={skip + top}"
            )
        return Reply(200, answer)

    def _grants(
        self, caller: _Token, method: str, rest: list[str], query: Mapping[str, str]
    ) -> Reply:
        if not rest and method == "GET":
            self._need(
                caller,
                "directory",
                {
                    "DelegatedPermissionGrant.Read.All",
                    "DelegatedPermissionGrant.ReadWrite.All",
                    "Directory.Read.All",
                },
            )
            principal = re.search(r"principalId eq '([^']+)'", query.get("$filter", ""))
            found = [
                g
                for g in self.tenant.grants
                if principal is None or g.get("principalId") == principal.group(1)
            ]
            return Reply(200, {"value": copy.deepcopy(found)})
        if len(rest) == 1 and method == "DELETE":
            self._need(
                caller,
                "directory",
                {"DelegatedPermissionGrant.ReadWrite.All", "Directory.ReadWrite.All"},
            )
            found = [g for g in self.tenant.grants if g["id"] == rest[0]]
            if not found:
                raise self._not_found(rest[0])
            self.tenant.grants.remove(found[0])
            return Reply(204)
        raise GraphError(
            400, "BadRequest", "Resource not found for the segment 'oauth2PermissionGrants'."
        )

    def _confirm_compromised(self, caller: _Token, body: Any) -> Reply:
        self._need(caller, "directory", {"IdentityRiskyUser.ReadWrite.All"})
        if not self.tenant.p2:
            raise GraphError(403, "Forbidden", "The tenant needs an AAD Premium 2 license.")
        ids = body.get("userIds") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids:
            raise GraphError(400, "BadRequest", "userIds is required.")
        for user_id in ids:
            if not any(u["id"] == user_id for u in self.tenant.users):
                raise GraphError(400, "BadRequest", f"Invalid user id '{user_id}'.")
            self.confirmed_compromised.append(str(user_id))
        return Reply(204)


def _selected(item: Mapping[str, Any], select: str | None) -> dict[str, Any]:
    if not select:
        return copy.deepcopy(dict(item))
    names = {name.strip() for name in select.split(",")} | {"id"}
    return {k: copy.deepcopy(v) for k, v in item.items() if k in names}


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _id(seed: str) -> str:
    return str(uuid.UUID(hashlib.sha256(seed.encode()).hexdigest()[:32]))


# -- the seed: a phished mailbox ---------------------------------------------------------------

ATTACKER_FORWARD = "invoices@broker-payments.example.net"
KNOWN_GOOD_AUTHENTICATOR = "Alice's iPhone 13"
ATTACKER_PHONE = "+234 8031234567"


def compromised_tenant(upn: str = SANDBOX_USER, *, now: datetime | None = None) -> Tenant:
    """A tenant whose user ``upn`` was phished two days ago.

    The attacker set the mailbox to forward every message outside (Exchange's
    ForwardingSmtpAddress, which Graph does not show), added inbox rules (forward to an
    outside address, delete payment mail, move security alerts to RSS Feeds), registered their own phone beside the user's
    Authenticator, consented a mail-reading app, and signed in from abroad. Their laptop is
    onboarded in Defender for Endpoint and enrolled in Intune (fake_devices). The user's own
    rule, their Authenticator (the default method) and their Zoom consent are genuine.
    """
    from tocsin.integrations.microsoft.fake_devices import phished_devices

    now = now or datetime.now(UTC)
    user_id = _id(f"user:{upn}")
    devices = phished_devices(upn, user_id, now)
    local = upn.split("@")[0]
    colleague = f"bob@{upn.split('@')[-1]}"
    folders = {
        name: _b64url(hashlib.sha256(f"{upn}:{name}".encode()).digest()[:24]) + "AAA="
        for name in (
            "Inbox",
            "Drafts",
            "Sent Items",
            "Deleted Items",
            "Junk Email",
            "Archive",
            "RSS Feeds",
            "Conversation History",
            "Clients",
        )
    }
    graph_sp, attacker_sp, zoom_sp = _id("sp:graph"), _id("sp:attacker"), _id("sp:zoom")

    def rule(
        number: int, name: str, conditions: dict[str, Any], actions: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "id": f"AQAAAJ{number:04d}{local[:4]}=",
            "displayName": name,
            "sequence": number,
            "isEnabled": True,
            "hasError": False,
            "isReadOnly": False,
            "conditions": conditions,
            "actions": {"stopProcessingRules": True, **actions},
            "exceptions": {},
        }

    def sign_in(
        hours_ago: float, ip: str, city: str, country: str, app: str, error: int = 0
    ) -> dict[str, Any]:
        moment = now - timedelta(hours=hours_ago)
        return {
            "id": _id(f"signin:{upn}:{hours_ago}:{ip}"),
            "createdDateTime": _iso(moment),
            "userDisplayName": local.title(),
            "userPrincipalName": upn,
            "userId": user_id,
            "appId": _id(f"app:{app}"),
            "appDisplayName": app,
            "ipAddress": ip,
            "clientAppUsed": "Browser",
            "isInteractive": True,
            "conditionalAccessStatus": "notApplied",
            "status": {
                "errorCode": error,
                "failureReason": "Invalid username or password or Invalid on-premise username or password."
                if error
                else "Other.",
            },
            "location": {"city": city, "state": city, "countryOrRegion": country},
            "deviceDetail": {
                "operatingSystem": "Windows10" if country == "BE" else "Linux",
                "browser": "Chrome",
            },
        }

    return Tenant(
        users=[
            {
                "id": user_id,
                "displayName": local.title(),
                "userPrincipalName": upn,
                "mail": upn,
                "accountEnabled": True,
                "onPremisesSyncEnabled": None,
                "assignedLicenses": [
                    {"skuId": "f245ecc8-75af-4f8e-b61f-27d8114de5f3", "disabledPlans": []}
                ],
            }
        ],
        methods={
            user_id: [
                {
                    "@odata.type": PASSWORD_METHOD,
                    "id": "28c10230-6103-485e-b985-444c60001490",
                    "password": None,
                    "createdDateTime": _iso(now - timedelta(days=400)),
                },
                {
                    "@odata.type": METHOD_KINDS["microsoftAuthenticatorMethods"],
                    "id": _id(f"authenticator:{upn}"),
                    "displayName": KNOWN_GOOD_AUTHENTICATOR,
                    "deviceTag": "SoftwareTokenActivated",
                    "phoneAppVersion": "6.2401.0119",
                    "createdDateTime": _iso(now - timedelta(days=300)),
                },
                {
                    "@odata.type": METHOD_KINDS["phoneMethods"],
                    "id": "3179e48a-750b-4051-897c-87b9720928f7",
                    "phoneNumber": ATTACKER_PHONE,
                    "phoneType": "mobile",
                    "smsSignInState": "notAllowedByPolicy",
                },
                {
                    "@odata.type": METHOD_KINDS["emailMethods"],
                    "id": "3ddfcfc8-9383-446f-83cc-3ab9be4be18f",
                    "emailAddress": "alice.recovery@mailbox.example.org",
                },
            ]
        },
        default_method={user_id: _id(f"authenticator:{upn}")},
        rules={
            user_id: [
                rule(
                    1,
                    "Clients",
                    {
                        "fromAddresses": [
                            {"emailAddress": {"address": f"clients@{upn.split('@')[-1]}"}}
                        ]
                    },
                    {"moveToFolder": folders["Clients"]},
                ),
                rule(
                    2,
                    ".",
                    {},
                    {
                        "forwardTo": [
                            {"emailAddress": {"name": "Invoices", "address": ATTACKER_FORWARD}}
                        ]
                    },
                ),
                rule(
                    3,
                    "..",
                    {"bodyOrSubjectContains": ["invoice", "payment", "bank details", "IBAN"]},
                    {"delete": True},
                ),
                rule(
                    4,
                    "...",
                    {
                        "subjectContains": ["security", "suspicious", "password"],
                        "fromAddresses": [{"emailAddress": {"address": colleague}}],
                    },
                    {"moveToFolder": folders["RSS Feeds"], "markAsRead": True},
                ),
            ]
        },
        folders={
            user_id: [
                {
                    "id": folder_id,
                    "displayName": name,
                    "parentFolderId": "AAMkAGRoot=",
                    "totalItemCount": 0,
                }
                for name, folder_id in folders.items()
            ]
        },
        grants=[
            {
                "id": "attacker-grant-" + user_id[:8],
                "clientId": attacker_sp,
                "consentType": "Principal",
                "principalId": user_id,
                "resourceId": graph_sp,
                "scope": "Mail.ReadWrite Mail.Send MailboxSettings.ReadWrite offline_access User.Read",
            },
            {
                "id": "zoom-grant-" + user_id[:8],
                "clientId": zoom_sp,
                "consentType": "Principal",
                "principalId": user_id,
                "resourceId": graph_sp,
                "scope": "openid profile email offline_access User.Read",
            },
            {
                "id": "tenant-wide-grant",
                "clientId": zoom_sp,
                "consentType": "AllPrincipals",
                "principalId": None,
                "resourceId": graph_sp,
                "scope": "User.Read",
            },
        ],
        service_principals=[
            {
                "id": graph_sp,
                "appId": "00000003-0000-0000-c000-000000000000",
                "displayName": "Microsoft Graph",
                "accountEnabled": True,
            },
            {
                "id": attacker_sp,
                "appId": _id("app:mailbackup"),
                "displayName": "Mail Backup Pro",
                "accountEnabled": True,
                "publisherName": "mailbackup-pro",
            },
            {
                "id": zoom_sp,
                "appId": _id("app:zoom"),
                "displayName": "Zoom",
                "accountEnabled": True,
                "publisherName": "Zoom Video Communications",
            },
        ],
        exchange={user_id: seeded_exchange(upn, ATTACKER_FORWARD)},
        role_assignments=seeded_assignments(user_id)
        + fake_entra.seeded_group_assignments(fake_entra.seeded_groups(user_id)),
        role_eligibilities=fake_entra.seeded_eligibilities(user_id),
        groups=fake_entra.seeded_groups(user_id),
        mailboxes={
            user_id: {
                "ForwardingSmtpAddress": f"smtp:{ATTACKER_FORWARD}",
                "ForwardingAddress": None,
                "DeliverToMailboxAndForward": True,
            }
        },
        machines=devices["machines"],
        managed_devices=devices["managed_devices"],
        sign_ins=[
            sign_in(70, "81.246.12.7", "Brussels", "BE", "Office 365 Exchange Online"),
            sign_in(50, "102.89.34.11", "Lagos", "NG", "OfficeHome", error=50126),
            sign_in(49.5, "102.89.34.11", "Lagos", "NG", "OfficeHome"),
            sign_in(49, "102.89.34.11", "Lagos", "NG", "Office 365 Exchange Online"),
            sign_in(30, "81.246.12.7", "Brussels", "BE", "Office 365 Exchange Online"),
            sign_in(6, "185.220.101.4", "Frankfurt am Main", "DE", "Office 365 Exchange Online"),
            sign_in(2, "81.246.12.7", "Brussels", "BE", "Microsoft Teams"),
        ],
    )
