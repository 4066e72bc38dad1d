"""The fake tenant's devices: Defender for Endpoint's machines and machine actions, and
Intune's managed devices (Graph), served by ``FakeMicrosoft`` (fake.py dispatches here).

Defender for Endpoint (``/api``, its own token audience and error shape
``{"error": {"code", "message", "target"}}``):

- ``GET /api/machines?$filter=computerDnsName eq '...'`` (or ``startswith(computerDnsName,'...')``),
  ``GET /api/machines/{id}`` (404 ``ResourceNotFound``): ``Machine.Read.All``;
- ``GET /api/machineactions?$filter=machineId eq '...'``, ``GET /api/machineactions/{id}``;
- ``POST /api/machines/{id}/isolate`` ``{"Comment", "IsolationType"}`` and ``.../unisolate``
  ``{"Comment"}``: 201 and the MachineAction (``Pending``; it is ``Succeeded`` on the next
  read while the machine is online, ``healthStatus`` Active). ``Machine.Isolate``. While
  the machine's latest isolation action is of the same kind, or any isolation action is
  pending, 400 ``ActiveRequestAlreadyExists`` "Action is already in progress";
  a missing Comment 400 ``MissingRequiredParameter``;
- a token without the role 403 ``Forbidden`` naming it; ``throttle_defender(n)`` answers
  the next n requests 429 with ``Retry-After``.

Intune (Graph ``/v1.0``): ``GET /deviceManagement/managedDevices[?$filter=deviceName eq
'...']``, ``GET .../managedDevices/{id}`` (with ``deviceActionResults``), ``GET
/users/{id}/managedDevices`` (``DeviceManagementManagedDevices.Read.All``); ``POST
.../managedDevices/{id}/remoteLock|retire|wipe`` 204
(``DeviceManagementManagedDevices.PrivilegedOperations.All``), each adding a pending
``deviceActionResults`` entry; retire and wipe set ``managementState`` to
``retirePending`` / ``wipePending``. Graph's ``throttle(n)`` applies.
"""

from __future__ import annotations

import copy
import re
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from tocsin.integrations.microsoft.fake import GraphError, _id, _iso
from tocsin.sandbox.fake_service import ReceivedRequest, Reply

if TYPE_CHECKING:
    from tocsin.integrations.microsoft.fake import FakeMicrosoft, _Token

DEFENDER_RESOURCE = "https://api.securitycenter.microsoft.com"
_ENDED = ("Failed", "TimeOut", "Cancelled")
_INTUNE_COMMANDS = {
    "remoteLock": None,
    "retire": "retirePending",
    "wipe": "wipePending",
}
_WIPE_OPTIONS = ("keepEnrollmentData", "keepUserData", "macOsUnlockCode", "persistEsimDataPlan")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def defender_error(status: int, code: str, message: str) -> Reply:
    """Defender for Endpoint's error body; ``target`` is its correlation id."""
    return Reply(status, {"error": {"code": code, "message": message, "target": str(uuid.uuid4())}})


# -- Defender for Endpoint --------------------------------------------------------------------


def defender_request(fake: FakeMicrosoft, request: ReceivedRequest) -> Reply:
    """One request to ``/api/...`` of Defender for Endpoint."""
    throttled = fake._throttled(fake._throttle_defender)
    if throttled is not None:  # Defender's own body, with the throttle's Retry-After
        quota = defender_error(
            429,
            "TooManyRequests",
            "Response represents reaching quota limit either by number of requests or by CPU.",
        )
        return Reply(429, quota.body, throttled.headers)
    with fake.lock:
        token = fake._tokens.get(request.bearer_token() or "")
    if token is None or token.expires_at <= time.time():
        return defender_error(401, "Unauthorized", "Unauthorized (invalid or expired token).")
    if token.audience not in (fake.url, DEFENDER_RESOURCE):
        return defender_error(401, "Unauthorized", "The token's audience is not this API.")
    parts = request.path[len("/api/") :].split("/")
    query = {k: v[0] for k, v in request.query.items()}
    with fake.lock:
        _complete_actions(fake)
        if request.method == "GET" and parts[0] == "machines":
            refused = _need(token, {"Machine.Read.All", "Machine.ReadWrite.All"})
            return refused or _machines(fake, parts[1:], query)
        if request.method == "GET" and parts[0] == "machineactions":
            refused = _need(token, {"Machine.Read.All", "Machine.ReadWrite.All"})
            return refused or _machine_actions(fake, parts[1:], query)
        if (
            request.method == "POST"
            and len(parts) == 3
            and parts[0] == "machines"
            and parts[2] in ("isolate", "unisolate")
        ):
            refused = _need(token, {"Machine.Isolate"})
            if refused is not None:
                return refused
            try:
                body = request.json() if request.body else {}
            except ValueError:
                body = None
            return _isolation(fake, parts[1], parts[2], body)
    return defender_error(404, "NotFound", f"No such endpoint {request.path}.")


