"""App consents (delegated permission grants): list them, revoke those of suspicious apps."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from tocsin.actions import ActionContext, action
from tocsin.integrations.microsoft import CLIENT_SECRET
from tocsin.integrations.microsoft.actions import (
    Keep,
    Removals,
    UserRef,
    look_up_user,
    split_by_keep,
)
from tocsin.integrations.microsoft.client import BatchItem, Graph

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
    found = look_up_user(context, "microsoft.list_oauth_grants", user)
    grants = _grants(found.graph, found.id)
    return OAuthGrants(user=found.upn, user_id=found.id, grants=grants, count=len(grants))


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
    found = look_up_user(context, name, user)
    graph = found.graph
    grants = _grants(graph, found.id)
    split = split_by_keep(
        name,
        keep,
        grants,
        keys=lambda g: (g.id, g.app, g.app_id, g.client_id),
        label=lambda g: g.app or g.client_id,
        what="app consent",
    )
    items = [
        BatchItem(g.id, "DELETE", graph.relative("/oauth2PermissionGrants/{id}", id=g.id))
        for g in split.targets
    ]
    removals = Removals(name, split.targets)
    outcomes = graph.batch(items, what="revoke an app consent")
    for grant, outcome in zip(split.targets, outcomes, strict=True):
        removals.record(grant, outcome, f"consent to {grant.app or grant.client_id}")
    return RevokedGrants(
        user=found.upn, user_id=found.id, revoked=removals.removed(), kept=split.kept
    )
