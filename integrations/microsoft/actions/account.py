"""The account: block sign-in and let the user back in (each the other's undo), sign them
out everywhere, mark them compromised in Entra ID Protection.
"""

from __future__ import annotations

from pydantic import BaseModel

from tocsin.actions import ActionContext, Reconciled, action
from tocsin.integrations.microsoft import CLIENT_SECRET
from tocsin.integrations.microsoft.actions import UserRef, look_up_user


class AccountState(BaseModel):
    """The user's account before and after the call."""

    user: str
    user_id: str
    account_enabled: bool
    was_enabled: bool
    changed: bool
    note: str = ""


def _set_enabled(context: ActionContext, name: str, user: str, enabled: bool) -> AccountState:
    found = look_up_user(context, name, user)
    graph = found.graph
    was = bool(found.fields.get("accountEnabled"))
    if was != enabled:
        graph.call(
            "PATCH",
            "/users/{user}",
            user=found.id,
            json_body={"accountEnabled": enabled},
            what=f"{'enable' if enabled else 'disable'} {found.upn}",
        )
    note = (
        "the user is synchronised from on-premises AD: change the account there too, or the "
        "next sync sets it back"
        if found.fields.get("onPremisesSyncEnabled")
        else ""
    )
    return AccountState(
        user=found.upn,
        user_id=found.id,
        account_enabled=enabled,
        was_enabled=was,
        changed=was != enabled,
        note=note,
    )


def _read_enabled(context: ActionContext, name: str, user: str, enabled: bool) -> Reconciled:
    """After an interruption: is the account now as the call would leave it? Entra ID's
    ``accountEnabled`` says; whether it already was before the call cannot be read, so the
    outputs say the call changed it, and the note says that this is assumed."""
    found = look_up_user(context, name, user)
    now_enabled = bool(found.fields.get("accountEnabled"))
    state = "enabled" if now_enabled else "disabled"
    if now_enabled != enabled:
        return Reconciled.did_not(f"{found.upn} is still {state} in Entra ID")
    return Reconciled.took_effect(
        AccountState(
            user=found.upn,
            user_id=found.id,
            account_enabled=enabled,
            was_enabled=not enabled,
            changed=True,
            note=f"read back after an interruption: the account is {state}; whether it "
            "already was before this call is not known",
        ),
        found=f"{found.upn} is {state} in Entra ID (accountEnabled {str(now_enabled).lower()})",
    )


def _disabled_read_back(context: ActionContext, *, user: str) -> Reconciled:
    return _read_enabled(context, "microsoft.disable_user", user, False)


def _enabled_read_back(context: ActionContext, *, user: str) -> Reconciled:
    return _read_enabled(context, "microsoft.enable_user", user, True)


@action(
    "microsoft.disable_user",
    destructive=True,
    idempotent=True,
    reconcile=_disabled_read_back,
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
    reconcile=_enabled_read_back,
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
    found = look_up_user(context, "microsoft.revoke_sessions", user)
    graph = found.graph
    answer = graph.call(
        "POST",
        "/users/{user}/revokeSignInSessions",
        user=found.id,
        what=f"revoke the sessions of {found.upn}",
    )
    value = answer.body.get("value") if isinstance(answer.body, dict) else None
    return SessionsRevoked(
        user=found.upn,
        user_id=found.id,
        revoked=answer.status == 204 or value is True,
        note="takes a few minutes; access tokens already issued stay valid until they "
        "expire (up to 1 h)",
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
    found = look_up_user(context, "microsoft.confirm_compromised", user)
    graph = found.graph
    graph.call(
        "POST",
        "/identityProtection/riskyUsers/confirmCompromised",
        json_body={"userIds": [found.id]},
        what=f"mark {found.upn} as compromised",
    )
    return ConfirmedCompromised(user=found.upn, user_id=found.id, confirmed=True)