def _need(token: _Token, any_of: set[str]) -> Reply | None:
    if token.roles & any_of:
        return None
    # Unconfirmed: Defender's 403 message for a token without the role.
    return defender_error(
        403,
        "Forbidden",
        "The application does not have any of the required application roles "
        f"({', '.join(sorted(any_of))}) to access the resource.",
    )


def _unquoted(text: str) -> str:
    return text.replace("''", "'")


def _machine(fake: FakeMicrosoft, machine_id: str) -> dict[str, Any] | None:
    for machine in fake.tenant.machines:
        if machine["id"] == machine_id.lower():
            return machine
    return None


def _machines(fake: FakeMicrosoft, rest: list[str], query: Mapping[str, str]) -> Reply:
    if rest:
        machine = _machine(fake, rest[0])
        if machine is None:
            return defender_error(404, "ResourceNotFound", f"Machine {rest[0]} was not found")
        return Reply(200, copy.deepcopy(machine))
    wanted = query.get("$filter", "")
    equal = re.fullmatch(r"computerDnsName eq '((?:[^']|'')*)'", wanted, re.IGNORECASE)
    prefix = re.fullmatch(
        r"startswith\(computerDnsName,\s*'((?:[^']|'')*)'\)", wanted, re.IGNORECASE
    )
    if wanted and not (equal or prefix):
        return defender_error(400, "ODataError", f"Invalid filter clause: {wanted}")
    found = [
        m
        for m in fake.tenant.machines
        if (equal is None or m["computerDnsName"] == _unquoted(equal.group(1)).lower())
        and (prefix is None or m["computerDnsName"].startswith(_unquoted(prefix.group(1)).lower()))
    ]
    return Reply(
        200,
        {
            "@odata.context": f"{fake.url}/api/$metadata#Machines",
            "value": copy.deepcopy(found),
        },
    )


def _machine_actions(fake: FakeMicrosoft, rest: list[str], query: Mapping[str, str]) -> Reply:
    actions = fake.tenant.machine_actions
    if rest:
        found = [a for a in actions if a["id"] == rest[0]]
        if not found:
            return defender_error(404, "ResourceNotFound", f"MachineAction {rest[0]} was not found")
        return Reply(200, copy.deepcopy(found[0]))
    wanted = query.get("$filter", "")
    machine = re.fullmatch(r"machineId eq '([^']*)'", wanted)
    if wanted and machine is None:
        return defender_error(400, "ODataError", f"Invalid filter clause: {wanted}")
    chosen = [a for a in actions if machine is None or a["machineId"] == machine.group(1)]
    chosen.sort(key=lambda a: a["creationDateTimeUtc"], reverse=True)
    return Reply(
        200,
        {
            "@odata.context": f"{fake.url}/api/$metadata#MachineActions",
            "value": copy.deepcopy(chosen),
        },
    )


def _complete_actions(fake: FakeMicrosoft) -> None:
    """An online machine carries its pending actions out by the next request."""
    for action in fake.tenant.machine_actions:
        if action["status"] not in ("Pending", "InProgress"):
            continue
        machine = _machine(fake, action["machineId"])
        if machine is not None and machine.get("healthStatus") == "Active":
            action["status"] = "Succeeded"
            action["lastUpdateDateTimeUtc"] = _now()


