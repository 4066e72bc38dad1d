"""Which application permission each Graph call needs, so that a 403 can name it.

The least-privileged application permissions of each call's Graph reference page
(shared/reference/microsoft-365-compromise.md); where a page lists several, the first is
the least privileged and the others also work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Needed:
    """The application permissions a call needs (all of them), those that also do, and a note."""

    permissions: tuple[str, ...]
    also: tuple[str, ...] = ()
    note: str = ""

    def describe(self) -> str:
        text = " and ".join(self.permissions)
        if self.also:
            text += f" (or {' or '.join(self.also)})"
        return text


# (method, path pattern from the version on, what it needs); first match wins.
ROUTES: tuple[tuple[str, re.Pattern[str], Needed], ...] = tuple(
    (method, re.compile(pattern), needed)
    for method, pattern, needed in (
        (
            "PATCH",
            r"^/users/[^/]+$",
            Needed(
                ("User.EnableDisableAccount.All", "User.Read.All"),
                also=("User.ReadWrite.All",),
                note="A user holding an admin role also needs the app's service principal to "
                "hold an Entra role at least as high (Privileged Authentication Administrator)",
            ),
        ),
        ("GET", r"^/users/[^/]+$", Needed(("User.Read.All",), also=("Directory.Read.All",))),
        (
            "POST",
            r"^/users/[^/]+/revokeSignInSessions$",
            Needed(("User.RevokeSessions.All",), also=("User.ReadWrite.All",)),
        ),
        (
            "GET",
            r"^/users/[^/]+/authentication/",
            Needed(
                ("UserAuthenticationMethod.Read.All",),
                also=("UserAuthenticationMethod.ReadWrite.All",),
            ),
        ),
        (
            "DELETE",
            r"^/users/[^/]+/authentication/",
            Needed(
                ("UserAuthenticationMethod.ReadWrite.All",),
                note="Deleting the methods of an admin also needs the app's service principal to "
                "hold the Privileged Authentication Administrator role",
            ),
        ),
        (
            "GET",
            r"^/users/[^/]+/mailFolders/inbox/messageRules",
            Needed(("MailboxSettings.Read",), also=("MailboxSettings.ReadWrite",)),
        ),
        (
            "DELETE",
            r"^/users/[^/]+/mailFolders/inbox/messageRules/",
            Needed(("MailboxSettings.ReadWrite",)),
        ),
        ("GET", r"^/users/[^/]+/mailFolders", Needed(("Mail.ReadBasic.All",), also=("Mail.Read",))),
        (
            "GET",
            r"^/auditLogs/signIns",
            Needed(
                ("AuditLog.Read.All", "Directory.Read.All"),
                note="Graph needs both, and the tenant needs Entra ID P1 or P2",
            ),
        ),
        (
            "GET",
            r"^/oauth2PermissionGrants",
            Needed(("DelegatedPermissionGrant.Read.All",), also=("Directory.Read.All",)),
        ),
        (
            "DELETE",
            r"^/oauth2PermissionGrants/",
            Needed(("DelegatedPermissionGrant.ReadWrite.All",)),
        ),
        (
            "GET",
            r"^/servicePrincipals/",
            Needed(("Application.Read.All",), also=("Directory.Read.All",)),
        ),
        (
            "GET",
            r"^/roleManagement/directory/roleAssignments$",
            Needed(
                ("RoleManagement.Read.Directory",),
                also=("RoleManagement.ReadWrite.Directory", "Directory.Read.All"),
            ),
        ),
        (
            "DELETE",
            r"^/roleManagement/directory/roleAssignments/",
            Needed(("RoleManagement.ReadWrite.Directory",)),
        ),
        (
            "GET",
            r"^/roleManagement/directory/roleEligibilitySchedules$",
            Needed(
                ("RoleManagement.Read.Directory",),
                also=(
                    "RoleEligibilitySchedule.Read.Directory",
                    "RoleManagement.ReadWrite.Directory",
                ),
            ),
        ),
        (
            "POST",
            r"^/roleManagement/directory/roleEligibilityScheduleRequests$",
            Needed(
                ("RoleManagement.ReadWrite.Directory",),
                also=("RoleEligibilitySchedule.ReadWrite.Directory",),
            ),
        ),
        (
            "GET",
            r"^/users/[^/]+/memberOf",
            Needed(("GroupMember.Read.All",), also=("Group.Read.All", "Directory.Read.All")),
        ),
        (
            "DELETE",
            r"^/groups/[^/]+/members/[^/]+/\$ref$",
            Needed(
                ("GroupMember.ReadWrite.All",),
                also=("Group.ReadWrite.All",),
                note="A role-assignable group also needs RoleManagement.ReadWrite.Directory",
            ),
        ),
        (
            "POST",
            r"^/identityProtection/riskyUsers/confirmCompromised$",
            Needed(
                ("IdentityRiskyUser.ReadWrite.All",),
                note="Identity Protection needs Entra ID P2 in the tenant",
            ),
        ),
        # Intune's managed devices (devices.py; Defender's permissions are in defender.py).
        (
            "POST",
            r"^/deviceManagement/managedDevices/[^/]+/(remoteLock|retire|wipe)$",
            Needed(
                ("DeviceManagementManagedDevices.PrivilegedOperations.All",),
                note="The tenant needs an Intune licence, and the device must be online to "
                "carry the command out",
            ),
        ),
        (
            "GET",
            r"^/(deviceManagement|users/[^/]+)/managedDevices",
            Needed(
                ("DeviceManagementManagedDevices.Read.All",),
                also=("DeviceManagementManagedDevices.ReadWrite.All",),
            ),
        ),
    )
)


def permission_for(method: str, path: str) -> Needed | None:
    """What ``method path`` (from the version on, query allowed) needs; None if unknown."""
    bare = path.split("?", 1)[0]
    for route_method, pattern, needed in ROUTES:
        if route_method == method.upper() and pattern.search(bare):
            return needed
    return None
