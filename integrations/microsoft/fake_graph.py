"""The fake Microsoft Graph v1.0: its router, its ``$batch`` and its resources (users,
authentication methods, sign-in logs, consents, inbox rules, Identity Protection), each
call checking the token (401 ``InvalidAuthenticationToken``: missing, unknown, expired,
another audience) and the role it needs (403 with the body of the service behind it).
Directory roles are ``fake_entra``'s, Intune's managed devices ``fake_devices``'; what each
route answers is listed in fake.py's docstring. ``FakeMicrosoft`` holds the state and the
lock; these functions are handed it.
"""

from __future__ import annotations

import copy
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tocsin.integrations.microsoft import fake_entra
from tocsin.integrations.microsoft.client import METHOD_KINDS
from tocsin.integrations.microsoft.fake_entra import password_role_check, role_management
from tocsin.integrations.microsoft.fake_identity import IssuedToken
from tocsin.integrations.microsoft.fake_tenant import PASSWORD_METHOD, iso_time
from tocsin.sandbox.fake_service import ReceivedRequest, Reply

if TYPE_CHECKING:
    from tocsin.integrations.microsoft.fake import FakeMicrosoft

GRAPH_RESOURCE = "https://graph.microsoft.com"
BATCH_LIMIT = 20
"""Graph's limit of requests in one ``$batch``."""
MAILBOX_CONCURRENCY = 4
"""Outlook's concurrent requests per app and mailbox; a batch's items run concurrently
unless ``dependsOn`` sequences them."""
_OUTLOOK_ITEM = re.compile(
    r"^/?users/([^/?]+)/(mailFolders|messages|mailboxSettings|events|calendars?|contacts)(?:[/?]|$)",
    re.IGNORECASE,
)


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


def _caller(fake: FakeMicrosoft, request: ReceivedRequest) -> IssuedToken:
    given = request.bearer_token()
    if not given:
        raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
    with fake.lock:
        token = fake._tokens.get(given)
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
    if token.audience not in (fake.url, GRAPH_RESOURCE):
        raise GraphError(401, "InvalidAuthenticationToken", "Invalid audience.")
    return token


def throttled_reply(
    fake: FakeMicrosoft, queue: list[tuple[int, str | None, str | None]], method: str = ""
) -> Reply | None:
    with fake.lock:
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


def graph_request(fake: FakeMicrosoft, request: ReceivedRequest) -> Reply:
    """A request to ``/v1.0``: throttled, its token checked, then routed (or ``$batch``)."""
    throttled = throttled_reply(fake, fake._throttle)
    if throttled is not None:
        return throttled
    try:
        caller = _caller(fake, request)
        path = request.path[len("/v1.0") :]
        query = {k: v[0] for k, v in request.query.items()}
        body = request.json() if request.body else None
        if (request.method, path) == ("POST", "/$batch"):
            return _batch(fake, caller, body)
        from tocsin.integrations.microsoft.fake_mail import mail_route

        # Mail is served outside the fake's lock, so that requests overlap as Outlook's do.
        mail = mail_route(fake, caller, request.method, path, query, body)
        if mail is not None:
            return mail
        return _route(fake, caller, request.method, path, query, body)
    except GraphError as error:
        return error.reply()
    except ValueError:
        return GraphError(400, "BadRequest", "Unable to read JSON request payload.").reply()


