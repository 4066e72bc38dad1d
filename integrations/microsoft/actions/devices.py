"""Devices in Defender for Endpoint: isolate the user's computer from the network (and
release it, each the other's undo). Intune's remote actions are in ``intune``.

Defender's isolate and release are not idempotent on their own: a repeat answers 400
``ActiveRequestAlreadyExists`` or queues a duplicate that can complete after a later
release (MicrosoftDocs/microsoft-365-docs#5903). So each action reads the machine's latest
isolation action first and only asks when the machine is not already where it should be.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from tocsin.actions import ActionContext, Reconciled, action
from tocsin.errors import IntegrationError
from tocsin.integrations.microsoft import CLIENT_SECRET
from tocsin.integrations.microsoft.actions import odata_literal
from tocsin.integrations.microsoft.client import SERVICE
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
        query = {"$filter": f"computerDnsName eq '{odata_literal(given)}'"}
        candidates = list(api.pages("/machines", query=query, what=f"find machine {given}"))
        if not candidates and "." not in given:
            query = {"$filter": f"startswith(computerDnsName,'{odata_literal(given)}.')"}
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
            query={"$filter": f"machineId eq '{odata_literal(machine_id)}'"},
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
                    unapplied=True,  # Defender refused it: another action is under way
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


class MachineIsolations(BaseModel):
    """Each device's isolation, in the order given."""

    devices: list[MachineIsolation]
    changed: list[str]
    """The devices whose isolation this call changed (the others already were as asked)."""


Devices = Annotated[
    list[DeviceRef],
    Field(min_length=1, max_length=50, description="The devices (PC-1, PC-2), as for one device"),
]


def _set_isolations(
    context: ActionContext,
    name: str,
    devices: list[str],
    comment: str,
    isolate: bool,
    isolation_type: str | None = None,
) -> MachineIsolations:
    # One device after the other: a failure stops the step with the earlier ones done,
    # and a re-run skips those (each reads the machine's latest isolation first).
    done = [_set_isolation(context, name, d, comment, isolate, isolation_type) for d in devices]
    return MachineIsolations(devices=done, changed=[d.device for d in done if d.changed])


def _read_isolations(
    context: ActionContext, name: str, devices: list[str], isolate: bool
) -> Reconciled:
    """Whether an interrupted isolate (or release) of ``devices`` took effect, read back from
    each machine's latest isolation action in Defender."""
    api = DefenderForEndpoint.for_action(context, name)
    wanted = "Isolate" if isolate else "Unisolate"
    settled: list[MachineIsolation] = []
    for device in devices:
        machine = find_machine(api, name, device)
        latest = latest_isolation(api, str(machine["id"]))
        if not (latest.get("type") == wanted if latest else not isolate):
            continue
        settled.append(
            MachineIsolation(
                device=device,
                machine_id=str(machine["id"]),
                computer_dns_name=str(machine.get("computerDnsName") or ""),
                health_status=str(machine.get("healthStatus") or ""),
                found=_described(latest),
                isolated=isolate,
                changed=False,  # by the interrupted call or before it: Defender does not say
                action_id=str(latest["id"]) if latest and latest.get("id") else None,
                action_status=str(latest["status"]) if latest and latest.get("status") else None,
                isolation_type=str(latest["scope"]) if latest and latest.get("scope") else None,
            )
        )
    if len(settled) == len(devices):
        return Reconciled.took_effect(
            MachineIsolations(devices=settled, changed=[]),
            "; ".join(f"{item.device}: {item.found}" for item in settled),
        )
    if not settled:
        return Reconciled.did_not(f"none of {', '.join(devices)} is {wanted.lower()}d")
    return Reconciled.unknown(
        f"only {', '.join(item.device for item in settled)} of {', '.join(devices)} "
        f"{'are isolated' if isolate else 'are released'}"
    )


def _isolations_read_back(
    context: ActionContext, *, devices: list[str], comment: str, isolation_type: str = "Full"
) -> Reconciled:
    return _read_isolations(context, "defender.isolate_devices", devices, True)


def _releases_read_back(context: ActionContext, *, devices: list[str], comment: str) -> Reconciled:
    return _read_isolations(context, "defender.release_devices", devices, False)


@action(
    "defender.isolate_devices",
    destructive=True,
    idempotent=True,
    reconcile=_isolations_read_back,
    secrets=(CLIENT_SECRET,),
    describe=lambda devices, isolation_type: (
        f"isolate {', '.join(devices)} from the network in Defender for Endpoint "
        f"({isolation_type}; each skipped if already isolated)"
    ),
)
def isolate_devices(
    context: ActionContext,
    *,
    devices: Devices,
    comment: Comment,
    isolation_type: IsolationType = "Full",
) -> MachineIsolations:
    """Isolate each device from the network (Defender for Endpoint), as
    defender.isolate_device does; undone by defender.release_devices."""
    return _set_isolations(
        context, "defender.isolate_devices", devices, comment, True, isolation_type
    )


@action(
    "defender.release_devices",
    destructive=True,
    idempotent=True,
    reconcile=_releases_read_back,
    secrets=(CLIENT_SECRET,),
    describe=lambda devices: (
        f"release {', '.join(devices)} from network isolation in Defender for Endpoint "
        "(each skipped if not isolated)"
    ),
)
def release_devices(
    context: ActionContext, *, devices: Devices, comment: Comment
) -> MachineIsolations:
    """Release each device from isolation (Defender for Endpoint), as
    defender.release_device does; undone by defender.isolate_devices."""
    return _set_isolations(context, "defender.release_devices", devices, comment, False)
