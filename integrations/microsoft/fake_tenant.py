"""The fake tenant: what it holds (``Tenant``, Graph's own JSON objects and Exchange's,
Defender's and Intune's views) and the seed the tests and the sandbox start from,
``compromised_tenant``: a user phished two days ago.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tocsin.integrations.microsoft import fake_entra
from tocsin.integrations.microsoft.client import METHOD_KINDS
from tocsin.integrations.microsoft.fake_entra import seeded_assignments
from tocsin.integrations.microsoft.fake_exchange import seeded_exchange
from tocsin.integrations.microsoft.fake_identity import b64url

SANDBOX_TENANT_ID = "5f1c7a5e-7d2b-4f0e-9a11-0c0ffee00001"
SANDBOX_TENANT_DOMAIN = "broker-office.example"
SANDBOX_USER = "alice@broker-office.example"
PASSWORD_METHOD = "#microsoft.graph.passwordAuthenticationMethod"


@dataclass
class Tenant:
    """What the fake tenant holds; every list is of Graph's own JSON objects."""

    users: list[dict[str, Any]] = field(default_factory=list)
    methods: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Authentication methods by user id."""
    default_method: dict[str, str] = field(default_factory=dict)
    """The default sign-in method's id by user id."""
    rules: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Inbox rules by user id; a user absent here has no mailbox."""
    folders: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    grants: list[dict[str, Any]] = field(default_factory=list)
    service_principals: list[dict[str, Any]] = field(default_factory=list)
    sign_ins: list[dict[str, Any]] = field(default_factory=list)
    premium: bool = True
    """Entra ID P1 or P2: the sign-in logs API."""
    p2: bool = True
    """Entra ID P2: Identity Protection."""
    mailboxes: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Exchange Online's view of each user's mailbox (Get-Mailbox properties), by user id."""
    exchange: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The rest of Exchange's view, by user id (``fake_exchange``: protocols, delegates...)."""
    role_assignments: list[dict[str, Any]] = field(default_factory=list)
    """Directory role assignments (``fake_entra``), of users and of role-assignable groups."""
    role_eligibilities: list[dict[str, Any]] = field(default_factory=list)
    """PIM eligibility schedules (``fake_entra``)."""
    groups: list[dict[str, Any]] = field(default_factory=list)
    """Groups, each with its ``members`` (user ids) (``fake_entra``)."""
    machines: list[dict[str, Any]] = field(default_factory=list)
    """Defender for Endpoint's machines, and their machine actions (fake_devices)."""
    machine_actions: list[dict[str, Any]] = field(default_factory=list)
    managed_devices: list[dict[str, Any]] = field(default_factory=list)
    """Intune's managed devices, each with its ``deviceActionResults``."""


