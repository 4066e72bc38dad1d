"""Devices in Intune: lock, retire or wipe one, and retire every device of a leaver.

Intune's remote actions queue a new command on every call; each action reads the device
(its ``managementState`` and ``deviceActionResults``) first and does not queue a command
that is already pending. A retired device leaves Intune once it checks in.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, Field

from tocsin.actions import ActionContext, action
from tocsin.errors import IntegrationError
from tocsin.integrations.microsoft import CLIENT_SECRET
from tocsin.integrations.microsoft.actions import (
    UserRef,
    failed_items,
    find_user,
    look_up_user,
    odata_literal,
    split_by_keep,
)
from tocsin.integrations.microsoft.client import SERVICE, Graph

# -- Intune -----------------------------------------------------------------------------------

ManagedDeviceRef = Annotated[
    str | None,
    Field(
        max_length=256,
        description="The device's name in Intune (ALICE-LT01) or its Intune device id; "
        "without it, the user's one enrolled device",
    ),
]
OwnerRef = Annotated[
    str | None,
    Field(
        max_length=256,
        description="The device's user (UPN or object id): finds their enrolled device, or "
        "checks that the named device is theirs",
    ),
]
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_PENDING = frozenset({"pending", "active"})
_UNDER_WAY: dict[str, frozenset[str]] = {
    "remoteLock": frozenset(),
    "retire": frozenset({"retirePending", "retireIssued"}),
    "wipe": frozenset({"wipePending", "wipeIssued"}),
}
"""Each remote command, and the managementState values in which Intune already carries it
out (a lock leaves none: only a lock pending in deviceActionResults counts)."""


class ManagedDeviceAction(BaseModel):
    """The Intune device found, its state before, and the remote action asked for."""

    device: str
    device_id: str
    user: str | None
    operating_system: str
    management_state: str
    """Intune's managementState before the call (managed, retirePending, wipePending...)."""
    found: str
    changed: bool
    """Whether a new command was queued (False: the same command was already pending)."""
    action: str
    action_state: str | None
    """The command's state in deviceActionResults after the call (pending until the device
    checks in; it must be online)."""
    note: str = ""


def _which_device(
    device: str | None, user: str | None, unnamed: str = "the enrolled device"
) -> str:
    """The device as a sentence names it: by name, or ``unnamed``, then whose it is."""
    return f"{device or unnamed}{' of ' + user if user else ''}"


def _need_device_or_user(parameters: Any) -> None:
    if not parameters.device and not parameters.user:
        raise ValueError("give `device` (its name or id), `user` (their enrolled device), or both")


def find_managed_device(
    graph: Graph, name: str, device: str | None, user: str | None
) -> dict[str, Any]:
    """The one Intune device ``device`` names (of ``user`` when given), read in full."""
    what = f"find the Intune device {_which_device(device, user, '')}".strip()
    if device and _GUID.match(device.strip().lower()):
        candidates = [{"id": device.strip().lower()}]
    elif device:
        query = {"$filter": f"deviceName eq '{odata_literal(device.strip())}'"}
        candidates = list(graph.pages("/deviceManagement/managedDevices", query=query, what=what))
    else:
        candidates = list(graph.pages("/users/{user}/managedDevices", user=user, what=what))
    if device and user and candidates and "userPrincipalName" in candidates[0]:
        owner = user.lower()
        candidates = [
            c
            for c in candidates
            if owner in (str(c.get("userPrincipalName", "")).lower(), str(c.get("userId", "")))
        ]
    if not candidates:
        raise IntegrationError(
            name,
            SERVICE,
            f"Intune has no enrolled device {_which_device(device, user, '')}".rstrip(),
            "check in the Intune admin centre (Devices → All devices) that the device is enrolled "
            "and how it is named; a device that is not enrolled cannot be locked or wiped remotely",
        )
    if len(candidates) > 1:
        listed = ", ".join(
            f"{c.get('deviceName')} ({c.get('id')}, {c.get('operatingSystem')}, last sync "
            f"{c.get('lastSyncDateTime')})"
            for c in candidates
        )
        raise IntegrationError(
            name,
            SERVICE,
            f"Intune has {len(candidates)} devices for {device or user}: {listed}",
            "name the device to act on by its Intune id",
        )
    answer = graph.call(
        "GET",
        "/deviceManagement/managedDevices/{id}",
        id=candidates[0]["id"],
        allow=(404,),
        what=what,
    )
    found = answer.body if answer.status == 200 and isinstance(answer.body, dict) else None
    owners = (
        {str(found.get(k, "")).lower() for k in ("userPrincipalName", "userId")} if found else set()
    )
    if found is None or (user and user.lower() not in owners):
        raise IntegrationError(
            name,
            SERVICE,
            f"Intune has no enrolled device {device or candidates[0]['id']}"
            + (f" of {user}" if user and found is not None else ""),
            "check the device id in the Intune admin centre (Devices → All devices)",
        )
    return found


