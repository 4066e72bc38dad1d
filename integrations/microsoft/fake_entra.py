"""The fake's directory roles: ``/roleManagement/directory/roleAssignments`` of Graph v1.0.

- ``GET /roleManagement/directory/roleAssignments?$filter=principalId eq '...'`` (and
  ``roleDefinitionId eq '...'``), ``$expand=roleDefinition`` embeds each assignment's role;
  without a ``$filter`` every assignment of the tenant;
- ``DELETE /roleManagement/directory/roleAssignments/{id}``: 204, then 404
  ``Request_ResourceNotFound``.

PIM and groups (the roles ``roleAssignments`` does not show):

- ``GET /roleManagement/directory/roleEligibilitySchedules?$filter=principalId eq '...'``
  (``$expand=roleDefinition``): the roles the user may activate through PIM;
- ``POST /roleManagement/directory/roleEligibilityScheduleRequests`` with ``action:
  adminRemove``: 201, the eligibility gone; 400 ``RoleAssignmentDoesNotExist`` for one that
  is not there (unconfirmed: the code and wording of that 400);
- ``GET /users/{id}/memberOf/microsoft.graph.group``: the user's groups, with
  ``isAssignableToRole`` (a role-assignable group's role assignments have the group as
  ``principalId``);
- ``DELETE /groups/{id}/members/{user}/$ref``: 204, then 404; a role-assignable group also
  needs ``RoleManagement.ReadWrite.Directory``.

``password_role_check``: a password reset also needs an Entra role on the app (User
Administrator; Privileged Authentication Administrator for a user holding a role).

Reading needs ``RoleManagement.Read.Directory`` (or ``RoleManagement.ReadWrite.Directory``,
``Directory.Read.All``); deleting ``RoleManagement.ReadWrite.Directory``: otherwise 403
``Authorization_RequestDenied``. Kept apart from ``fake`` so that it grows on its own; the
fake dispatches ``roleManagement`` here.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tocsin.sandbox.fake_service import Reply

if TYPE_CHECKING:
    from tocsin.integrations.microsoft.fake import FakeMicrosoft, _Token

# Built-in role template ids, as Entra gives them (the same in every tenant).
ROLE_TEMPLATES = {
    "Global Administrator": "62e90394-69f5-4237-9190-012177145e10",
    "User Administrator": "fe930be7-5e62-47db-91af-98c3a49a38b1",
    "Exchange Administrator": "29232cdf-9323-42fd-ade2-1d097af3e4de",
    "Privileged Authentication Administrator": "7be44c8a-adaf-4e2a-84d6-ab2649e08a13",
    "Reports Reader": "4a5d8f65-41da-4de4-8968-e035b65339cf",
}
ATTACKER_ROLE = "Exchange Administrator"
"""The role the attacker gave the phished user (to read other mailboxes)."""
GENUINE_ROLE = "Reports Reader"
"""The role the user held before (usage reports for their team)."""


def role_definition(name: str) -> dict[str, Any]:
    template = ROLE_TEMPLATES[name]
    return {
        "id": template,
        "templateId": template,
        "displayName": name,
        "isBuiltIn": True,
        "isEnabled": True,
    }


def seeded_assignments(user_id: str) -> list[dict[str, Any]]:
    """The phished user's active role assignments: one genuine, one the attacker's."""
    return [
        {
            "id": f"lAPpYvVpN0KRkAEhdxReE{ROLE_TEMPLATES[name][:8]}-{user_id[:8]}",
            "principalId": user_id,
            "roleDefinitionId": ROLE_TEMPLATES[name],
            "directoryScopeId": "/",
        }
        for name in (GENUINE_ROLE, ATTACKER_ROLE)
    ]


ATTACKER_ELIGIBLE_ROLE = "Privileged Authentication Administrator"
"""The role the attacker made the phished user eligible for in PIM (activated at will)."""
ATTACKER_GROUP = "Helpdesk Admins"
"""A role-assignable group the attacker added the phished user to; it holds User Administrator."""
ATTACKER_GROUP_ROLE = "User Administrator"
STAFF_GROUP = "Broker office staff"
"""An ordinary group of the user's: no role, never touched."""


def seeded_eligibilities(user_id: str) -> list[dict[str, Any]]:
    """The phished user's PIM eligibility: the attacker's."""
    return [
        {
            "id": f"eligible-{ROLE_TEMPLATES[ATTACKER_ELIGIBLE_ROLE][:8]}-{user_id[:8]}",
            "principalId": user_id,
            "roleDefinitionId": ROLE_TEMPLATES[ATTACKER_ELIGIBLE_ROLE],
            "directoryScopeId": "/",
            "memberType": "Direct",
            "status": "Provisioned",
            "scheduleInfo": {
                "startDateTime": "2026-11-30T21:02:00Z",
                "expiration": {"type": "noExpiration"},
            },
        }
    ]


