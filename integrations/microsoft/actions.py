"""Microsoft 365 actions: contain a compromised user and clean what the attacker left.

Each action names the user by sign-in address (UPN) or object id, reads before it writes
(so that a second run changes nothing and says so), and returns what it found and what
it changed. docs/microsoft.md lists the application permission each one needs. Graph
serves all but the mailbox's forwarding, which only Exchange Online's admin API reaches
(``exchange``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, Field

from tocsin.actions import ActionContext, action
from tocsin.errors import IntegrationError
from tocsin.integrations.microsoft import CLIENT_SECRET
from tocsin.integrations.microsoft.client import (
    METHOD_KINDS,
    SERVICE,
    BatchItem,
    BatchOutcome,
    Graph,
)
from tocsin.integrations.microsoft.exchange import ExchangeOnline

UserRef = Annotated[
    str,
    Field(
        min_length=3,
        max_length=256,
        description="The user's sign-in address (UPN, alice@contoso.com) or Entra object id",
    ),
]
Keep = Annotated[
    list[str],
    Field(
        description="What to keep, each by id or by name; every entry must match one of the "
        "user's, or nothing is removed (a misspelt name must not remove the genuine one)",
    ),
]

_USER_FIELDS = "id,userPrincipalName,displayName,accountEnabled,onPremisesSyncEnabled"


def _user(graph: Graph, user: str) -> dict[str, Any]:
    found = graph.call("GET", "/users/{user}", user=user, query={"$select": _USER_FIELDS})
    body = found.body if isinstance(found.body, dict) else {}
    return body


def _unmatched(keep: Iterable[str], names: Iterable[set[str]]) -> list[str]:
    known = set().union(*names) if names else set()
    return [entry for entry in keep if _key(entry) not in known]


def _said(outcome: BatchOutcome) -> str:
    error = outcome.body.get("error") if isinstance(outcome.body, dict) else None
    return str(error.get("message", "")) if isinstance(error, dict) else ""


def _key(text: str) -> str:
    return re.sub(r"\s+", "", text).lower()


def _refuse_unknown_keep(
    action_name: str, unknown: Sequence[str], what: str, present: Iterable[str]
) -> None:
    if unknown:
        # Not retried: the user's data will not change by waiting, the runbook's input must.
        raise IntegrationError(
            action_name,
            SERVICE,
            f"user has no {what} matching {', '.join(repr(u) for u in unknown)} in `keep`; "
            "nothing was removed",
            f"the user's {what}s are: {', '.join(present) or 'none'}; fix `keep` and run the step again",
        )


def _failed_items(
    action_name: str, failures: Sequence[tuple[str, IntegrationError]], total: int
) -> IntegrationError:
    """One error for the items a call could not remove, each named, grouped by reason."""
    reasons: dict[str, list[str]] = {}
    for label, error in failures:
        reasons.setdefault(error.message.split(f"{SERVICE} ", 1)[-1], []).append(label)
    listed = "; ".join(f"{', '.join(labels)}: {reason}" for reason, labels in reasons.items())
    hints = sorted({error.hint for _, error in failures if error.hint})
    statuses = {error.status_code for _, error in failures}
    return IntegrationError(
        action_name,
        SERVICE,
        f"could not remove {len(failures)} of {total} item(s)"
        + (" (the others are gone)" if len(failures) < total else "")
        + f": {listed}",
        " / ".join(hints) + "; the step can be run again: what is gone stays gone",
        status_code=statuses.pop() if len(statuses) == 1 else None,
        retryable=all(error.retryable for _, error in failures),
    )


# -- the account ---------------------------------------------------------------------------


class AccountState(BaseModel):
    """The user's account before and after the call."""

    user: str
    user_id: str
    account_enabled: bool
    was_enabled: bool
    changed: bool
    note: str = ""