def _remote_action(
    context: ActionContext,
    name: str,
    device: str | None,
    user: str | None,
    command: str,
    body: dict[str, Any] | None = None,
) -> ManagedDeviceAction:
    """Queue ``command`` on the device unless Intune already carries it out (its state, or
    the same command pending), then read the device back."""
    graph = Graph.for_action(context, name)
    found = find_managed_device(graph, name, device, user)
    state = str(found.get("managementState") or "managed")
    pending = [
        result
        for result in found.get("deviceActionResults") or []
        if isinstance(result, dict)
        and result.get("actionName") == command
        and result.get("actionState") in _PENDING
    ]
    already = state in _UNDER_WAY[command] or bool(pending)
    description = f"{state}" + (f", {command} already pending" if pending else "")
    if not already:
        graph.call(
            "POST",
            f"/deviceManagement/managedDevices/{{id}}/{command}",
            id=found["id"],
            json_body=body,
            what=f"{command} {found.get('deviceName')}",
        )
        after = graph.call(
            "GET", "/deviceManagement/managedDevices/{id}", id=found["id"], what="read it back"
        ).body
        results = after.get("deviceActionResults") if isinstance(after, dict) else None
        pending = [
            r for r in results or [] if isinstance(r, dict) and r.get("actionName") == command
        ]
    return ManagedDeviceAction(
        device=str(found.get("deviceName") or ""),
        device_id=str(found["id"]),
        user=found.get("userPrincipalName"),
        operating_system=str(found.get("operatingSystem") or ""),
        management_state=state,
        found=description,
        changed=not already,
        action=command,
        action_state=str(pending[-1].get("actionState")) if pending else None,
        note="the device carries the command out when it next checks in; it must be online",
    )


@action(
    "intune.lock_device",
    destructive=True,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    check=_need_device_or_user,
    describe=lambda device, user: (
        f"lock {_which_device(device, user)} remotely "
        "through Intune (skipped while a lock is pending)"
    ),
)
def lock_device(
    context: ActionContext, *, device: ManagedDeviceRef = None, user: OwnerRef = None
) -> ManagedDeviceAction:
    """Lock the device's screen remotely (Intune remoteLock); the user unlocks it with their
    PIN or password. Idempotent in effect: a lock already pending is not queued again, and
    locking a locked device changes nothing."""
    return _remote_action(context, "intune.lock_device", device, user, "remoteLock")


@action(
    "intune.retire_device",
    destructive=True,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    check=_need_device_or_user,
    describe=lambda device, user: (
        f"retire {_which_device(device, user)} in Intune: "
        "remove company data, apps and profiles, keep personal data (not undoable)"
    ),
)
def retire_device(
    context: ActionContext, *, device: ManagedDeviceRef = None, user: OwnerRef = None
) -> ManagedDeviceAction:
    """Retire the device (Intune retire): company data, apps and profiles go, personal data
    stays, and the device leaves management; it cannot be undone. A re-run while the retire
    is pending does nothing; once retired the device is gone from Intune and a re-run fails
    saying so."""
    return _remote_action(context, "intune.retire_device", device, user, "retire")


