"""Entra ID: reset the password (delivered to a secure channel only) and take away the
user's admin roles."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from tocsin.actions import ActionContext, action
from tocsin.errors import IntegrationError
from tocsin.integrations.microsoft import CLIENT_SECRET, integration
from tocsin.integrations.microsoft.actions import (
    Keep,
    Removals,
    UserRef,
    look_up_user,
    split_by_keep,
)
from tocsin.integrations.microsoft.client import SERVICE, Graph
from tocsin.integrations.microsoft.password_delivery import (
    password_delivery,
    password_note,
    temporary_password,
)

# -- password reset ---------------------------------------------------------------------------

PASSWORD_PERMISSION = "User-PasswordProfile.ReadWrite.All"


class PasswordReset(BaseModel):
    """That the password was reset and where it went; never the password."""

    user: str
    user_id: str
    force_change_next_sign_in: bool
    delivered_to: str
    note: str = (
        "app passwords and sessions are not revoked by a reset: run microsoft.revoke_sessions; "
        "never send the password to the user's own mailbox"
    )


def _password_refused(name: str, upn: str, said: str, client_id: str) -> IntegrationError:
    return IntegrationError(
        name,
        SERVICE,
        f"refused to reset the password of {upn} ({said}): the app needs the application "
        f"permission {PASSWORD_PERMISSION} (or User.ReadWrite.All), and its service principal "
        "the User Administrator role (Privileged Authentication Administrator when the user "
        "holds an admin role)",
        f"grant {PASSWORD_PERMISSION} to the app {client_id} (Entra admin centre → App "
        "registrations → the Tocsin app → API permissions → Microsoft Graph → Application "
        "permissions, then grant admin consent), and assign the role (Roles and "
        "administrators → User Administrator → Add assignments → the app)",
        status_code=403,
    )


@action(
    "microsoft.reset_password",
    destructive=True,
    idempotent=False,
    secrets=(CLIENT_SECRET,),
    describe=lambda user: (
        f"reset the password of {user} to a new random one the user must change at the "
        "next sign-in, delivered only to the configured password channel (each run "
        "resets it again)"
    ),
)
def reset_password(context: ActionContext, *, user: UserRef) -> PasswordReset:
    """Reset the password to a random temporary one (changed at next sign-in), delivered only
    to the configured password channel; never in the trail, the logs or the outputs.

    Not idempotent: each run sets a new password. A user synchronised from on-premises AD or
    signing in through a federated domain is refused: reset them on-premises (twice).
    """
    name = "microsoft.reset_password"
    delivery = password_delivery(
        integration.settings_of(context.settings), context.settings, context.secrets
    )
    found = look_up_user(context, name, user)
    graph, upn = found.graph, found.upn
    # The password lives only here, in the staged note and in this request's body: it is
    # staged first, so that a channel that cannot take it fails before anything changes.
    password = temporary_password()
    staged = delivery.stage(password_note(upn, context.incident, context.step_id, password))
    try:
        answer = graph.call(
            "PATCH",
            "/users/{user}",
            user=found.id,
            json_body={
                "passwordProfile": {
                    "forceChangePasswordNextSignIn": True,
                    "password": password,
                }
            },
            allow=(403,),
            what=f"reset the password of {upn}",
        )
    except BaseException:
        staged.discard()
        raise
    if answer.status == 403:
        staged.discard()
        said = f"{answer.error_code}: {answer.error_message}" if answer.error_code else "HTTP 403"
        raise _password_refused(name, upn, said, graph.credentials.client_id)
    return PasswordReset(
        user=upn,
        user_id=found.id,
        force_change_next_sign_in=True,
        delivered_to=staged.commit(),
    )


# -- admin roles ------------------------------------------------------------------------------


RoleKind = Literal["active", "eligible", "group"]


class RoleAssignment(BaseModel):
    id: str
    """The assignment's id (a PIM eligibility's, or the group's role assignment's)."""
    role: str
    role_id: str
    scope: str
    kind: RoleKind = "active"
    """active: assigned to the user; eligible: PIM lets the user activate it at will;
    group: held through a role-assignable group the user is a member of."""
    group: str | None = None
    group_id: str | None = None


class AdminRoles(BaseModel):
    user: str
    user_id: str
    roles: list[RoleAssignment]
    note: str = (
        "active, PIM-eligible and group-held Entra roles; Exchange role groups and Defender "
        "role groups are not in Graph and are not listed"
    )


def _role(item: dict[str, Any], **extra: Any) -> RoleAssignment:
    definition: dict[str, Any] = item.get("roleDefinition") or {}
    return RoleAssignment(
        id=str(item["id"]),
        role=str(definition.get("displayName") or item.get("roleDefinitionId")),
        role_id=str(item.get("roleDefinitionId")),
        scope=str(item.get("directoryScopeId") or "/"),
        **extra,
    )


def _assigned_to(graph: Graph, principal: str, what: str) -> list[dict[str, Any]]:
    return list(
        graph.pages(
            "/roleManagement/directory/roleAssignments",
            query={"$filter": f"principalId eq '{principal}'", "$expand": "roleDefinition"},
            what=what,
        )
    )


def _assignments(graph: Graph, user_id: str) -> list[RoleAssignment]:
    """Every Entra role the user holds: assigned, eligible through PIM, through a group.

    Role-assignable groups cannot hold other groups, so the user's direct groups are all
    there is to read.
    """
    found = [
        _role(item)
        for item in _assigned_to(graph, user_id, "list the user's directory role assignments")
    ]
    eligible = graph.pages(
        "/roleManagement/directory/roleEligibilitySchedules",
        query={"$filter": f"principalId eq '{user_id}'", "$expand": "roleDefinition"},
        what="list the roles the user is eligible for in PIM",
    )
    found.extend(_role(item, kind="eligible") for item in eligible)
    groups = graph.pages(
        "/users/{user}/memberOf/microsoft.graph.group",
        user=user_id,
        query={"$select": "id,displayName,isAssignableToRole"},
        what="list the user's groups",
    )
    for group in groups:
        if not group.get("isAssignableToRole"):
            continue
        name = str(group.get("displayName") or group["id"])
        for item in _assigned_to(graph, str(group["id"]), f"list the roles of the group {name}"):
            found.append(_role(item, kind="group", group=name, group_id=str(group["id"])))
    return found


def _label(role: RoleAssignment) -> str:
    if role.kind == "eligible":
        return f"{role.role} (eligible in PIM)"
    if role.kind == "group":
        return f"{role.role} (through the group {role.group})"
    return role.role


def _remove_eligibility(
    graph: Graph, context: ActionContext, user_id: str, upn: str, role: RoleAssignment
) -> None:
    """End a PIM eligibility (an ``adminRemove`` request); one already gone is left as is."""
    answer = graph.call(
        "POST",
        "/roleManagement/directory/roleEligibilityScheduleRequests",
        json_body={
            "action": "adminRemove",
            "principalId": user_id,
            "roleDefinitionId": role.role_id,
            "directoryScopeId": role.scope,
            "justification": f"Removed by Tocsin: incident {context.incident}, step {context.step_id}",
        },
        allow=(400,),
        what=f"end the PIM eligibility of {upn} for {role.role}",
    )
    # Unconfirmed: the code Graph gives when the eligibility no longer exists.
    if answer.status == 400 and answer.error_code != "RoleAssignmentDoesNotExist":
        raise IntegrationError(
            "microsoft.remove_admin_roles",
            SERVICE,
            f"refused to end the PIM eligibility of {upn} for {role.role} "
            f"({answer.error_code}: {answer.error_message})",
            "end it in Entra admin centre → Identity Governance → Privileged Identity "
            "Management → Roles → Assignments → Eligible",
            status_code=400,
        )


@action(
    "microsoft.list_admin_roles",
    destructive=False,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user: f"list the Entra admin roles assigned to {user}",
)
def list_admin_roles(context: ActionContext, *, user: UserRef) -> AdminRoles:
    """List the user's active Entra directory role assignments."""
    found = look_up_user(context, "microsoft.list_admin_roles", user)
    return AdminRoles(user=found.upn, user_id=found.id, roles=_assignments(found.graph, found.id))