def _set_enabled(context: ActionContext, name: str, user: str, enabled: bool) -> AccountState:
    graph = Graph.for_action(context, name)
    found = _user(graph, user)
    was = bool(found.get("accountEnabled"))
    if was != enabled:
        graph.call(
            "PATCH",
            "/users/{user}",
            user=found["id"],
            json_body={"accountEnabled": enabled},
            what=f"{'enable' if enabled else 'disable'} {found['userPrincipalName']}",
        )
    note = (
        "the user is synchronised from on-premises AD: change the account there too, or the "
        "next sync sets it back"
        if found.get("onPremisesSyncEnabled")
        else ""
    )
    return AccountState(
        user=found["userPrincipalName"],
        user_id=found["id"],
        account_enabled=enabled,
        was_enabled=was,
        changed=was != enabled,
        note=note,
    )


@action(
    "microsoft.disable_user",
    destructive=True,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user: f"block sign-in of {user} in Entra ID (accountEnabled=false)",
)
def disable_user(context: ActionContext, *, user: UserRef) -> AccountState:
    """Block the user's sign-in in Entra ID (accountEnabled false); undone by microsoft.enable_user."""
    return _set_enabled(context, "microsoft.disable_user", user, False)


@action(
    "microsoft.enable_user",
    destructive=True,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user: f"let {user} sign in again in Entra ID (accountEnabled=true)",
)
def enable_user(context: ActionContext, *, user: UserRef) -> AccountState:
    """Let the user sign in again (accountEnabled true); undone by microsoft.disable_user."""
    return _set_enabled(context, "microsoft.enable_user", user, True)


class SessionsRevoked(BaseModel):
    user: str
    user_id: str
    revoked: bool
    note: str


@action(
    "microsoft.revoke_sessions",
    destructive=True,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user: (
        f"sign {user} out of every Microsoft 365 session "
        "(revoke refresh tokens and session cookies)"
    ),
)
def revoke_sessions(context: ActionContext, *, user: UserRef) -> SessionsRevoked:
    """Invalidate the user's refresh tokens and session cookies (revokeSignInSessions).

    Access tokens already issued keep working until they expire (up to an hour), so block
    sign-in first (``microsoft.disable_user``).
    """
    graph = Graph.for_action(context, "microsoft.revoke_sessions")
    found = _user(graph, user)
    answer = graph.call(
        "POST",
        "/users/{user}/revokeSignInSessions",
        user=found["id"],
        what=f"revoke the sessions of {found['userPrincipalName']}",
    )
    value = answer.body.get("value") if isinstance(answer.body, dict) else None
    return SessionsRevoked(
        user=found["userPrincipalName"],
        user_id=found["id"],
        revoked=answer.status == 204 or value is True,
        note="takes a few minutes; access tokens already issued stay valid until they "
        "expire (up to 1 h)",
    )


# -- authentication methods ---------------------------------------------------------------

_KIND_OF_TYPE = {odata: kind for kind, odata in METHOD_KINDS.items()}


class AuthMethod(BaseModel):
    """One sign-in method: ``type`` is Graph's (phone, microsoftAuthenticator, fido2...)."""

    id: str
    type: str
    label: str
    """The phone number, e-mail address or device name that people recognise it by."""
    created: str | None = None
    removable: bool


class AuthMethods(BaseModel):
    user: str
    user_id: str
    methods: list[AuthMethod]
    count: int


def _method(raw: dict[str, Any]) -> AuthMethod:
    odata = str(raw.get("@odata.type", ""))
    short = odata.removeprefix("#microsoft.graph.").removesuffix("AuthenticationMethod")
    label = str(
        raw.get("phoneNumber")
        or raw.get("emailAddress")
        or raw.get("displayName")
        or raw.get("model")
        or short
    )
    return AuthMethod(
        id=str(raw.get("id")),
        type=short,
        label=label,
        created=raw.get("createdDateTime"),
        removable=odata in _KIND_OF_TYPE,
    )


def _methods(graph: Graph, user_id: str) -> list[AuthMethod]:
    answer = graph.call(
        "GET", "/users/{user}/authentication/methods", user=user_id, what="list the sign-in methods"
    )
    values = answer.body.get("value") if isinstance(answer.body, dict) else None
    return [_method(raw) for raw in values or [] if isinstance(raw, dict)]