def _isolation(fake: FakeMicrosoft, machine_id: str, verb: str, body: Any) -> Reply:
    machine = _machine(fake, machine_id)
    if machine is None:
        return defender_error(404, "ResourceNotFound", f"Machine {machine_id} was not found")
    if not isinstance(body, dict):
        return defender_error(400, "InvalidRequestBody", "Request body is incorrect")
    if not body.get("Comment"):
        return defender_error(400, "MissingRequiredParameter", "Parameter Comment is missing.")
    kind = "Isolate" if verb == "isolate" else "Unisolate"
    scope = body.get("IsolationType") if kind == "Isolate" else None
    if kind == "Isolate":
        scope = scope or "Full"
        if scope not in ("Full", "Selective", "UnManagedDevice"):
            return defender_error(400, "InvalidInput", f"Invalid input IsolationType {scope}.")
    live = [
        a
        for a in fake.tenant.machine_actions
        if a["machineId"] == machine["id"]
        and a["type"] in ("Isolate", "Unisolate")
        and a["status"] not in _ENDED
    ]
    live.sort(key=lambda a: a["creationDateTimeUtc"], reverse=True)
    in_progress = any(a["status"] in ("Pending", "InProgress") for a in live)
    if in_progress or (live and live[0]["type"] == kind) or (not live and kind == "Unisolate"):
        # Unconfirmed: ActiveRequestAlreadyExists's message, and that releasing a machine
        # never isolated answers it too (MicrosoftDocs/microsoft-365-docs#5903 shows a repeat).
        return defender_error(400, "ActiveRequestAlreadyExists", "Action is already in progress")
    action = machine_action(machine, kind, str(body["Comment"]), scope, status="Pending")
    fake.tenant.machine_actions.append(action)
    return Reply(
        201,
        {"@odata.context": f"{fake.url}/api/$metadata#MachineActions/$entity", **action},
    )


def machine_action(
    machine: Mapping[str, Any],
    kind: str,
    comment: str,
    scope: str | None,
    *,
    status: str,
    when: datetime | None = None,
) -> dict[str, Any]:
    """A MachineAction as Defender returns it."""
    moment = when or datetime.now(UTC)
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "id": str(uuid.uuid4()),
        "type": kind,
        "title": None,
        "requestor": "9d3e6c1a-2b4f-4e8a-8c7d-70c5170c5170",
        "requestorComment": comment,
        "status": status,
        "machineId": machine["id"],
        "computerDnsName": machine["computerDnsName"],
        "creationDateTimeUtc": stamp,
        "lastUpdateDateTimeUtc": stamp,
        "cancellationRequestor": None,
        "cancellationComment": None,
        "cancellationDateTimeUtc": None,
        "errorHResult": 0,
        "scope": scope,
        "externalId": None,
        "requestSource": "PublicApi",
        "relatedFileInfo": None,
        "commands": [],
        "troubleshootInfo": None,
    }


# -- Intune (Graph) ---------------------------------------------------------------------------


def is_intune_path(parts: list[str]) -> bool:
    """Whether a Graph path (split at /) is one of Intune's managed devices."""
    return parts[:2] == ["deviceManagement", "managedDevices"] or (
        len(parts) == 3 and parts[0] == "users" and parts[2] == "managedDevices"
    )


def _intune_need(caller: _Token, any_of: set[str]) -> None:
    if caller.roles & any_of:
        return
    # Unconfirmed: Intune's 403 wording (code Forbidden, the scopes named, an Operation ID).
    raise GraphError(
        403,
        "Forbidden",
        "Application is not authorized to perform this operation. Application must have one "
        f"of the following scopes: {', '.join(sorted(any_of))} - Operation ID (for customer "
        f"support): {uuid.uuid4()}",
    )


_READ = {
    "DeviceManagementManagedDevices.Read.All",
    "DeviceManagementManagedDevices.ReadWrite.All",
}


