"""The fake's directory roles: ``/roleManagement/directory/roleAssignments`` of Graph v1.0.

- ``GET /roleManagement/directory/roleAssignments?$filter=principalId eq '...'`` (and
  ``roleDefinitionId eq '...'``), ``$expand=roleDefinition`` embeds each assignment's role;
  without a ``$filter`` every assignment of the tenant;
- ``DELETE /roleManagement/directory/roleAssignments/{id}``: 204, then 404
  ``Request_ResourceNotFound``.

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
) -> Reply:
    """``/roleManagement/...`` (``parts`` from ``roleManagement`` on); the fake holds its lock."""
    from tocsin.integrations.microsoft.fake import GraphError

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
