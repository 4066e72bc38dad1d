"""A fake Microsoft identity platform and Microsoft Graph v1.0, for the integration's tests
and the sandbox. Both hosts are one loopback server (https with the sandbox's CA, since
msal accepts only https authorities). ``FakeMicrosoft`` holds the state and composes the
parts: ``fake_identity`` (discovery, tokens, assertions), ``fake_graph`` (Graph's router and
``$batch``), ``fake_tenant`` (the seeded tenant), ``fake_entra``, ``fake_exchange`` and
``fake_devices``; Exchange Online's ``InvokeCommand`` is dispatched here, by cmdlet name.

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
  (without Entra ID P2, 403: the exact body is unconfirmed, docs/microsoft.md "Unconfirmed
  shapes");
- ``/roleManagement/directory/roleAssignments``: ``fake_entra``;
- ``POST /users/{id}/sendMail`` and ``GET /users/{id}/mailFolders/SentItems/messages``
  (``$filter=internetMessageId eq '...'``), with Outlook's 4 requests in flight per
  mailbox: ``fake_mail``;
- ``POST /$batch``: at most 20 requests, each answered on its own, ``dependsOn`` giving 424
  when the dependency failed; more than 4 requests for one mailbox without ``dependsOn``
  (Outlook's MailboxConcurrency) answer 429 ``ApplicationThrottled`` from the fifth on.

Exchange Online's admin API, ``POST /adminapi/beta/{tenant}/InvokeCommand`` (not a
documented API: the request and answer shapes are those peer tools rely on):
``Get-Mailbox`` and ``Set-Mailbox`` (forwarding) of ``Tenant.mailboxes``, and those of
``fake_exchange`` (hidden inbox rules, protocols, delegates); a cmdlet's error
is ``{"error": {"details": [{"message": "Ex...|Microsoft.Exchange...Exception|..."}]}}``;
an app without ``Exchange.ManageAsApp`` or an Exchange role 403.

Defender for Endpoint (``/api/machines``, ``/api/machineactions``, isolate and unisolate) and
Intune's managed devices (``/v1.0/deviceManagement/managedDevices``) are served by
``fake_devices``; ``throttle_defender(n, ...)`` throttles Defender.

Throttling: ``throttle_mail(next_n=, every_n=, retry_after=)`` throttles sendMail;
``throttle(n, retry_after)`` answers the next n Graph requests 429 with
``Retry-After`` (omitted when None); ``throttle_batch_items(n, ...)`` does it to the next n
items inside batches, ``throttle_exchange(n, ...)`` to InvokeCommand. ``expire_tokens()``
makes every issued token expired.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

from tocsin.integrations.microsoft import fake_mail
from tocsin.integrations.microsoft.fake_exchange import CMDLETS, set_mailbox_type
from tocsin.integrations.microsoft.fake_graph import (
    GRAPH_RESOURCE,
    GraphError,
    find_user,
    graph_error_body,
    graph_request,
    need,
    not_found,
    throttled_reply,
)
from tocsin.integrations.microsoft.fake_identity import (
    ALL_ROLES,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    FakeApp,
    IssuedToken,
    issue_token,
    known_tenant,
)
from tocsin.integrations.microsoft.fake_identity import discovery as identity_discovery
from tocsin.integrations.microsoft.fake_mail import FakeMail
from tocsin.integrations.microsoft.fake_tenant import (
    ATTACKER_FORWARD,
    ATTACKER_PHONE,
    KNOWN_GOOD_AUTHENTICATOR,
    PASSWORD_METHOD,
    SANDBOX_TENANT_DOMAIN,
    SANDBOX_TENANT_ID,
    SANDBOX_USER,
    Tenant,
    compromised_tenant,
)
from tocsin.integrations.microsoft.fake_tenant import iso_time as _iso
from tocsin.integrations.microsoft.fake_tenant import stable_id as _id
from tocsin.sandbox.fake_service import FakeService, ReceivedRequest, Reply

# The names tests, the sandbox and the other fakes import from here.
_Token = IssuedToken
__all__ = [
    "ALL_ROLES",
    "ATTACKER_FORWARD",
    "ATTACKER_PHONE",
    "EXCHANGE_RESOURCE",
    "GRAPH_RESOURCE",
    "KNOWN_GOOD_AUTHENTICATOR",
    "PASSWORD_METHOD",
    "SANDBOX_CLIENT_ID",
    "SANDBOX_CLIENT_SECRET",
    "SANDBOX_TENANT_DOMAIN",
    "SANDBOX_TENANT_ID",
    "SANDBOX_USER",
    "FakeApp",
    "FakeMicrosoft",
    "GraphError",
    "Tenant",
    "_Token",
    "_id",
    "_iso",
    "compromised_tenant",
    "graph_error_body",
]

EXCHANGE_RESOURCE = "https://outlook.office365.com"


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
            self._tokens: dict[str, IssuedToken] = {}
            self.tokens_issued = 0
            self.revocations: list[str] = []
            """User ids whose sessions were revoked, once per call."""
            self.confirmed_compromised: list[str] = []
            self._throttle: list[tuple[int, str | None, str | None]] = []
            self._throttle_items: list[tuple[int, str | None, str | None]] = []
            self._throttle_exchange: list[tuple[int, str | None, str | None]] = []
            self._throttle_defender: list[tuple[int, str | None, str | None]] = []
            self.mail = FakeMail()
            """sendMail and Sent Items (``fake_mail``)."""

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

    def throttle_mail(
        self, *, next_n: int = 0, every_n: int = 0, retry_after: str | None = "1"
    ) -> None:
        """Answer the next ``next_n`` sendMail requests, or every ``every_n``-th, 429 with
        ``Retry-After`` (fractional as given; omitted when None)."""
        fake_mail.throttle(self, next_n=next_n, every_n=every_n, retry_after=retry_after)

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

    # -- what the other fakes call (fake_entra, fake_exchange, fake_devices) -----------------

    def _need(self, caller: IssuedToken, area: str, any_of: Iterable[str]) -> None:
        need(caller, area, any_of)

    def _user(self, key: str) -> dict[str, Any]:
        return find_user(self, key)

    def _not_found(self, key: str) -> GraphError:
        return not_found(key)

    def _throttled(
        self, queue: list[tuple[int, str | None, str | None]], method: str = ""
    ) -> Reply | None:
        return throttled_reply(self, queue, method)

    # -- serving ---------------------------------------------------------------------------

    def handle(self, request: ReceivedRequest) -> Reply:
        path = request.path
        if path.startswith("/v1.0/") or path == "/v1.0":
            return graph_request(self, request)
        if path.startswith("/api/"):
            from tocsin.integrations.microsoft.fake_devices import defender_request

            return defender_request(self, request)
        exchange = re.match(r"^/adminapi/beta/([^/]+)/InvokeCommand$", path)
        if exchange and request.method == "POST":
            return self._invoke_command(exchange.group(1), request)
        discovery = re.match(r"^/([^/]+)/v2\.0/\.well-known/openid-configuration$", path)
        if discovery and request.method == "GET":
            return identity_discovery(self, discovery.group(1))
        token = re.match(r"^/([^/]+)/oauth2/v2\.0/token$", path)
        if token and request.method == "POST":
            return issue_token(self, token.group(1), request)
        return Reply(404, {"error": "not_found", "error_description": f"no such endpoint {path}"})

    # -- Exchange Online's admin API ----------------------------------------------------------
    # The shapes peer tools rely on (CIPP, Microsoft Extractor Suite); the API is not documented.

    def _exchange_error(self, status: int, exception: str, message: str) -> Reply:
        # Unconfirmed: a cmdlet error's body (code, details, innererror) and its status, as
        # peer tools read them; Microsoft documents neither.
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
        throttled = throttled_reply(self, self._throttle_exchange)
        if throttled is not None:
            return throttled
        given = request.bearer_token()
        with self.lock:
            token = self._tokens.get(given or "")
        if token is None or token.expires_at <= time.time():
            # Unconfirmed: InvokeCommand's 401 body for a missing or expired token.
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
        if token.audience not in (self.url, EXCHANGE_RESOURCE) or not known_tenant(self, tenant):
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
            # Unconfirmed: InvokeCommand's 403 body without Exchange.ManageAsApp or a role.
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
            # Unconfirmed: InvokeCommand's answer to a body that is not a CmdletInput.
            return Reply(
                400,
                {
                    "error": {
                        "code": "BadRequest",
                        "message": "The request body is not a CmdletInput.",
                    }
                },
            )
        handler = self._cmdlets().get(cmdlet)
        if handler is not None:
            with self.lock:
                return handler(parameters)
        return self._exchange_error(
            400,
            "Management.RestApiClient.RestClientException",
            f"The term '{cmdlet}' is not recognized as a name of a cmdlet.",
        )

    def _cmdlets(self) -> dict[str, Callable[[Mapping[str, Any]], Reply]]:
        """The cmdlets InvokeCommand runs, by name: the mailbox's forwarding here, the rest
        ``fake_exchange``'s."""
        return {
            "Get-Mailbox": self._get_mailbox,
            "Set-Mailbox": self._set_mailbox,
            **{name: partial(handler, self) for name, handler in CMDLETS.items()},
        }

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

    _SETTABLE = (
        "ForwardingSmtpAddress",
        "ForwardingAddress",
        "DeliverToMailboxAndForward",
        "GrantSendOnBehalfTo",
    )

    def _set_mailbox(self, parameters: Mapping[str, Any]) -> Reply:
        if "Type" in parameters:  # -Type Shared|Regular converts the mailbox: fake_exchange
            return set_mailbox_type(self, parameters)
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
        before = copy.deepcopy({name: mailbox.get(name) for name in self._SETTABLE})
        # Unconfirmed: JSON null clearing ForwardingSmtpAddress and ForwardingAddress ($null),
        # and PowerShell's @{remove=...} for a multivalued property as {"remove": [...]}.
        for name in self._SETTABLE:
            if name in parameters:
                value = parameters[name]
                if name == "GrantSendOnBehalfTo":
                    value = _multivalued(mailbox.get(name) or [], value)
                if name == "ForwardingSmtpAddress" and value:
                    value = f"smtp:{str(value).removeprefix('smtp:')}"
                mailbox[name] = value
        # Unconfirmed: the wording of the "no settings modified" warning over InvokeCommand.
        warnings = (
            [
                f"The command completed successfully but no settings of '{parameters['Identity']}' have been modified."
            ]
            if before == {name: mailbox.get(name) for name in self._SETTABLE}
            else []
        )
        return Reply(200, {"@adminapi.warnings": warnings, "value": []})


def _multivalued(current: list[Any], given: Any) -> list[Any]:
    """A multivalued property after ``Set-Mailbox``: a list replaces it, ``{"add": [...],
    "remove": [...]}`` edits it (addresses compared without case)."""
    if not isinstance(given, dict):
        return list(given or [])
    removed = {str(v).lower() for v in given.get("remove") or []}
    kept = [v for v in current if str(v).lower() not in removed]
    return kept + [
        v for v in given.get("add") or [] if str(v).lower() not in {str(k).lower() for k in kept}
    ]
