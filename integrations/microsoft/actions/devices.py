"""Devices: isolate the user's computer from the network in Defender for Endpoint (and release
it, each the other's undo), and lock, retire or wipe it through Intune.

Defender's isolate and release are not idempotent on their own: a repeat answers 400
``ActiveRequestAlreadyExists`` or queues a duplicate that can complete after a later
release (MicrosoftDocs/microsoft-365-docs#5903). So each action reads the machine's latest
isolation action first and only asks when the machine is not already where it should be.
Intune's remote actions queue a new command on every call; each action reads the device
(its ``managementState`` and ``deviceActionResults``) first and does not queue a command
that is already pending.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from tocsin.actions import ActionContext, action
from tocsin.errors import IntegrationError
from tocsin.integrations.microsoft import CLIENT_SECRET
from tocsin.integrations.microsoft.actions import (
    UserRef,
    failed_items,
    find_user,
    name_key,
    refuse_unknown_keep,
)
from tocsin.integrations.microsoft.client import SERVICE, Graph
from tocsin.integrations.microsoft.defender import DefenderForEndpoint

DeviceRef = Annotated[
    str,
    Field(
        min_length=1,
        max_length=256,
        description="The device's computer name (alice-lt01), its full DNS name, or its "
        "Defender machine id (40 hex digits)",
    ),
]
Comment = Annotated[
    str,
    Field(
        min_length=3,
        max_length=1000,
        description="Why, saved with the action in Defender's action centre (the ticket key "
        "and a sentence)",
    ),
]
IsolationType = Annotated[
    Literal["Full", "Selective"],
    Field(
        description="Full: only Defender's own traffic leaves the device; Selective: Outlook, "
        "Teams and Skype keep working (Windows 10 1709 and later)"
    ),
]

_MACHINE_ID = re.compile(r"^[0-9a-f]{40}$")
_ENDED = frozenset({"Failed", "TimeOut", "Cancelled"})
"""Machine action statuses that left the machine as it was."""


class MachineIsolation(BaseModel):
    """The machine found in Defender, what its isolation was, and the action asked for."""

    device: str
    machine_id: str
    computer_dns_name: str
    health_status: str
    found: str
    """What the machine's isolation was before the call, in words."""
    isolated: bool
    """Whether the machine is isolated (or its isolation queued) after the call."""
    changed: bool
    action_id: str | None
    action_status: str | None
    """Pending until the device picks the action up (it must be online), then Succeeded."""
    isolation_type: str | None
    note: str = ""


def _odata(text: str) -> str:
    return text.replace("'", "''")


def _not_onboarded(name: str, device: str, why: str) -> IntegrationError:
    return IntegrationError(
        name,
        SERVICE,
        f"Defender for Endpoint {why} {device!r}, so it cannot be isolated",
        "check in the Defender portal (Assets → Devices) that the device is onboarded and how "
        "it is named; give its full DNS name or its machine id. A device that is not onboarded "
        "is contained through Intune (intune.lock_device) or taken off the network by hand",
    )