@action(
    "microsoft.list_auth_methods",
    destructive=False,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user: f"list the sign-in (MFA) methods registered for {user}",
)
def list_auth_methods(context: ActionContext, *, user: UserRef) -> AuthMethods:
    """List the user's sign-in methods (password, phones, Authenticator, FIDO2 keys...)."""
    graph = Graph.for_action(context, "microsoft.list_auth_methods")
    found = _user(graph, user)
    methods = _methods(graph, found["id"])
    return AuthMethods(
        user=found["userPrincipalName"], user_id=found["id"], methods=methods, count=len(methods)
    )


class NotRemoved(BaseModel):
    what: str
    reason: str


class RemovedMethods(BaseModel):
    user: str
    user_id: str
    removed: list[AuthMethod]
    kept: list[AuthMethod]
    remaining: list[AuthMethod]


def _describe_remove_methods(user: str, keep: list[str]) -> str:
    kept = ", ".join(keep) if keep else "none: the user registers again"
    return (
        f"remove every sign-in method of {user} but the password and those kept ({kept}); "
        "the default method goes last"
    )


@action(
    "microsoft.remove_auth_methods",
    destructive=True,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=_describe_remove_methods,
)
def remove_auth_methods(
    context: ActionContext,
    *,
    user: UserRef,
    keep: Keep,
) -> RemovedMethods:
    """Remove the sign-in methods an attacker may have registered, keeping the known-good ones.

    ``keep`` names the methods the user confirmed are theirs (by id, phone number, e-mail
    address or device name). The password cannot be removed. The default method goes last:
    Entra refuses to remove it while other methods remain, so when a kept method remains
    the user (or an admin) must first make a kept method the default.
    """
    name = "microsoft.remove_auth_methods"
    graph = Graph.for_action(context, name)
    found = _user(graph, user)
    methods = _methods(graph, found["id"])
    unknown = _unmatched(keep, [{_key(m.id), _key(m.label)} for m in methods])
    _refuse_unknown_keep(name, unknown, "sign-in method", [f"{m.type} {m.label}" for m in methods])
    wanted = {_key(entry) for entry in keep}
    kept = [m for m in methods if not m.removable or {_key(m.id), _key(m.label)} & wanted]
    targets = [m for m in methods if m not in kept]

    def item(method: AuthMethod) -> BatchItem:
        kind = _KIND_OF_TYPE[f"#microsoft.graph.{method.type}AuthenticationMethod"]
        return BatchItem(
            method.id,
            "DELETE",
            graph.relative(
                "/users/{user}/authentication/{kind}/{id}",
                user=found["id"],
                kind=kind,
                id=method.id,
            ),
        )

    removed: list[AuthMethod] = []
    failures: list[tuple[str, IntegrationError]] = []
    deferred: list[AuthMethod] = []
    for outcome, method in zip(
        graph.batch([item(m) for m in targets], what="remove a sign-in method"),
        targets,
        strict=True,
    ):
        if outcome.ok or outcome.status == 404:  # 404: already gone (a re-run)
            removed.append(method)
        elif outcome.status == 400 and "default" in _said(outcome).lower():
            deferred.append(method)
        else:
            assert outcome.error is not None
            failures.append((f"{method.type} {method.label}", outcome.error))
    # The default method: now that the others are gone, Entra lets it go, unless a kept one remains.
    for method in deferred:
        retried = graph.batch([item(method)], what="remove the default sign-in method")[0]
        if retried.ok or retried.status == 404:
            removed.append(method)
        else:
            failures.append(
                (
                    f"{method.type} {method.label} (the default method)",
                    IntegrationError(
                        name,
                        SERVICE,
                        "refused: it is the user's default sign-in method and other methods remain",
                        "have the user (or an admin: Entra admin centre → Users → the user → "
                        "Authentication methods) make a kept method the default",
                        status_code=retried.status,
                    ),
                )
            )
    if failures:
        raise _failed_items(name, failures, len(targets))
    return RemovedMethods(
        user=found["userPrincipalName"],
        user_id=found["id"],
        removed=removed,
        kept=kept,
        remaining=_methods(graph, found["id"]),
    )