def seeded_groups(user_id: str) -> list[dict[str, Any]]:
    """The phished user's groups: the attacker's role-assignable one and the office's own."""
    return [
        {
            "id": f"group-helpdesk-{user_id[:8]}",
            "displayName": ATTACKER_GROUP,
            "isAssignableToRole": True,
            "securityEnabled": True,
            "members": [user_id],
        },
        {
            "id": f"group-staff-{user_id[:8]}",
            "displayName": STAFF_GROUP,
            "isAssignableToRole": False,
            "securityEnabled": True,
            "members": [user_id],
        },
    ]


def seeded_group_assignments(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The role the attacker's group holds."""
    return [
        {
            "id": f"lAPpYvVpN0KRkAEhdxReE{ROLE_TEMPLATES[ATTACKER_GROUP_ROLE][:8]}-{g['id'][-8:]}",
            "principalId": g["id"],
            "roleDefinitionId": ROLE_TEMPLATES[ATTACKER_GROUP_ROLE],
            "directoryScopeId": "/",
        }
        for g in groups
        if g["displayName"] == ATTACKER_GROUP
    ]


def _with_definitions(
    items: list[dict[str, Any]], query: Mapping[str, str]
) -> list[dict[str, Any]]:
    if "roleDefinition" in query.get("$expand", ""):
        names = {template: name for name, template in ROLE_TEMPLATES.items()}
        for item in items:
            item["roleDefinition"] = role_definition(
                names.get(item["roleDefinitionId"], "Global Administrator")
            )
    return items


_READ_ROLES = {
    "RoleManagement.Read.Directory",
    "RoleManagement.Read.All",
    "RoleManagement.ReadWrite.Directory",
    "Directory.Read.All",
}


def _eligibility(
    fake: FakeMicrosoft,
    caller: _Token,
    method: str,
    parts: list[str],
    query: Mapping[str, str],
    body: Any,
) -> Reply:
    from tocsin.integrations.microsoft.fake import GraphError

    if parts[2] == "roleEligibilitySchedules" and len(parts) == 3 and method == "GET":
        fake._need(caller, "directory", _READ_ROLES | {"RoleEligibilitySchedule.Read.Directory"})
        principal = re.search(r"principalId eq '([^']+)'", query.get("$filter", ""))
        found = [
            copy.deepcopy(e)
            for e in fake.tenant.role_eligibilities
            if principal is None or e["principalId"] == principal.group(1)
        ]
        return Reply(
            200,
            {
                "@odata.context": f"{fake.url}/v1.0/$metadata#roleManagement/directory/roleEligibilitySchedules",
                "value": _with_definitions(found, query),
            },
        )
    if parts[2] == "roleEligibilityScheduleRequests" and len(parts) == 3 and method == "POST":
        fake._need(
            caller,
            "directory",
            {"RoleEligibilitySchedule.ReadWrite.Directory", "RoleManagement.ReadWrite.Directory"},
        )
        if not isinstance(body, dict) or body.get("action") != "adminRemove":
            raise GraphError(400, "BadRequest", "Only adminRemove requests are faked.")
        if not body.get("justification"):
            raise GraphError(400, "JustificationRule", "Justification is required.")
        match = [
            e
            for e in fake.tenant.role_eligibilities
            if e["principalId"] == body.get("principalId")
            and e["roleDefinitionId"] == body.get("roleDefinitionId")
            and e["directoryScopeId"] == body.get("directoryScopeId", "/")
        ]
        if not match:
            # Unconfirmed: the code and message Graph gives for an eligibility that is gone.
            raise GraphError(
                400, "RoleAssignmentDoesNotExist", "The Role assignment does not exist."
            )
        fake.tenant.role_eligibilities.remove(match[0])
        return Reply(
            201,
            {
                "id": f"request-{match[0]['id']}",
                "action": "adminRemove",
                "status": "Revoked",
                "principalId": body["principalId"],
                "roleDefinitionId": body["roleDefinitionId"],
                "directoryScopeId": body.get("directoryScopeId", "/"),
                "justification": body["justification"],
            },
        )
    raise GraphError(405, "Request_BadRequest", f"{method} is not supported here.")


def member_of(
    fake: FakeMicrosoft, caller: _Token, user: Mapping[str, Any], query: Mapping[str, str]
) -> Reply:
    """``GET /users/{id}/memberOf/microsoft.graph.group``: the user's groups."""
    fake._need(
        caller, "directory", {"GroupMember.Read.All", "Group.Read.All", "Directory.Read.All"}
    )
    groups = [
        {k: v for k, v in g.items() if k != "members"}
        for g in fake.tenant.groups
        if user["id"] in g["members"]
    ]
    select = query.get("$select")
    if select:
        names = {name.strip() for name in select.split(",")} | {"id"}
        groups = [{k: v for k, v in g.items() if k in names} for g in groups]
    return Reply(
        200,
        {
            "@odata.context": f"{fake.url}/v1.0/$metadata#groups",
            "value": [{"@odata.type": "#microsoft.graph.group", **g} for g in groups],
        },
    )


def groups_route(fake: FakeMicrosoft, caller: _Token, method: str, parts: list[str]) -> Reply:
    """``DELETE /groups/{id}/members/{user}/$ref``: the user out of the group."""
    from tocsin.integrations.microsoft.fake import GraphError

    if len(parts) != 5 or parts[2] != "members" or parts[4] != "$ref" or method != "DELETE":
        raise GraphError(405, "Request_BadRequest", f"{method} is not supported here.")
    fake._need(caller, "directory", {"GroupMember.ReadWrite.All", "Group.ReadWrite.All"})
    group = next((g for g in fake.tenant.groups if g["id"] == parts[1]), None)
    if group is None:
        raise fake._not_found(parts[1])
    if group.get("isAssignableToRole"):
        fake._need(caller, "directory", {"RoleManagement.ReadWrite.Directory"})
    if parts[3] not in group["members"]:
        raise fake._not_found(parts[3])
    group["members"].remove(parts[3])
    return Reply(204)


def password_role_check(fake: FakeMicrosoft, caller: _Token, user: Mapping[str, Any]) -> None:
    """Graph's refusal of a password reset by an app whose service principal lacks the Entra
    role for it: User Administrator, or Privileged Authentication Administrator when the
    user holds an admin role (the permission alone is not enough)."""
    from tocsin.integrations.microsoft.fake import GraphError

    app = fake.apps.get(caller.client_id)
    held = app.entra_roles if app is not None else frozenset()
    admin = any(a["principalId"] == user["id"] for a in fake.tenant.role_assignments)
    enough = {"Privileged Authentication Administrator"} | (
        set() if admin else {"User Administrator"}
    )
    if not held & enough:
        raise GraphError(
            403,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        )


def role_management(
    fake: FakeMicrosoft,
    caller: _Token,
    method: str,
    parts: list[str],
    query: Mapping[str, str],
    body: Any = None,
) -> Reply:
    """``/roleManagement/...`` (``parts`` from ``roleManagement`` on); the fake holds its lock."""
    from tocsin.integrations.microsoft.fake import GraphError

    if parts[:3] in (
        ["roleManagement", "directory", "roleEligibilitySchedules"],
        ["roleManagement", "directory", "roleEligibilityScheduleRequests"],
    ):
        return _eligibility(fake, caller, method, parts, query, body)
    if parts[:3] != ["roleManagement", "directory", "roleAssignments"]:
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{parts[-1]}'.")
    assignments = fake.tenant.role_assignments
    if len(parts) == 3 and method == "GET":
        fake._need(
            caller,
            "directory",
            {
                "RoleManagement.Read.Directory",
                "RoleManagement.Read.All",
                "RoleManagement.ReadWrite.Directory",
                "Directory.Read.All",
            },
        )
        wanted = query.get("$filter", "")
        principal = re.search(r"principalId eq '([^']+)'", wanted)
        role = re.search(r"roleDefinitionId eq '([^']+)'", wanted)
        if wanted and principal is None and role is None:
            raise GraphError(400, "BadRequest", f"Invalid filter clause: {wanted}")
        found = [
            copy.deepcopy(a)
            for a in assignments
            if (principal is None or a["principalId"] == principal.group(1))
            and (role is None or a["roleDefinitionId"] == role.group(1))
        ]
        if "roleDefinition" in query.get("$expand", ""):
            names = {template: name for name, template in ROLE_TEMPLATES.items()}
            for assignment in found:
                assignment["roleDefinition"] = role_definition(
                    names.get(assignment["roleDefinitionId"], "Global Administrator")
                )
        return Reply(
            200,
            {
                "@odata.context": f"{fake.url}/v1.0/$metadata#roleManagement/directory/roleAssignments",
                "value": found,
            },
        )
    if len(parts) == 4 and method == "DELETE":
        fake._need(caller, "directory", {"RoleManagement.ReadWrite.Directory"})
        gone = [a for a in assignments if a["id"] == parts[3]]
        if not gone:
            raise fake._not_found(parts[3])
        assignments.remove(gone[0])
        return Reply(204)
    raise GraphError(405, "Request_BadRequest", f"{method} is not supported here.")
