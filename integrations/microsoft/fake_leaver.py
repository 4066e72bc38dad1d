"""The sandbox tenant's leaver (dossier §3.2: the accounts of people who left the office stay
active) and the colleague who takes over their mail.

``add_leaver(tenant, domain)`` adds to a tenant (``compromised_tenant``'s, whose phished user
it leaves as it was):

- ``erik@<domain>``, who left ``LEAVER_DEPARTED_DAYS_AGO`` days ago and is still enabled:
  his password, Authenticator (the default method) and phone, a consent to Dropbox, the
  User Administrator role, a user mailbox (``UserMailbox``), his laptop and iPhone enrolled
  in Intune, and sign-ins that all happened before he left;
- ``fleur@<domain>``, the colleague, with a mailbox of her own.
"""

from __future__ import annotations

import copy
import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from tocsin.integrations.microsoft.client import METHOD_KINDS
from tocsin.integrations.microsoft.fake_devices import phished_devices
from tocsin.integrations.microsoft.fake_entra import ROLE_TEMPLATES

if TYPE_CHECKING:
    from tocsin.integrations.microsoft.fake import Tenant

LEAVER_LOCAL = "erik"
COLLEAGUE_LOCAL = "fleur"
LEAVER_DEPARTED_DAYS_AGO = 14
LEAVER_SIGN_INS_DAYS_AGO = (20, 16, 15)
"""When the leaver last signed in (all before he left; the logs keep 30 days)."""
LEAVER_ROLE = "User Administrator"
LEAVER_APP = "Dropbox"
LEAVER_AUTHENTICATOR = "Erik's Pixel 7"
SELF = "NT AUTHORITY\\SELF"


def leaver_of(domain: str) -> str:
    return f"{LEAVER_LOCAL}@{domain}"


def colleague_of(domain: str) -> str:
    return f"{COLLEAGUE_LOCAL}@{domain}"


def _id(seed: str) -> str:
    return str(uuid.UUID(hashlib.sha256(seed.encode()).hexdigest()[:32]))


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _plain_exchange(upn: str) -> dict[str, Any]:
    """Exchange's view of a mailbox nobody tampered with: only the owner's own entries."""
    return {
        "cas": {
            name: True
            for name in (
                "PopEnabled",
                "ImapEnabled",
                "EwsEnabled",
                "ActiveSyncEnabled",
                "MAPIEnabled",
                "OWAEnabled",
            )
        },
        "mailbox_permissions": [
            {
                "Identity": upn,
                "User": SELF,
                "AccessRights": ["FullAccess, ReadPermission"],
                "IsInherited": False,
                "Deny": False,
                "InheritanceType": "All",
            }
        ],
        "recipient_permissions": [
            {
                "Identity": upn,
                "Trustee": SELF,
                "AccessControlType": "Allow",
                "AccessRights": ["SendAs"],
                "IsInherited": False,
                "InheritanceType": "None",
            }
        ],
        "hidden_rules": [],
    }


def _user(upn: str, name: str, now: datetime, leave: datetime | None) -> dict[str, Any]:
    user: dict[str, Any] = {
        "id": _id(f"user:{upn}"),
        "displayName": name,
        "userPrincipalName": upn,
        "mail": upn,
        "accountEnabled": True,
        "onPremisesSyncEnabled": None,
        "assignedLicenses": [
            {"skuId": "f245ecc8-75af-4f8e-b61f-27d8114de5f3", "disabledPlans": []}
        ],
    }
    if leave is not None:
        user["employeeLeaveDateTime"] = _iso(leave)
    return user


def _mailbox() -> dict[str, Any]:
    return {
        "RecipientTypeDetails": "UserMailbox",
        "ForwardingSmtpAddress": None,
        "ForwardingAddress": None,
        "DeliverToMailboxAndForward": False,
    }