def find_machine(api: DefenderForEndpoint, name: str, device: str) -> dict[str, Any]:
    """The onboarded Defender machine named ``device`` (computer or DNS name, or id)."""
    given = device.strip().lower()
    if _MACHINE_ID.match(given):
        found = api.call(
            "GET", "/machines/{id}", id=given, allow=(404,), what=f"read machine {given}"
        )
        candidates = [found.body] if found.status == 200 and isinstance(found.body, dict) else []
    else:
        query = {"$filter": f"computerDnsName eq '{_odata(given)}'"}
        candidates = list(api.pages("/machines", query=query, what=f"find machine {given}"))
        if not candidates and "." not in given:
            query = {"$filter": f"startswith(computerDnsName,'{_odata(given)}.')"}
            candidates = list(api.pages("/machines", query=query, what=f"find machine {given}"))
    if not candidates:
        raise _not_onboarded(name, device, "has no machine named")
    if len(candidates) > 1:
        # A re-imaged device leaves its old entry behind (Inactive): the active one is it.
        active = [m for m in candidates if m.get("healthStatus") == "Active"]
        if len(active) != 1:
            listed = ", ".join(
                f"{m.get('id')} ({m.get('computerDnsName')}, {m.get('healthStatus')}, last seen "
                f"{m.get('lastSeen')})"
                for m in candidates
            )
            raise IntegrationError(
                name,
                SERVICE,
                f"Defender for Endpoint has {len(candidates)} machines named {device!r}: {listed}",
                "give the machine id of the one to act on",
            )
        candidates = active
    machine = candidates[0]
    status = str(machine.get("onboardingStatus") or "Onboarded")
    if status.lower() != "onboarded":
        raise _not_onboarded(
            name, device, f"sees but has not onboarded (onboardingStatus {status}) machine"
        )
    return machine


def latest_isolation(api: DefenderForEndpoint, machine_id: str) -> dict[str, Any] | None:
    """The machine's latest isolate or release action that did not fail, or None."""
    actions = [
        item
        for item in api.pages(
            "/machineactions",
            query={"$filter": f"machineId eq '{_odata(machine_id)}'"},
            what="read the machine's actions",
        )
        if item.get("type") in ("Isolate", "Unisolate") and item.get("status") not in _ENDED
    ]
    actions.sort(key=lambda item: str(item.get("creationDateTimeUtc") or ""), reverse=True)
    return actions[0] if actions else None


def _described(latest: dict[str, Any] | None) -> str:
    if latest is None:
        return "not isolated"
    isolate = latest.get("type") == "Isolate"
    done = latest.get("status") == "Succeeded"
    scope = f" ({latest.get('scope')})" if isolate and latest.get("scope") else ""
    if done:
        return (
            f"isolated{scope} since {latest.get('lastUpdateDateTimeUtc') or latest.get('creationDateTimeUtc')}"
            if isolate
            else "released from isolation"
        )
    return (
        f"{'isolation' if isolate else 'release'}{scope} already requested, "
        f"{latest.get('status')} (action {latest.get('id')})"
    )


def _set_isolation(
    context: ActionContext,
    name: str,
    device: str,
    comment: str,
    isolate: bool,
    isolation_type: str | None = None,
) -> MachineIsolation:
    api = DefenderForEndpoint.for_action(context, name)
    machine = find_machine(api, name, device)
    machine_id = str(machine["id"])
    wanted = "Isolate" if isolate else "Unisolate"
    latest = latest_isolation(api, machine_id)
    found = _described(latest)
    already = latest.get("type") == wanted if latest else not isolate
    outcome: dict[str, Any] | None = latest if already else None
    note = ""
    if not already:
        body: dict[str, str] = {"Comment": comment}
        if isolate and isolation_type:
            body["IsolationType"] = isolation_type
        path = f"/machines/{{id}}/{wanted.lower()}"
        answer = api.call(
            "POST",
            path,
            id=machine_id,
            json_body=body,
            allow=(400,),
            what=f"{'isolate' if isolate else 'release'} {machine.get('computerDnsName')}",
        )
        if answer.status == 400 and answer.error_code != "ActiveRequestAlreadyExists":
            raise api.error("POST", api.url(path, id=machine_id), answer)
        if answer.status == 400:
            # Another caller (the portal, a second run) got there between our read and our call.
            outcome = latest_isolation(api, machine_id)
            if outcome is None or outcome.get("type") != wanted:
                raise IntegrationError(
                    name,
                    SERVICE,
                    f"Defender for Endpoint is still carrying out another action on "
                    f"{machine.get('computerDnsName')} ({answer.error_message})",
                    "wait for it to finish in the action centre, then run the step again",
                    status_code=400,
                    retryable=True,
                )
            already = True
            found = _described(outcome)
        else:
            outcome = answer.body if isinstance(answer.body, dict) else {}
    if isolate and already and outcome is not None and isolation_type:
        if outcome.get("scope") and outcome.get("scope") != isolation_type:
            note = (
                f"the machine is isolated {outcome.get('scope')}, not {isolation_type}: release "
                "it and isolate it again to change that"
            )
    if isolate and not note:
        note = (
            "a device behind a full-tunnel VPN may lose its connection to Defender once "
            "isolated; release it with defender.release_device"
        )
    return MachineIsolation(
        device=device,
        machine_id=machine_id,
        computer_dns_name=str(machine.get("computerDnsName") or ""),
        health_status=str(machine.get("healthStatus") or ""),
        found=found,
        isolated=isolate,
        changed=not already,
        action_id=str(outcome["id"]) if outcome and outcome.get("id") else None,
        action_status=str(outcome["status"]) if outcome and outcome.get("status") else None,
        isolation_type=str(outcome["scope"])
        if outcome and outcome.get("scope")
        else (isolation_type if isolate else None),
        note=note,
    )