def _batch(fake: FakeMicrosoft, caller: IssuedToken, body: Any) -> Reply:
    requests = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(requests, list) or not requests:
        raise GraphError(400, "BadRequest", "Invalid batch payload format.")
    if len(requests) > BATCH_LIMIT:
        raise GraphError(
            400, "BadRequest", f"Invalid batch payload: more than {BATCH_LIMIT} requests."
        )
    ids = [str(item.get("id")) for item in requests if isinstance(item, dict)]
    if len(set(ids)) != len(ids) or len(ids) != len(requests):
        raise GraphError(400, "BadRequest", "Batch request ids must be unique.")
    statuses: dict[str, int] = {}
    running: dict[str, int] = {}
    """Items without ``dependsOn`` per mailbox: those Outlook would run at once."""
    responses = []
    for item in requests:
        item_id = str(item["id"])
        depends = [str(d) for d in item.get("dependsOn") or []]
        mailbox = None if depends else _mailbox_of(fake, str(item.get("url", "")))
        if mailbox is not None:
            running[mailbox] = running.get(mailbox, 0) + 1
        if any(not 200 <= statuses.get(d, 424) < 300 for d in depends):
            reply = GraphError(424, "FailedDependency", "The dependent request failed.").reply()
        elif mailbox is not None and running[mailbox] > MAILBOX_CONCURRENCY:
            # Unconfirmed: whether Outlook's MailboxConcurrency 429 carries a Retry-After, and
            # its innerError; the code and message are those Graph users report.
            reply = Reply(
                429,
                graph_error_body(
                    "ApplicationThrottled", "Application is over its MailboxConcurrency limit."
                ),
                {"Retry-After": "1"},
            )
        else:
            method = str(item.get("method", "GET")).upper()
            reply = throttled_reply(fake, fake._throttle_items, method) or _batch_item(
                fake, caller, item
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


def _mailbox_of(fake: FakeMicrosoft, url: str) -> str | None:
    """The user id (or the key, for a user the tenant lacks) whose mailbox ``url`` touches."""
    match = _OUTLOOK_ITEM.match(urlsplit(url).path)
    if match is None:
        return None
    key = unquote(match.group(1)).lower()
    for user in fake.tenant.users:
        if key in (user["id"], user["userPrincipalName"].lower()):
            return str(user["id"])
    return key


def _batch_item(fake: FakeMicrosoft, caller: IssuedToken, item: Mapping[str, Any]) -> Reply:
    url = str(item.get("url", ""))
    if url.startswith(("http://", "https://")):
        return GraphError(400, "BadRequest", "Batch request urls must be relative.").reply()
    split = urlsplit(url if url.startswith("/") else "/" + url)
    query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
    try:
        return _route(
            fake,
            caller,
            str(item.get("method", "GET")).upper(),
            split.path,
            query,
            item.get("body"),
        )
    except GraphError as error:
        return error.reply()


# -- Graph: the routes -----------------------------------------------------------------


def _route(
    fake: FakeMicrosoft,
    caller: IssuedToken,
    method: str,
    path: str,
    query: Mapping[str, str],
    body: Any,
) -> Reply:
    parts = [unquote(part) for part in path.strip("/").split("/")]
    from tocsin.integrations.microsoft import fake_devices

    with fake.lock:
        if fake_devices.is_intune_path(parts):
            return fake_devices.intune_route(fake, caller, method, parts, query, body)
        if parts[0] == "users" and len(parts) >= 2:
            return _user_route(fake, caller, method, parts[1], parts[2:], query, body)
        if parts == ["auditLogs", "signIns"] and method == "GET":
            return _sign_ins(fake, caller, query)
        if parts[0] == "roleManagement":
            return role_management(fake, caller, method, parts, query, body)
        if parts[0] == "groups" and len(parts) >= 2:
            return fake_entra.groups_route(fake, caller, method, parts)
        if parts[0] == "oauth2PermissionGrants":
            return _grants(fake, caller, method, parts[1:], query)
        if parts[0] == "servicePrincipals" and len(parts) == 2 and method == "GET":
            need(caller, "directory", {"Application.Read.All", "Directory.Read.All"})
            found = [sp for sp in fake.tenant.service_principals if sp["id"] == parts[1]]
            if not found:
                raise not_found(parts[1])
            return Reply(200, copy.deepcopy(found[0]))
        if parts == ["identityProtection", "riskyUsers", "confirmCompromised"] and method == "POST":
            return _confirm_compromised(fake, caller, body)
    raise GraphError(400, "BadRequest", f"Resource not found for the segment '{parts[0]}'.")


_DENIED = {
    "directory": (
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
    ),
    "methods": ("accessDenied", "Request Authorization failed"),
    "mailbox": ("ErrorAccessDenied", "Access is denied. Check credentials and try again."),
}


def need(caller: IssuedToken, area: str, any_of: Iterable[str]) -> None:
    """A 403 with the body of the service behind it unless the token holds one of ``any_of``."""
    if caller.roles & set(any_of):
        return
    code, message = _DENIED[area]
    raise GraphError(403, code, message)


def not_found(key: str) -> GraphError:
    """Graph's 404 for a directory object."""
    return GraphError(
        404,
        "Request_ResourceNotFound",
        f"Resource '{key}' does not exist or one of its queried reference-property objects "
        "are not present.",
    )


def find_user(fake: FakeMicrosoft, key: str) -> dict[str, Any]:
    for user in fake.tenant.users:
        if key.lower() in (user["id"], user["userPrincipalName"].lower()):
            return user
    raise not_found(key)


def _user_route(
    fake: FakeMicrosoft,
    caller: IssuedToken,
    method: str,
    key: str,
    rest: list[str],
    query: Mapping[str, str],
    body: Any,
) -> Reply:
    if not rest:
        if method == "GET":
            need(
                caller,
                "directory",
                {"User.Read.All", "User.ReadWrite.All", "Directory.Read.All"},
            )
            user = find_user(fake, key)
            return Reply(200, _selected(user, query.get("$select")))
        if method == "PATCH":
            return _update_user(fake, caller, key, body)
    if rest == ["revokeSignInSessions"] and method == "POST":
        need(
            caller,
            "directory",
            {"User.RevokeSessions.All", "User.ReadWrite.All", "Directory.ReadWrite.All"},
        )
        user = find_user(fake, key)
        fake.revocations.append(user["id"])
        return Reply(
            200,
            {"@odata.context": f"{fake.url}/v1.0/$metadata#Edm.Boolean", "value": True},
        )
    if rest == ["memberOf", "microsoft.graph.group"] and method == "GET":
        return fake_entra.member_of(fake, caller, find_user(fake, key), query)
    if rest[:1] == ["authentication"]:
        return _methods(fake, caller, method, key, rest[1:])
    if rest[:1] == ["mailFolders"]:
        return _mailbox(fake, caller, method, key, rest[1:])
    raise GraphError(400, "BadRequest", f"Resource not found for the segment '{rest[0]}'.")


def _update_user(fake: FakeMicrosoft, caller: IssuedToken, key: str, body: Any) -> Reply:
    if not isinstance(body, dict) or not body:
        raise GraphError(400, "Request_BadRequest", "Invalid request body.")
    for name in body:
        if name == "accountEnabled":
            need(
                caller,
                "directory",
                {
                    "User.EnableDisableAccount.All",
                    "User.ReadWrite.All",
                    "Directory.ReadWrite.All",
                },
            )
        elif name == "passwordProfile":
            need(
                caller,
                "directory",
                {
                    "User-PasswordProfile.ReadWrite.All",
                    "User.ReadWrite.All",
                    "Directory.ReadWrite.All",
                },
            )
        else:
            raise GraphError(400, "Request_BadRequest", f"Property '{name}' is not writable here.")
    user = find_user(fake, key)
    if "passwordProfile" in body:
        password_role_check(fake, caller, user)
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
        user["lastPasswordChangeDateTime"] = iso_time(datetime.now(UTC))
    return Reply(204)


def _methods(
    fake: FakeMicrosoft, caller: IssuedToken, method: str, key: str, rest: list[str]
) -> Reply:
    if rest == ["methods"] and method == "GET":
        need(
            caller,
            "methods",
            {"UserAuthenticationMethod.Read.All", "UserAuthenticationMethod.ReadWrite.All"},
        )
        user = find_user(fake, key)
        return Reply(
            200,
            {
                "@odata.context": f"{fake.url}/v1.0/$metadata#users('{user['id']}')/authentication/methods",
                "value": copy.deepcopy(fake.tenant.methods.get(user["id"], [])),
            },
        )
    if len(rest) == 2 and rest[0] in METHOD_KINDS and method == "DELETE":
        need(caller, "methods", {"UserAuthenticationMethod.ReadWrite.All"})
        user = find_user(fake, key)
        methods = fake.tenant.methods.get(user["id"], [])
        found = [
            m for m in methods if m["id"] == rest[1] and m["@odata.type"] == METHOD_KINDS[rest[0]]
        ]
        if not found:
            raise GraphError(
                404,
                "itemNotFound",
                f"The requested authentication method '{rest[1]}' was not found.",
            )
        others = [m for m in methods if m is not found[0] and m["@odata.type"] != PASSWORD_METHOD]
        if fake.tenant.default_method.get(user["id"]) == rest[1] and others:
            raise GraphError(
                400,
                "badRequest",
                "Cannot delete default method. Please change the user's default sign-in "
                "method, or delete their other methods first.",
            )
        methods.remove(found[0])
        return Reply(204)
    raise GraphError(400, "BadRequest", "Resource not found for the segment 'authentication'.")


def _mailbox(
    fake: FakeMicrosoft, caller: IssuedToken, method: str, key: str, rest: list[str]
) -> Reply:
    user = find_user(fake, key)
    if rest[:2] == ["inbox", "messageRules"]:
        need(
            caller,
            "mailbox",
            {"MailboxSettings.ReadWrite"}
            if method == "DELETE"
            else {"MailboxSettings.Read", "MailboxSettings.ReadWrite"},
        )
    else:
        need(caller, "mailbox", {"Mail.ReadBasic.All", "Mail.Read", "Mail.ReadWrite"})
    if user["id"] not in fake.tenant.rules:
        raise GraphError(
            404,
            "MailboxNotEnabledForRESTAPI",
            "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        )
    if not rest and method == "GET":
        return Reply(200, {"value": copy.deepcopy(fake.tenant.folders.get(user["id"], []))})
    rules = fake.tenant.rules[user["id"]]
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


def _sign_ins(fake: FakeMicrosoft, caller: IssuedToken, query: Mapping[str, str]) -> Reply:
    if not caller.roles >= {"AuditLog.Read.All", "Directory.Read.All"}:
        missing = (
            "AuditLog.Read.All" if "AuditLog.Read.All" not in caller.roles else "Directory.Read.All"
        )
        raise GraphError(
            403,
            "Authentication_MSGraphPermissionMissing",
            f"Calling principal does not have required MSGraph permissions {missing}",
        )
    if not fake.tenant.premium:
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
        for s in fake.tenant.sign_ins
        if (user is None or s["userId"] == user.group(1))
        and (since is None or s["createdDateTime"] >= since.group(1))
    ]
    found.sort(key=lambda s: s["createdDateTime"], reverse=True)
    top = int(query.get("$top", "1000"))
    skip = int(query.get("$skiptoken", "0"))
    page = found[skip : skip + top]
    answer: dict[str, Any] = {
        "@odata.context": f"{fake.url}/v1.0/$metadata#auditLogs/signIns",
        "value": copy.deepcopy(page),
    }
    if skip + top < len(found):
        answer["@odata.nextLink"] = (
            f"{fake.url}/v1.0/auditLogs/signIns?$filter={quote(wanted)}&$top={top}"
            f"&$skiptoken={skip + top}"
        )
    return Reply(200, answer)


def _grants(
    fake: FakeMicrosoft, caller: IssuedToken, method: str, rest: list[str], query: Mapping[str, str]
) -> Reply:
    if not rest and method == "GET":
        need(
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
            for g in fake.tenant.grants
            if principal is None or g.get("principalId") == principal.group(1)
        ]
        return Reply(200, {"value": copy.deepcopy(found)})
    if len(rest) == 1 and method == "DELETE":
        need(
            caller,
            "directory",
            {"DelegatedPermissionGrant.ReadWrite.All", "Directory.ReadWrite.All"},
        )
        found = [g for g in fake.tenant.grants if g["id"] == rest[0]]
        if not found:
            raise not_found(rest[0])
        fake.tenant.grants.remove(found[0])
        return Reply(204)
    raise GraphError(
        400, "BadRequest", "Resource not found for the segment 'oauth2PermissionGrants'."
    )


def _confirm_compromised(fake: FakeMicrosoft, caller: IssuedToken, body: Any) -> Reply:
    need(caller, "directory", {"IdentityRiskyUser.ReadWrite.All"})
    if not fake.tenant.p2:
        # Unconfirmed: Graph's 403 for confirmCompromised without Entra ID P2 (code and message).
        raise GraphError(403, "Forbidden", "The tenant needs an AAD Premium 2 license.")
    ids = body.get("userIds") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not ids:
        raise GraphError(400, "BadRequest", "userIds is required.")
    for user_id in ids:
        if not any(u["id"] == user_id for u in fake.tenant.users):
            raise GraphError(400, "BadRequest", f"Invalid user id '{user_id}'.")
        fake.confirmed_compromised.append(str(user_id))
    return Reply(204)


def _selected(item: Mapping[str, Any], select: str | None) -> dict[str, Any]:
    if not select:
        return copy.deepcopy(dict(item))
    names = {name.strip() for name in select.split(",")} | {"id"}
    return {k: copy.deepcopy(v) for k, v in item.items() if k in names}