def intune_route(
    fake: FakeMicrosoft,
    caller: _Token,
    method: str,
    parts: list[str],
    query: Mapping[str, str],
    body: Any,
) -> Reply:
    """One Graph request to Intune's managed devices (the fake's lock is held)."""
    devices = fake.tenant.managed_devices
    if parts[0] == "users":
        _intune_need(caller, _READ)
        user = fake._user(parts[1])
        mine = [d for d in devices if d["userId"] == user["id"]]
        return Reply(200, {"value": [_listed(d) for d in mine]})
    rest = parts[2:]
    if not rest and method == "GET":
        _intune_need(caller, _READ)
        wanted = query.get("$filter", "")
        name = re.fullmatch(r"deviceName eq '((?:[^']|'')*)'", wanted)
        if wanted and name is None:
            raise GraphError(400, "BadRequest", f"Invalid filter clause: {wanted}")
        chosen = [
            d
            for d in devices
            if name is None or d["deviceName"].lower() == _unquoted(name.group(1)).lower()
        ]
        return Reply(200, {"value": [_listed(d) for d in chosen]})
    found = [d for d in devices if d["id"] == rest[0]] if rest else []
    if len(rest) == 1 and method == "GET":
        _intune_need(caller, _READ)
        if not found:
            raise GraphError(404, "ResourceNotFound", f"Resource {rest[0]} was not found.")
        return Reply(200, copy.deepcopy(found[0]))
    if len(rest) == 2 and method == "POST" and rest[1] in _INTUNE_COMMANDS:
        allowed = {"DeviceManagementManagedDevices.PrivilegedOperations.All"}
        if rest[1] == "wipe":
            allowed.add("DeviceManagementManagedDevices.ReadWrite.All")
        _intune_need(caller, allowed)
        if not found:
            raise GraphError(404, "ResourceNotFound", f"Resource {rest[0]} was not found.")
        if rest[1] == "wipe":
            if body is not None and not isinstance(body, dict):
                raise GraphError(400, "BadRequest", "Invalid request body.")
            unknown = [k for k in body or {} if k not in _WIPE_OPTIONS]
            if unknown:
                raise GraphError(400, "BadRequest", f"Unknown wipe parameter '{unknown[0]}'.")
        elif body:
            raise GraphError(400, "BadRequest", f"{rest[1]} takes no request body.")
        device = found[0]
        stamp = _iso(datetime.now(UTC))
        device["deviceActionResults"].append(
            {
                "actionName": rest[1],
                "actionState": "pending",
                "startDateTime": stamp,
                "lastUpdatedDateTime": stamp,
            }
        )
        if _INTUNE_COMMANDS[rest[1]]:
            device["managementState"] = _INTUNE_COMMANDS[rest[1]]
        if rest[1] == "wipe":
            device["deviceActionResults"][-1]["options"] = dict(body or {})
        return Reply(204)
    raise GraphError(400, "BadRequest", "Resource not found for the segment 'managedDevices'.")


def _listed(device: Mapping[str, Any]) -> dict[str, Any]:
    # Lists leave deviceActionResults out; GET of the one device gives it.
    return {k: copy.deepcopy(v) for k, v in device.items() if k != "deviceActionResults"}


# -- the seed: the phished user's devices -----------------------------------------------------

LAPTOP_NAME = "ALICE-LT01"
NOT_ONBOARDED = "broker-nas01"


def office_workstation(device: str, domain: str, now: datetime) -> dict[str, Any]:
    """A broker office's PC (``PC-1``) onboarded in Defender for Endpoint as
    ``pc-1.<domain>``, online and not isolated: what the office runbooks isolate."""
    dns = f"{device.lower()}.{domain}"
    return {
        "id": _id(f"mde:{dns}").replace("-", "")[:32] + "0ff1ce00",
        "computerDnsName": dns,
        "firstSeen": _iso(now - timedelta(days=700)),
        "lastSeen": _iso(now - timedelta(minutes=10)),
        "osPlatform": "Windows10",
        "osProcessor": "x64",
        "version": "22H2",
        "osBuild": 19045,
        "lastIpAddress": "192.168.10.21",
        "lastExternalIpAddress": "198.51.100.7",
        "healthStatus": "Active",
        "onboardingStatus": "Onboarded",
        "rbacGroupName": "Office workstations",
        "rbacGroupId": 43,
        "riskScore": "High",
        "exposureLevel": "High",
        "deviceValue": "Normal",
        "machineTags": ["office"],
        "isAadJoined": False,
        "osArchitecture": "64-bit",
    }