@action(
    "defender.isolate_device",
    destructive=True,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda device, isolation_type: (
        f"isolate {device} from the network in Defender for Endpoint ({isolation_type}; "
        "skipped if already isolated)"
    ),
)
def isolate_device(
    context: ActionContext,
    *,
    device: DeviceRef,
    comment: Comment,
    isolation_type: IsolationType = "Full",
) -> MachineIsolation:
    """Isolate the device from the network (Defender for Endpoint); undone by
    defender.release_device. Needs Machine.Read.All and Machine.Isolate."""
    return _set_isolation(context, "defender.isolate_device", device, comment, True, isolation_type)


@action(
    "defender.release_device",
    destructive=True,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda device: (
        f"release {device} from network isolation in Defender for Endpoint "
        "(skipped if not isolated)"
    ),
)
def release_device(
    context: ActionContext, *, device: DeviceRef, comment: Comment
) -> MachineIsolation:
    """Release the device from isolation (Defender for Endpoint); undone by
    defender.isolate_device. Needs Machine.Read.All and Machine.Isolate."""
    return _set_isolation(context, "defender.release_device", device, comment, False)


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
        query = {"$filter": f"deviceName eq '{_odata(device.strip())}'"}
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
    already_states: frozenset[str],
    body: dict[str, Any] | None = None,
) -> ManagedDeviceAction:
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
    already = state in already_states or bool(pending)
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
    return _remote_action(context, "intune.lock_device", device, user, "remoteLock", frozenset())


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
    return _remote_action(
        context,
        "intune.retire_device",
        device,
        user,
        "retire",
        frozenset({"retirePending", "retireIssued"}),
    )


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
        frozenset({"wipePending", "wipeIssued"}),
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
    graph = Graph.for_action(context, name)
    upn = str(find_user(graph, user)["userPrincipalName"])
    devices = _user_devices(graph, upn)
    keys = [{name_key(d.device), d.device_id.lower()} for d in devices]
    known: set[str] = set().union(*keys)
    refuse_unknown_keep(
        name,
        [entry for entry in keep if name_key(entry) not in known],
        "Intune device",
        [d.device for d in devices],
    )
    wanted = {name_key(entry) for entry in keep}
    kept = [d for d, k in zip(devices, keys, strict=True) if k & wanted]
    retired, failures = [], []
    targets = [d for d in devices if d not in kept]
    for device in targets:
        try:
            retired.append(
                _remote_action(
                    context,
                    name,
                    device.device_id,
                    upn,
                    "retire",
                    frozenset({"retirePending", "retireIssued"}),
                )
            )
        except IntegrationError as error:
            failures.append((f"device {device.device}", error))
    if failures:
        raise failed_items(name, failures, len(targets))
    return RetiredDevices(user=upn, retired=retired, kept=kept)