@action(
    "intune.wipe_device",
    destructive=True,
    idempotent=False,
    needs_approval=True,
    secrets=(CLIENT_SECRET,),
    check=_need_device_or_user,
    describe=lambda device, user, keep_user_data, keep_enrollment_data: (
        f"WIPE {_which_device(device, user)} through "
        "Intune: factory reset"
        + (", keeping user data" if keep_user_data else ", erasing user data")
        + (" and the enrolment" if keep_enrollment_data else "")
        + " (cannot be undone)"
    ),
)
def wipe_device(
    context: ActionContext,
    *,
    device: ManagedDeviceRef = None,
    user: OwnerRef = None,
    keep_user_data: Annotated[
        bool, Field(description="Keep the user's accounts and data (Windows only)")
    ] = False,
    keep_enrollment_data: Annotated[
        bool,
        Field(description="Keep the device enrolled in Entra ID and Intune (Windows only)"),
    ] = False,
) -> ManagedDeviceAction:
    """Wipe the device back to factory settings (Intune wipe); it cannot be undone, so a
    runbook puts an approval gate before it. Not idempotent: a re-run while the wipe is
    pending does nothing, but a device that finished wiping and enrolled again under the
    same name would be wiped again."""
    return _remote_action(
        context,
        "intune.wipe_device",
        device,
        user,
        "wipe",
        {"keepEnrollmentData": keep_enrollment_data, "keepUserData": keep_user_data},
    )


# -- a leaver's devices -----------------------------------------------------------------------


class UserDevice(BaseModel):
    device: str
    device_id: str
    operating_system: str
    management_state: str
    last_sync: str | None


class UserDevices(BaseModel):
    user: str
    devices: list[UserDevice]
    count: int


def _user_devices(graph: Graph, user: str) -> list[UserDevice]:
    listed = graph.pages(
        "/users/{user}/managedDevices", user=user, what=f"list the Intune devices of {user}"
    )
    return [
        UserDevice(
            device=str(d.get("deviceName") or ""),
            device_id=str(d.get("id")),
            operating_system=str(d.get("operatingSystem") or ""),
            management_state=str(d.get("managementState") or "managed"),
            last_sync=d.get("lastSyncDateTime"),
        )
        for d in listed
    ]


@action(
    "intune.list_user_devices",
    destructive=False,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user: f"list the devices of {user} enrolled in Intune",
)
def list_user_devices(context: ActionContext, *, user: UserRef) -> UserDevices:
    """List the user's devices enrolled in Intune (``GET /users/{id}/managedDevices``)."""
    graph = Graph.for_action(context, "intune.list_user_devices")
    upn = str(find_user(graph, user)["userPrincipalName"])
    devices = _user_devices(graph, upn)
    return UserDevices(user=upn, devices=devices, count=len(devices))


class RetiredDevices(BaseModel):
    user: str
    retired: list[ManagedDeviceAction]
    """Each device's outcome: ``changed`` false when its retire was already pending."""
    kept: list[UserDevice]
    note: str = (
        "each device removes the company data and leaves Intune when it next checks in; "
        "one that never does stays in Devices → All devices until it is deleted there"
    )


@action(
    "intune.remove_user_devices",
    destructive=True,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user, keep: (
        f"retire every device of {user} enrolled in Intune"
        + (f" but {', '.join(keep)}" if keep else "")
        + ": company data, apps and profiles go, personal data stays (not undoable)"
    ),
)
def remove_user_devices(
    context: ActionContext,
    *,
    user: UserRef,
    keep: Annotated[
        list[str],
        Field(
            description="Devices to leave alone, by name or Intune id; every entry must name "
            "one of the user's devices, or nothing is retired"
        ),
    ] = [],  # noqa: B006 - pydantic copies defaults
) -> RetiredDevices:
    """Retire each of the user's Intune devices (a leaver's), but those ``keep`` names; a
    device whose retire is already pending is not asked again, so a re-run changes nothing.
    One device failing does not stop the others; the error then names each one."""
    name = "intune.remove_user_devices"
    found = look_up_user(context, name, user)
    upn = found.upn
    devices = _user_devices(found.graph, upn)
    split = split_by_keep(
        name,
        keep,
        devices,
        keys=lambda d: (d.device, d.device_id),
        label=lambda d: d.device,
        what="Intune device",
    )
    kept, targets = split.kept, split.targets
    retired, failures = [], []
    for device in targets:
        try:
            retired.append(_remote_action(context, name, device.device_id, upn, "retire"))
        except IntegrationError as error:
            failures.append((f"device {device.device}", error))
    if failures:
        raise failed_items(name, failures, len(targets))
    return RetiredDevices(user=upn, retired=retired, kept=kept)