def iso_time(moment: datetime) -> str:
    """A moment as Graph writes it (UTC, to the second)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def stable_id(seed: str) -> str:
    """A GUID that is the same for the same ``seed`` on every run."""
    return str(uuid.UUID(hashlib.sha256(seed.encode()).hexdigest()[:32]))


# -- the seed: a phished mailbox ---------------------------------------------------------------

ATTACKER_FORWARD = "invoices@broker-payments.example.net"
KNOWN_GOOD_AUTHENTICATOR = "Alice's iPhone 13"
ATTACKER_PHONE = "+234 8031234567"


def compromised_tenant(upn: str = SANDBOX_USER, *, now: datetime | None = None) -> Tenant:
    """A tenant whose user ``upn`` was phished two days ago.

    The attacker set the mailbox to forward every message outside (Exchange's
    ForwardingSmtpAddress, which Graph does not show), added inbox rules (forward to an
    outside address, delete payment mail, move security alerts to RSS Feeds), registered their own phone beside the user's
    Authenticator, consented a mail-reading app, and signed in from abroad. Their laptop is
    onboarded in Defender for Endpoint and enrolled in Intune (fake_devices). The user's own
    rule, their Authenticator (the default method) and their Zoom consent are genuine.
    """
    from tocsin.integrations.microsoft.fake_devices import phished_devices

    now = now or datetime.now(UTC)
    user_id = stable_id(f"user:{upn}")
    devices = phished_devices(upn, user_id, now)
    local = upn.split("@")[0]
    colleague = f"bob@{upn.split('@')[-1]}"
    folders = {
        name: b64url(hashlib.sha256(f"{upn}:{name}".encode()).digest()[:24]) + "AAA="
        for name in (
            "Inbox",
            "Drafts",
            "Sent Items",
            "Deleted Items",
            "Junk Email",
            "Archive",
            "RSS Feeds",
            "Conversation History",
            "Clients",
        )
    }
    graph_sp, attacker_sp, zoom_sp = (
        stable_id("sp:graph"),
        stable_id("sp:attacker"),
        stable_id("sp:zoom"),
    )

    def rule(
        number: int, name: str, conditions: dict[str, Any], actions: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "id": f"AQAAAJ{number:04d}{local[:4]}=",
            "displayName": name,
            "sequence": number,
            "isEnabled": True,
            "hasError": False,
            "isReadOnly": False,
            "conditions": conditions,
            "actions": {"stopProcessingRules": True, **actions},
            "exceptions": {},
        }

    def sign_in(
        hours_ago: float, ip: str, city: str, country: str, app: str, error: int = 0
    ) -> dict[str, Any]:
        moment = now - timedelta(hours=hours_ago)
        return {
            "id": stable_id(f"signin:{upn}:{hours_ago}:{ip}"),
            "createdDateTime": iso_time(moment),
            "userDisplayName": local.title(),
            "userPrincipalName": upn,
            "userId": user_id,
            "appId": stable_id(f"app:{app}"),
            "appDisplayName": app,
            "ipAddress": ip,
            "clientAppUsed": "Browser",
            "isInteractive": True,
            "conditionalAccessStatus": "notApplied",
            "status": {
                "errorCode": error,
                "failureReason": "Invalid username or password or Invalid on-premise username or password."
                if error
                else "Other.",
            },
            "location": {"city": city, "state": city, "countryOrRegion": country},
            "deviceDetail": {
                "operatingSystem": "Windows10" if country == "BE" else "Linux",
                "browser": "Chrome",
            },
        }

    return Tenant(
        users=[
            {
                "id": user_id,
                "displayName": local.title(),
                "userPrincipalName": upn,
                "mail": upn,
                "accountEnabled": True,
                "onPremisesSyncEnabled": None,
                "assignedLicenses": [
                    {"skuId": "f245ecc8-75af-4f8e-b61f-27d8114de5f3", "disabledPlans": []}
                ],
            }
        ],
        methods={
            user_id: [
                {
                    "@odata.type": PASSWORD_METHOD,
                    "id": "28c10230-6103-485e-b985-444c60001490",
                    "password": None,
                    "createdDateTime": iso_time(now - timedelta(days=400)),
                },
                {
                    "@odata.type": METHOD_KINDS["microsoftAuthenticatorMethods"],
                    "id": stable_id(f"authenticator:{upn}"),
                    "displayName": KNOWN_GOOD_AUTHENTICATOR,
                    "deviceTag": "SoftwareTokenActivated",
                    "phoneAppVersion": "6.2401.0119",
                    "createdDateTime": iso_time(now - timedelta(days=300)),
                },
                {
                    "@odata.type": METHOD_KINDS["phoneMethods"],
                    "id": "3179e48a-750b-4051-897c-87b9720928f7",
                    "phoneNumber": ATTACKER_PHONE,
                    "phoneType": "mobile",
                    "smsSignInState": "notAllowedByPolicy",
                },
                {
                    "@odata.type": METHOD_KINDS["emailMethods"],
                    "id": "3ddfcfc8-9383-446f-83cc-3ab9be4be18f",
                    "emailAddress": "alice.recovery@mailbox.example.org",
                },
            ]
        },
        default_method={user_id: stable_id(f"authenticator:{upn}")},
        rules={
            user_id: [
                rule(
                    1,
                    "Clients",
                    {
                        "fromAddresses": [
                            {"emailAddress": {"address": f"clients@{upn.split('@')[-1]}"}}
                        ]
                    },
                    {"moveToFolder": folders["Clients"]},
                ),
                rule(
                    2,
                    ".",
                    {},
                    {
                        "forwardTo": [
                            {"emailAddress": {"name": "Invoices", "address": ATTACKER_FORWARD}}
                        ]
                    },
                ),
                rule(
                    3,
                    "..",
                    {"bodyOrSubjectContains": ["invoice", "payment", "bank details", "IBAN"]},
                    {"delete": True},
                ),
                rule(
                    4,
                    "...",
                    {
                        "subjectContains": ["security", "suspicious", "password"],
                        "fromAddresses": [{"emailAddress": {"address": colleague}}],
                    },
                    {"moveToFolder": folders["RSS Feeds"], "markAsRead": True},
                ),
            ]
        },
        folders={
            user_id: [
                {
                    "id": folder_id,
                    "displayName": name,
                    "parentFolderId": "AAMkAGRoot=",
                    "totalItemCount": 0,
                }
                for name, folder_id in folders.items()
            ]
        },
        grants=[
            {
                "id": "attacker-grant-" + user_id[:8],
                "clientId": attacker_sp,
                "consentType": "Principal",
                "principalId": user_id,
                "resourceId": graph_sp,
                "scope": "Mail.ReadWrite Mail.Send MailboxSettings.ReadWrite offline_access User.Read",
            },
            {
                "id": "zoom-grant-" + user_id[:8],
                "clientId": zoom_sp,
                "consentType": "Principal",
                "principalId": user_id,
                "resourceId": graph_sp,
                "scope": "openid profile email offline_access User.Read",
            },
            {
                "id": "tenant-wide-grant",
                "clientId": zoom_sp,
                "consentType": "AllPrincipals",
                "principalId": None,
                "resourceId": graph_sp,
                "scope": "User.Read",
            },
        ],
        service_principals=[
            {
                "id": graph_sp,
                "appId": "00000003-0000-0000-c000-000000000000",
                "displayName": "Microsoft Graph",
                "accountEnabled": True,
            },
            {
                "id": attacker_sp,
                "appId": stable_id("app:mailbackup"),
                "displayName": "Mail Backup Pro",
                "accountEnabled": True,
                "publisherName": "mailbackup-pro",
            },
            {
                "id": zoom_sp,
                "appId": stable_id("app:zoom"),
                "displayName": "Zoom",
                "accountEnabled": True,
                "publisherName": "Zoom Video Communications",
            },
        ],
        exchange={user_id: seeded_exchange(upn, ATTACKER_FORWARD)},
        role_assignments=seeded_assignments(user_id)
        + fake_entra.seeded_group_assignments(fake_entra.seeded_groups(user_id)),
        role_eligibilities=fake_entra.seeded_eligibilities(user_id),
        groups=fake_entra.seeded_groups(user_id),
        mailboxes={
            user_id: {
                "ForwardingSmtpAddress": f"smtp:{ATTACKER_FORWARD}",
                "ForwardingAddress": None,
                "DeliverToMailboxAndForward": True,
            }
        },
        machines=devices["machines"],
        managed_devices=devices["managed_devices"],
        sign_ins=[
            sign_in(70, "81.246.12.7", "Brussels", "BE", "Office 365 Exchange Online"),
            sign_in(50, "102.89.34.11", "Lagos", "NG", "OfficeHome", error=50126),
            sign_in(49.5, "102.89.34.11", "Lagos", "NG", "OfficeHome"),
            sign_in(49, "102.89.34.11", "Lagos", "NG", "Office 365 Exchange Online"),
            sign_in(30, "81.246.12.7", "Brussels", "BE", "Office 365 Exchange Online"),
            sign_in(6, "185.220.101.4", "Frankfurt am Main", "DE", "Office 365 Exchange Online"),
            sign_in(2, "81.246.12.7", "Brussels", "BE", "Microsoft Teams"),
        ],
    )