# -- OAuth consents --------------------------------------------------------------------------

RISKY_SCOPES = frozenset(
    {
        "Mail.Read",
        "Mail.ReadWrite",
        "Mail.Send",
        "MailboxSettings.ReadWrite",
        "Contacts.ReadWrite",
        "Files.Read.All",
        "Files.ReadWrite.All",
        "Sites.ReadWrite.All",
        "EWS.AccessAsUser.All",
        "full_access_as_user",
        "Directory.ReadWrite.All",
        "User.ReadWrite.All",
    }
)
"""Delegated scopes that let an app read or send the user's mail or files (S5: app consent)."""


class OAuthGrant(BaseModel):
    """One consent the user gave an app (an oauth2PermissionGrant)."""

    id: str
    app: str
    app_id: str
    client_id: str
    """The app's service principal object id in the tenant."""
    consent_type: str
    scopes: list[str]
    risky_scopes: list[str]


class OAuthGrants(BaseModel):
    user: str
    user_id: str
    grants: list[OAuthGrant]
    count: int
    note: str = (
        "consents an admin gave for the whole tenant (AllPrincipals) are not the user's and "
        "are not listed"
    )


def _grants(graph: Graph, user_id: str) -> list[OAuthGrant]:
    raw = list(
        graph.pages(
            "/oauth2PermissionGrants",
            query={"$filter": f"principalId eq '{user_id}'"},
            what="list the user's app consents",
        )
    )
    apps: dict[str, dict[str, Any]] = {}
    clients = sorted({str(g.get("clientId")) for g in raw if g.get("clientId")})
    items = [
        BatchItem(
            str(n),
            "GET",
            graph.relative("/servicePrincipals/{id}", id=client) + "?$select=id,appId,displayName",
        )
        for n, client in enumerate(clients)
    ]
    for client, outcome in zip(clients, graph.batch(items), strict=True):
        if outcome.ok and isinstance(outcome.body, dict):
            apps[client] = outcome.body  # an app that cannot be named is still listed
    grants = []
    for g in raw:
        scopes = str(g.get("scope") or "").split()
        app = apps.get(str(g.get("clientId")), {})
        grants.append(
            OAuthGrant(
                id=str(g.get("id")),
                app=str(app.get("displayName", "")),
                app_id=str(app.get("appId", "")),
                client_id=str(g.get("clientId")),
                consent_type=str(g.get("consentType")),
                scopes=scopes,
                risky_scopes=sorted(set(scopes) & RISKY_SCOPES),
            )
        )
    return grants


@action(
    "microsoft.list_oauth_grants",
    destructive=False,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user: f"list the apps {user} consented to, and what they may read or send",
)
def list_oauth_grants(context: ActionContext, *, user: UserRef) -> OAuthGrants:
    """List the consents the user gave apps (delegated permission grants), flagging mail access."""
    graph = Graph.for_action(context, "microsoft.list_oauth_grants")
    found = _user(graph, user)
    grants = _grants(graph, found["id"])
    return OAuthGrants(
        user=found["userPrincipalName"], user_id=found["id"], grants=grants, count=len(grants)
    )


class RevokedGrants(BaseModel):
    user: str
    user_id: str
    revoked: list[OAuthGrant]
    kept: list[OAuthGrant]
    note: str = (
        "access tokens the apps already hold stay valid until they expire (up to 1 h): revoke "
        "the user's sessions after this, and disable a malicious app rather than delete it"
    )