def phished_devices(upn: str, user_id: str, now: datetime) -> dict[str, list[dict[str, Any]]]:
    """The user's laptop (onboarded in Defender, enrolled in Intune), their enrolled phone,
    and a NAS Defender discovered but never onboarded."""
    local = upn.split("@")[0]
    domain = upn.split("@")[-1]
    laptop = f"{local[:5].upper()}-LT01"
    dns = f"{laptop.lower()}.{domain}"
    entra_device = _id(f"entra-device:{upn}:laptop")
    machine = {
        "id": _id(f"mde:{upn}:laptop").replace("-", "")[:32] + "f00dcafe",
        "computerDnsName": dns,
        "firstSeen": _iso(now - timedelta(days=380)),
        "lastSeen": _iso(now - timedelta(hours=1)),
        "osPlatform": "Windows11",
        "osProcessor": "x64",
        "version": "23H2",
        "osBuild": 22631,
        "lastIpAddress": "192.168.1.23",
        "lastExternalIpAddress": "81.246.12.7",
        "healthStatus": "Active",
        "onboardingStatus": "Onboarded",
        "rbacGroupName": "Workstations",
        "rbacGroupId": 42,
        "riskScore": "High",
        "exposureLevel": "Medium",
        "deviceValue": "Normal",
        "aadDeviceId": entra_device,
        "machineTags": ["laptop"],
        "isAadJoined": True,
        "osArchitecture": "64-bit",
    }
    nas = {
        **{k: v for k, v in machine.items() if k not in ("aadDeviceId", "machineTags")},
        "id": _id(f"mde:{domain}:nas").replace("-", "")[:32] + "0000beef",
        "computerDnsName": f"{NOT_ONBOARDED}.{domain}",
        "osPlatform": "Linux",
        "healthStatus": "Inactive",
        "onboardingStatus": "CanBeOnboarded",
        "riskScore": "None",
    }

    def managed(
        name: str, os_name: str, version: str, model: str, entra: str, seed: str
    ) -> dict[str, Any]:
        return {
            "id": _id(f"intune:{upn}:{seed}"),
            "userId": user_id,
            "userPrincipalName": upn,
            "userDisplayName": local.title(),
            "emailAddress": upn,
            "deviceName": name,
            "managedDeviceOwnerType": "company",
            "enrolledDateTime": _iso(now - timedelta(days=380)),
            "lastSyncDateTime": _iso(now - timedelta(minutes=40)),
            "operatingSystem": os_name,
            "osVersion": version,
            "complianceState": "compliant",
            "jailBroken": "Unknown",
            "managementAgent": "mdm",
            "managementState": "managed",
            "azureADRegistered": True,
            "azureADDeviceId": entra,
            "deviceEnrollmentType": "windowsAzureADJoin"
            if os_name == "Windows"
            else "userEnrollment",
            "model": model,
            "manufacturer": "Lenovo" if os_name == "Windows" else "Apple",
            "serialNumber": _id(f"serial:{upn}:{seed}")[:12].upper(),
            "isEncrypted": True,
            "deviceActionResults": [],
        }

    return {
        "machines": [machine, nas],
        "managed_devices": [
            managed(
                laptop, "Windows", "10.0.22631.4460", "ThinkPad T14 Gen 4", entra_device, "laptop"
            ),
            managed(
                f"{local.title()}'s iPhone",
                "iOS",
                "17.6.1",
                "iPhone 13",
                _id(f"entra-device:{upn}:phone"),
                "phone",
            ),
        ],
    }