def add_leaver(tenant: Tenant, domain: str, *, now: datetime | None = None) -> Tenant:
    """Add the leaver and the colleague (module docstring) to ``tenant``; return it."""
    now = now or datetime.now(UTC)
    leaver, colleague = leaver_of(domain), colleague_of(domain)
    left = (now - timedelta(days=LEAVER_DEPARTED_DAYS_AGO)).replace(
        hour=18, minute=0, second=0, microsecond=0
    )
    erik = _user(leaver, "Erik Janssens", now, left)
    fleur = _user(colleague, "Fleur Peeters", now, None)
    tenant.users.extend([erik, fleur])
    authenticator = _id(f"authenticator:{leaver}")
    tenant.methods[erik["id"]] = [
        {
            "@odata.type": "#microsoft.graph.passwordAuthenticationMethod",
            "id": _id(f"password:{leaver}"),
            "password": None,
            "createdDateTime": _iso(now - timedelta(days=900)),
        },
        {
            "@odata.type": METHOD_KINDS["microsoftAuthenticatorMethods"],
            "id": authenticator,
            "displayName": LEAVER_AUTHENTICATOR,
            "deviceTag": "SoftwareTokenActivated",
            "phoneAppVersion": "6.2401.0119",
            "createdDateTime": _iso(now - timedelta(days=700)),
        },
        {
            "@odata.type": METHOD_KINDS["phoneMethods"],
            "id": _id(f"phone:{leaver}"),
            "phoneNumber": "+32 470123456",
            "phoneType": "mobile",
            "smsSignInState": "notAllowedByPolicy",
        },
    ]
    tenant.default_method[erik["id"]] = authenticator
    for user in (erik, fleur):
        tenant.rules[user["id"]] = []
        tenant.folders[user["id"]] = []
        tenant.mailboxes[user["id"]] = _mailbox()
        tenant.exchange[user["id"]] = _plain_exchange(user["userPrincipalName"])
    dropbox, graph = _id("sp:dropbox"), _id("sp:graph")
    tenant.service_principals.append(
        {
            "id": dropbox,
            "appId": _id("app:dropbox"),
            "displayName": LEAVER_APP,
            "accountEnabled": True,
            "publisherName": "Dropbox, Inc.",
        }
    )
    tenant.grants.append(
        {
            "id": "dropbox-grant-" + erik["id"][:8],
            "clientId": dropbox,
            "consentType": "Principal",
            "principalId": erik["id"],
            "resourceId": graph,
            "scope": "Files.ReadWrite.All offline_access User.Read",
        }
    )
    tenant.role_assignments.append(
        {
            "id": f"lAPpYvVpN0KRkAEhdxReE{ROLE_TEMPLATES[LEAVER_ROLE][:8]}-{erik['id'][:8]}",
            "principalId": erik["id"],
            "roleDefinitionId": ROLE_TEMPLATES[LEAVER_ROLE],
            "directoryScopeId": "/",
        }
    )
    tenant.managed_devices.extend(
        copy.deepcopy(phished_devices(leaver, erik["id"], now)["managed_devices"])
    )
    for days in LEAVER_SIGN_INS_DAYS_AGO:
        moment = now - timedelta(days=days)
        tenant.sign_ins.append(
            {
                "id": _id(f"signin:{leaver}:{days}"),
                "createdDateTime": _iso(moment),
                "userDisplayName": erik["displayName"],
                "userPrincipalName": leaver,
                "userId": erik["id"],
                "appId": _id("app:Office 365 Exchange Online"),
                "appDisplayName": "Office 365 Exchange Online",
                "ipAddress": "81.246.12.7",
                "clientAppUsed": "Browser",
                "isInteractive": True,
                "conditionalAccessStatus": "notApplied",
                "status": {"errorCode": 0, "failureReason": "Other."},
                "location": {"city": "Brussels", "state": "Brussels", "countryOrRegion": "BE"},
                "deviceDetail": {"operatingSystem": "Windows10", "browser": "Chrome"},
            }
        )
    return tenant


def sign_in_after_departure(tenant: Tenant, domain: str, *, hours_ago: float = 5) -> None:
    """Someone signs in as the leaver after he left, from abroad (the compromise signal)."""
    erik = next(u for u in tenant.users if u["userPrincipalName"] == leaver_of(domain))
    moment = datetime.now(UTC) - timedelta(hours=hours_ago)
    tenant.sign_ins.append(
        {
            "id": _id(f"signin:{erik['id']}:late:{hours_ago}"),
            "createdDateTime": _iso(moment),
            "userDisplayName": erik["displayName"],
            "userPrincipalName": erik["userPrincipalName"],
            "userId": erik["id"],
            "appId": _id("app:OfficeHome"),
            "appDisplayName": "OfficeHome",
            "ipAddress": "102.89.34.11",
            "clientAppUsed": "Browser",
            "isInteractive": True,
            "conditionalAccessStatus": "notApplied",
            "status": {"errorCode": 0, "failureReason": "Other."},
            "location": {"city": "Lagos", "state": "Lagos", "countryOrRegion": "NG"},
            "deviceDetail": {"operatingSystem": "Linux", "browser": "Chrome"},
        }
    )