@action(
    "microsoft.revoke_oauth_grants",
    destructive=True,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user, keep: (
        f"revoke every app consent of {user} but those of {', '.join(keep) if keep else 'no app'}"
    ),
)
def revoke_oauth_grants(context: ActionContext, *, user: UserRef, keep: Keep) -> RevokedGrants:
    """Revoke the consents the user gave apps, keeping the apps named (by name, app id or grant id)."""
    name = "microsoft.revoke_oauth_grants"
    graph = Graph.for_action(context, name)
    found = _user(graph, user)
    grants = _grants(graph, found["id"])
    names = [{_key(g.id), _key(g.app), _key(g.app_id), _key(g.client_id)} - {""} for g in grants]
    _refuse_unknown_keep(
        name, _unmatched(keep, names), "app consent", [g.app or g.client_id for g in grants]
    )
    wanted = {_key(entry) for entry in keep}
    kept = [g for g, known in zip(grants, names, strict=True) if known & wanted]
    targets = [g for g in grants if g not in kept]
    items = [
        BatchItem(g.id, "DELETE", graph.relative("/oauth2PermissionGrants/{id}", id=g.id))
        for g in targets
    ]
    revoked, failures = [], []
    for grant, outcome in zip(
        targets, graph.batch(items, what="revoke an app consent"), strict=True
    ):
        if outcome.ok or outcome.status == 404:
            revoked.append(grant)
        else:
            assert outcome.error is not None
            failures.append((f"consent to {grant.app or grant.client_id}", outcome.error))
    if failures:
        raise _failed_items(name, failures, len(targets))
    return RevokedGrants(
        user=found["userPrincipalName"], user_id=found["id"], revoked=revoked, kept=kept
    )


# -- sign-ins -------------------------------------------------------------------------------


class SignIn(BaseModel):
    time: str
    ip: str
    country: str
    city: str
    app: str
    ok: bool
    error_code: int
    failure_reason: str = ""


class SignInSummary(BaseModel):
    """The user's interactive sign-ins in the window, newest first (at most 50 listed)."""

    user: str
    user_id: str
    since: str
    count: int
    failures: int
    countries: dict[str, int]
    ips: dict[str, int]
    apps: dict[str, int]
    first: str | None
    last: str | None
    sign_ins: list[SignIn]
    note: str = "v1.0 lists interactive sign-ins only; the logs keep 30 days (7 on Entra ID Free)"