class RemovedRoles(BaseModel):
    user: str
    user_id: str
    removed: list[RoleAssignment]
    kept: list[RoleAssignment]
    note: str = AdminRoles.model_fields["note"].default


@action(
    "microsoft.remove_admin_roles",
    destructive=True,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user, keep: (
        f"remove every Entra admin role assigned to {user}"
        + (f", but {', '.join(keep)}" if keep else "")
    ),
)
def remove_admin_roles(context: ActionContext, *, user: UserRef, keep: Keep = []) -> RemovedRoles:  # noqa: B006 - pydantic copies defaults
    """Remove the user's active Entra role assignments but the roles ``keep`` names (by role
    name or assignment id); a re-run finds nothing left to remove."""
    name = "microsoft.remove_admin_roles"
    found = look_up_user(context, name, user)
    graph, upn = found.graph, found.upn
    split = split_by_keep(
        name,
        keep,
        _assignments(graph, found.id),
        keys=lambda r: (r.id, r.role, r.role_id, r.group or ""),
        label=_label,
        what="admin role",
    )
    # Leaving a group takes every role it holds: a group one of whose roles is kept stays.
    kept_groups = {r.group_id for r in split.kept if r.kind == "group"}
    held = [r for r in split.targets if r.kind == "group" and r.group_id in kept_groups]
    kept = split.kept + held
    left_groups: set[str] = set()

    def remove(role: RoleAssignment) -> None:
        if role.kind == "active":
            graph.call(
                "DELETE",
                "/roleManagement/directory/roleAssignments/{assignment}",
                assignment=role.id,
                allow=(404,),
                what=f"remove the role {role.role} of {upn}",
            )
        elif role.kind == "eligible":
            _remove_eligibility(graph, context, found.id, upn, role)
        elif role.group_id not in left_groups:
            graph.call(
                "DELETE",
                "/groups/{group}/members/{member}/$ref",
                group=str(role.group_id),
                member=found.id,
                allow=(404,),
                what=f"take {upn} out of the group {role.group}",
            )
            left_groups.add(str(role.group_id))

    removals = Removals(name, [r for r in split.targets if r not in held])
    removals.remove_each(remove, label=lambda role: f"role {_label(role)}")
    return RemovedRoles(user=upn, user_id=found.id, removed=removals.removed(), kept=kept)
