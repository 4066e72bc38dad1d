"""Sign-in (MFA) methods: list them, remove those the attacker registered."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from tocsin.actions import ActionContext, action
from tocsin.errors import IntegrationError
from tocsin.integrations.microsoft import CLIENT_SECRET
from tocsin.integrations.microsoft.actions import (
    Keep,
    Removals,
    UserRef,
    batch_message,
    look_up_user,
    split_by_keep,
)
from tocsin.integrations.microsoft.client import METHOD_KINDS, SERVICE, BatchItem, Graph

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
    found = look_up_user(context, "microsoft.list_auth_methods", user)
    methods = _methods(found.graph, found.id)
    return AuthMethods(user=found.upn, user_id=found.id, methods=methods, count=len(methods))


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
    found = look_up_user(context, name, user)
    graph = found.graph
    methods = _methods(graph, found.id)
    split = split_by_keep(
        name,
        keep,
        methods,
        keys=lambda m: (m.id, m.label),
        label=lambda m: f"{m.type} {m.label}",
        what="sign-in method",
        removable=lambda m: m.removable,
    )
    targets = split.targets

    def item(method: AuthMethod) -> BatchItem:
        kind = _KIND_OF_TYPE[f"#microsoft.graph.{method.type}AuthenticationMethod"]
        return BatchItem(
            method.id,
            "DELETE",
            graph.relative(
                "/users/{user}/authentication/{kind}/{id}", user=found.id, kind=kind, id=method.id
            ),
        )

    removals = Removals(name, targets)
    deferred: list[AuthMethod] = []
    for outcome, method in zip(
        graph.batch([item(m) for m in targets], what="remove a sign-in method"),
        targets,
        strict=True,
    ):
        if outcome.status == 400 and "default" in batch_message(outcome).lower():
            deferred.append(method)
        else:
            removals.record(method, outcome, f"{method.type} {method.label}")
    # The default method: now that the others are gone, Entra lets it go, unless a kept one remains.
    for method in deferred:
        retried = graph.batch([item(method)], what="remove the default sign-in method")[0]
        if retried.ok or retried.status == 404:
            removals.record(method, retried, f"{method.type} {method.label}")
        else:
            removals.failed(
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
    removed = removals.removed()
    return RemovedMethods(
        user=found.upn,
        user_id=found.id,
        removed=removed,
        kept=[m for m in methods if m not in targets],
        remaining=_methods(graph, found.id),
    )