@action(
    "microsoft.recent_sign_ins",
    destructive=False,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user, hours: (
        f"summarise the sign-ins of {user} in the last {hours} h "
        "(countries, IP addresses, apps, failures)"
    ),
)
def recent_sign_ins(
    context: ActionContext,
    *,
    user: UserRef,
    hours: Annotated[int, Field(ge=1, le=720, description="How far back to look, in hours")] = 72,
    max_sign_ins: Annotated[
        int, Field(ge=1, le=10000, description="Read at most this many sign-ins")
    ] = 1000,
) -> SignInSummary:
    """Summarise the user's recent sign-ins: where from, which apps, how many failed."""
    graph = Graph.for_action(context, "microsoft.recent_sign_ins")
    found = _user(graph, user)
    since = (datetime.now(UTC) - timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")
    raw = list(
        graph.pages(
            "/auditLogs/signIns",
            query={
                "$filter": f"userId eq '{found['id']}' and createdDateTime ge {since}",
                "$top": min(max_sign_ins, 1000),
            },
            max_items=max_sign_ins,
            what="read the sign-in logs",
        )
    )
    sign_ins = []
    for entry in raw:
        status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
        where = entry.get("location") if isinstance(entry.get("location"), dict) else {}
        code = int((status or {}).get("errorCode") or 0)
        sign_ins.append(
            SignIn(
                time=str(entry.get("createdDateTime", "")),
                ip=str(entry.get("ipAddress", "")),
                country=str((where or {}).get("countryOrRegion") or "?"),
                city=str((where or {}).get("city") or ""),
                app=str(entry.get("appDisplayName", "")),
                ok=code == 0,
                error_code=code,
                failure_reason=str((status or {}).get("failureReason") or "") if code else "",
            )
        )
    sign_ins.sort(key=lambda s: s.time, reverse=True)
    times = [s.time for s in sign_ins]
    return SignInSummary(
        user=found["userPrincipalName"],
        user_id=found["id"],
        since=since,
        count=len(sign_ins),
        failures=sum(1 for s in sign_ins if not s.ok),
        countries=dict(Counter(s.country for s in sign_ins).most_common()),
        ips=dict(Counter(s.ip for s in sign_ins).most_common()),
        apps=dict(Counter(s.app for s in sign_ins).most_common()),
        first=min(times) if times else None,
        last=max(times) if times else None,
        sign_ins=sign_ins[:50],
    )


# -- inbox rules ----------------------------------------------------------------------------

SUSPECT_FOLDERS = frozenset(
    {
        "rss feeds",
        "rss subscriptions",
        "archive",
        "junk email",
        "deleted items",
        "conversation history",
        "notes",
        "sync issues",
        "conflicts",
        "outbox",
    }
)
"""Folders attackers move mail to so that the user does not see it (S6)."""


class InboxRule(BaseModel):
    id: str
    name: str
    enabled: bool
    flagged: bool
    reasons: list[str]
    """Why the rule looks like an attacker's: forwards, redirects, deletes, hides mail."""


class InboxRules(BaseModel):
    user: str
    user_id: str
    rules: list[InboxRule]
    flagged: int
    note: str = (
        "Graph does not show hidden rules: check them with Exchange Online PowerShell "
        "(Get-InboxRule -Mailbox <user> -IncludeHidden), and mailbox forwarding with Get-Mailbox"
    )


def _addresses(recipients: Any) -> list[str]:
    found = []
    for recipient in recipients or []:
        email = recipient.get("emailAddress") if isinstance(recipient, dict) else None
        if isinstance(email, dict) and email.get("address"):
            found.append(str(email["address"]))
    return found


def _judge_rule(raw: dict[str, Any], folders: dict[str, str] | None, domain: str) -> InboxRule:
    actions = raw.get("actions") if isinstance(raw.get("actions"), dict) else {}
    actions = actions or {}
    reasons: list[str] = []
    for key, verb in (
        ("forwardTo", "forwards"),
        ("forwardAsAttachmentTo", "forwards as attachment"),
        ("redirectTo", "redirects"),
    ):
        for address in _addresses(actions.get(key)):
            outside = not address.lower().endswith("@" + domain.lower())
            reasons.append(
                f"{verb} mail to {address}" + (" (outside the organisation)" if outside else "")
            )
    if actions.get("delete"):
        reasons.append("deletes matching mail")
    if actions.get("permanentDelete"):
        reasons.append("permanently deletes matching mail")
    for key, verb in (("moveToFolder", "moves"), ("copyToFolder", "copies")):
        folder = actions.get(key)
        if not folder:
            continue
        if folders is None:
            reasons.append(f"{verb} mail to a folder Tocsin cannot name (grant Mail.ReadBasic.All)")
        elif folder not in folders:
            reasons.append(f"{verb} mail to a folder that is not at the top of the mailbox")
        elif folders[folder].lower() in SUSPECT_FOLDERS:
            reasons.append(f"{verb} mail to {folders[folder]}")
    name = str(raw.get("displayName") or "")
    if reasons and not re.search(r"\w", name):
        reasons.append(f"has a name of punctuation only ({name!r})")
    return InboxRule(
        id=str(raw.get("id")),
        name=name,
        enabled=bool(raw.get("isEnabled", True)),
        flagged=bool(reasons),
        reasons=reasons,
    )


def _rules(graph: Graph, found: dict[str, Any]) -> list[InboxRule]:
    answer = graph.call(
        "GET",
        "/users/{user}/mailFolders/inbox/messageRules",
        user=found["id"],
        what="list the inbox rules",
    )
    raw = [r for r in (answer.body or {}).get("value") or [] if isinstance(r, dict)]
    folders: dict[str, str] | None = {}
    if any((r.get("actions") or {}).get(k) for r in raw for k in ("moveToFolder", "copyToFolder")):
        listed = graph.call(
            "GET",
            "/users/{user}/mailFolders",
            user=found["id"],
            query={"$select": "id,displayName", "$top": 250},
            allow=(403,),
        )
        folders = (
            None
            if listed.status == 403
            else {
                str(f["id"]): str(f.get("displayName", ""))
                for f in (listed.body or {}).get("value") or []
            }
        )
    domain = str(found["userPrincipalName"]).rsplit("@", 1)[-1]
    return [_judge_rule(r, folders, domain) for r in raw]


@action(
    "microsoft.list_inbox_rules",
    destructive=False,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user: (
        f"list the inbox rules of {user}'s mailbox and flag those that "
        "forward, redirect, delete or hide mail"
    ),
)
def list_inbox_rules(context: ActionContext, *, user: UserRef) -> InboxRules:
    """List the mailbox's inbox rules, flagging those that forward, redirect, delete or hide mail."""
    graph = Graph.for_action(context, "microsoft.list_inbox_rules")
    found = _user(graph, user)
    rules = _rules(graph, found)
    return InboxRules(
        user=found["userPrincipalName"],
        user_id=found["id"],
        rules=rules,
        flagged=sum(1 for r in rules if r.flagged),
    )


class RemovedRules(BaseModel):
    user: str
    user_id: str
    removed: list[InboxRule]
    kept: list[InboxRule]
    """Flagged rules kept because ``keep`` names them."""
    unflagged: list[str]
    """Names of the rules left alone because nothing in them looks like an attacker's."""


@action(
    "microsoft.remove_inbox_rules",
    destructive=True,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user, keep: (
        f"delete the inbox rules of {user} that forward, redirect, "
        f"delete or hide mail" + (f", but {', '.join(keep)}" if keep else "")
    ),
)
def remove_inbox_rules(context: ActionContext, *, user: UserRef, keep: Keep = []) -> RemovedRules:  # noqa: B006 - pydantic copies defaults
    """Delete the inbox rules that forward, redirect, delete or hide mail (rules without such
    actions are left alone); ``keep`` names flagged rules the user confirms are theirs.

    List them first (``microsoft.list_inbox_rules``) to keep the evidence; hidden rules and
    mailbox forwarding are not visible to Graph.
    """
    name = "microsoft.remove_inbox_rules"
    graph = Graph.for_action(context, name)
    found = _user(graph, user)
    rules = _rules(graph, found)
    names = [{_key(r.id), _key(r.name)} for r in rules]
    _refuse_unknown_keep(name, _unmatched(keep, names), "inbox rule", [repr(r.name) for r in rules])
    wanted = {_key(entry) for entry in keep}
    kept = [r for r in rules if r.flagged and {_key(r.id), _key(r.name)} & wanted]
    targets = [r for r in rules if r.flagged and r not in kept]
    removed, failures = [], []
    # One at a time: Exchange allows few concurrent requests per mailbox (MailboxConcurrency).
    for rule in targets:
        try:
            graph.call(
                "DELETE",
                "/users/{user}/mailFolders/inbox/messageRules/{rule}",
                user=found["id"],
                rule=rule.id,
                allow=(404,),
                what=f"delete the inbox rule {rule.name!r}",
            )
            removed.append(rule)
        except IntegrationError as error:
            failures.append((f"rule {rule.name!r}", error))
    if failures:
        raise _failed_items(name, failures, len(targets))
    return RemovedRules(
        user=found["userPrincipalName"],
        user_id=found["id"],
        removed=removed,
        kept=kept,
        unflagged=[r.name for r in rules if not r.flagged],
    )


# -- mailbox forwarding (Exchange Online) ----------------------------------------------------


class MailboxForwarding(BaseModel):
    """Where the mailbox forwards every message, as Exchange Online says (Graph cannot see it)."""

    user: str
    forwarding_smtp_address: str | None
    """An address anywhere (``smtp:`` removed): what an attacker sets."""
    forwarding_address: str | None
    """A recipient of the organisation (an admin sets this one)."""
    deliver_to_mailbox_and_forward: bool
    forwards: bool


def _forwarding(exchange: ExchangeOnline, upn: str) -> MailboxForwarding:
    found = exchange.invoke(
        "Get-Mailbox", {"Identity": upn}, mailbox=upn, what=f"read the mailbox of {upn}"
    )
    mailbox = found[0] if found else {}
    smtp = mailbox.get("ForwardingSmtpAddress")
    address = mailbox.get("ForwardingAddress")
    smtp_text = str(smtp).removeprefix("smtp:").removeprefix("SMTP:") if smtp else None
    return MailboxForwarding(
        user=upn,
        forwarding_smtp_address=smtp_text,
        forwarding_address=str(address) if address else None,
        deliver_to_mailbox_and_forward=bool(mailbox.get("DeliverToMailboxAndForward")),
        forwards=bool(smtp_text or address),
    )


def _upn(context: ActionContext, name: str, user: str) -> tuple[str, ExchangeOnline]:
    found = _user(Graph.for_action(context, name), user)
    return str(found["userPrincipalName"]), ExchangeOnline.for_action(context, name)


@action(
    "microsoft.mailbox_forwarding",
    destructive=False,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user: (
        f"read whether {user}'s mailbox forwards mail (Exchange Online Get-Mailbox)"
    ),
)
def mailbox_forwarding(context: ActionContext, *, user: UserRef) -> MailboxForwarding:
    """Read the mailbox's forwarding (Exchange Online), which Graph does not show.

    Goes through Exchange Online's admin API (InvokeCommand), which Microsoft does not
    document as a public API: the app needs Exchange.ManageAsApp and an Exchange role.
    """
    upn, exchange = _upn(context, "microsoft.mailbox_forwarding", user)
    return _forwarding(exchange, upn)


class RemovedForwarding(BaseModel):
    user: str
    before: MailboxForwarding
    changed: bool
    note: str = (
        "forwarding by inbox rules, transport rules and apps is not this setting: see "
        "microsoft.remove_inbox_rules and microsoft.revoke_oauth_grants"
    )


@action(
    "microsoft.remove_mailbox_forwarding",
    destructive=True,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user: (
        f"stop {user}'s mailbox forwarding mail (Exchange Online Set-Mailbox "
        "-ForwardingSmtpAddress $null -ForwardingAddress $null)"
    ),
)
def remove_mailbox_forwarding(context: ActionContext, *, user: UserRef) -> RemovedForwarding:
    """Stop the mailbox forwarding mail (Exchange Online Set-Mailbox), as S1 step 2 asks.

    Goes through Exchange Online's admin API (InvokeCommand), which Microsoft does not
    document as a public API: the app needs Exchange.ManageAsApp and an Exchange role.
    """
    name = "microsoft.remove_mailbox_forwarding"
    upn, exchange = _upn(context, name, user)
    before = _forwarding(exchange, upn)
    if before.forwards or before.deliver_to_mailbox_and_forward:
        exchange.invoke(
            "Set-Mailbox",
            {
                "Identity": upn,
                "ForwardingSmtpAddress": None,
                "ForwardingAddress": None,
                "DeliverToMailboxAndForward": False,
            },
            mailbox=upn,
            what=f"remove the forwarding of {upn}",
        )
    return RemovedForwarding(
        user=upn, before=before, changed=before.forwards or before.deliver_to_mailbox_and_forward
    )


# -- Identity Protection --------------------------------------------------------------------


class ConfirmedCompromised(BaseModel):
    user: str
    user_id: str
    confirmed: bool
    note: str = "the user's risk is now high: risk-based Conditional Access policies apply"


@action(
    "microsoft.confirm_compromised",
    destructive=True,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user: (
        f"mark {user} as compromised in Entra ID Protection (user risk high; needs Entra ID P2)"
    ),
)
def confirm_compromised(context: ActionContext, *, user: UserRef) -> ConfirmedCompromised:
    """Mark the user as compromised in Entra ID Protection (needs Entra ID P2)."""
    graph = Graph.for_action(context, "microsoft.confirm_compromised")
    found = _user(graph, user)
    graph.call(
        "POST",
        "/identityProtection/riskyUsers/confirmCompromised",
        json_body={"userIds": [found["id"]]},
        what=f"mark {found['userPrincipalName']} as compromised",
    )
    return ConfirmedCompromised(
        user=found["userPrincipalName"], user_id=found["id"], confirmed=True
    )
