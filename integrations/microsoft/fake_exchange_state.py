"""Each mailbox's Exchange state beyond Get-Mailbox, and what every cmdlet handler shares.

``seeded_exchange`` is the phished mailbox's state as the sandbox seeds it (protocols,
delegates, folder permissions, a hidden rule, the spam restriction); ``mailbox_state`` finds a
mailbox's state for a handler; ``refuse_unknown_parameters`` and ``cmdlet_reply`` answer as
InvokeCommand does. The handlers are in ``fake_exchange`` and ``fake_exchange_access``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from tocsin.sandbox.fake_service import Reply

if TYPE_CHECKING:
    from tocsin.integrations.microsoft.fake import FakeMicrosoft

ATTACKER_DELEGATE = "svc-archive@broker-office.example"
"""The account the attacker gave FullAccess and SendAs on the phished mailbox."""
GENUINE_DELEGATE_LOCAL = "bob"
"""The colleague (the user's assistant) who genuinely has FullAccess."""
HIDDEN_RULE_NAME = " "
SELF = "NT AUTHORITY\\SELF"
CAS_PROPERTIES = (
    "PopEnabled",
    "ImapEnabled",
    "EwsEnabled",
    "ActiveSyncEnabled",
    "MAPIEnabled",
    "OWAEnabled",
)


def folder_entry(folder: str, user: str, rights: str) -> dict[str, Any]:
    """One entry of Get-MailboxFolderPermission (``User`` as Exchange shows it: Default,
    Anonymous, or the delegate's address in this fake)."""
    # Unconfirmed: over InvokeCommand, ``User`` may come as a display name or an object.
    return {"FolderName": folder, "User": user, "AccessRights": [rights], "IsValid": True}


def standard_folders() -> dict[str, list[dict[str, Any]]]:
    """The folder permissions of a mailbox nobody shared: Default and Anonymous only."""
    return {
        folder: [
            folder_entry(folder, "Default", "AvailabilityOnly" if folder == "Calendar" else "None"),
            folder_entry(folder, "Anonymous", "None"),
        ]
        for folder in ("Inbox", "Calendar", "Sent Items", "Deleted Items", "Drafts")
    }


def seeded_exchange(upn: str, forward_to: str) -> dict[str, Any]:
    """Exchange's view of the phished mailbox beyond Get-Mailbox: POP and IMAP on (the
    attacker downloads the mailbox with them), the attacker's delegate besides the user's
    assistant, a hidden rule forwarding and deleting mail, Outlook's own hidden junk rule."""
    domain = upn.split("@")[-1]
    assistant = f"{GENUINE_DELEGATE_LOCAL}@{domain}"
    attacker = ATTACKER_DELEGATE.split("@")[0] + "@" + domain

    def permission(user: str, rights: str, inherited: bool = False) -> dict[str, Any]:
        return {
            "Identity": upn,
            "User": user,
            "AccessRights": [rights],
            "IsInherited": inherited,
            "Deny": False,
            "InheritanceType": "All",
        }

    def send_as(trustee: str) -> dict[str, Any]:
        return {
            "Identity": upn,
            "Trustee": trustee,
            "AccessControlType": "Allow",
            "AccessRights": ["SendAs"],
            "IsInherited": False,
            "InheritanceType": "None",
        }

    return {
        # The phished mailbox sent the attacker's spam: Exchange restricted it (NDR 5.1.8).
        "blocked_sender": {
            "SenderAddress": upn,
            "Reason": "Outbound spam: the user sent mail above the outbound spam limits",
            "CreatedDatetime": "2026-11-30T21:14:07Z",
            "ChangedDatetime": "2026-11-30T21:14:07Z",
        }
        if forward_to
        else None,
        "cas": {name: True for name in CAS_PROPERTIES},
        "mailbox_permissions": [
            permission(SELF, "FullAccess, ReadPermission"),
            permission("NT AUTHORITY\\SYSTEM", "FullAccess", inherited=True),
            permission(assistant, "FullAccess"),
            permission(attacker, "FullAccess"),
        ],
        "recipient_permissions": [send_as(SELF), send_as(attacker)],
        # Folder permissions (Get-MailboxFolderPermission upn:\Folder): Exchange's Default and
        # Anonymous entries, the assistant editing the calendar, the attacker reading the inbox.
        "folder_permissions": {
            "Inbox": [
                folder_entry("Inbox", "Default", "None"),
                folder_entry("Inbox", "Anonymous", "None"),
                folder_entry("Inbox", attacker, "Reviewer"),
            ],
            "Calendar": [
                folder_entry("Calendar", "Default", "AvailabilityOnly"),
                folder_entry("Calendar", "Anonymous", "None"),
                folder_entry("Calendar", assistant, "Editor"),
            ],
            "Sent Items": [
                folder_entry("Sent Items", "Default", "None"),
                folder_entry("Sent Items", "Anonymous", "None"),
            ],
        },
        "hidden_rules": [
            {
                "Name": "Junk E-mail Rule",
                "RuleIdentity": "4573406057713467393",
                "Enabled": True,
                "Priority": 0,
                "ForwardTo": None,
                "RedirectTo": None,
                "ForwardAsAttachmentTo": None,
                "DeleteMessage": False,
                "MoveToFolder": "Junk Email",
                "Description": "If the message: the message was marked as junk\r\nTake the "
                "following actions: move the message to folder 'Junk Email'\r\n",
            },
            {
                "Name": HIDDEN_RULE_NAME,
                "RuleIdentity": "4573406057713467400",
                "Enabled": True,
                "Priority": 9,
                "ForwardTo": [f'"{forward_to}" [SMTP:{forward_to}]'],
                "RedirectTo": None,
                "ForwardAsAttachmentTo": None,
                "DeleteMessage": True,
                "MoveToFolder": None,
                "Description": "If the message: includes 'wire' in the subject or body\r\nTake "
                f"the following actions: forward the message to '{forward_to}' and delete it\r\n",
            },
        ],
    }


Handler = Callable[["FakeMicrosoft", Mapping[str, Any]], Reply]


def mailbox_state(
    fake: FakeMicrosoft, identity: Any
) -> tuple[dict[str, Any], dict[str, Any]] | Reply:
    """The mailbox's user and its Exchange state (seeded when it has none), or the fake's error."""
    found = fake._exchange_mailbox(identity)
    if isinstance(found, Reply):
        return found
    user, _ = found
    return user, fake.tenant.exchange.setdefault(user["id"], seeded_exchange(user["mail"], ""))


def refuse_unknown_parameters(
    fake: FakeMicrosoft, parameters: Mapping[str, Any], known: set[str]
) -> Reply | None:
    """The error InvokeCommand gives for a parameter not in ``known``; None when all are known."""
    # Unconfirmed: InvokeCommand's refusal of an unknown parameter (its exception and wording).
    unknown = [name for name in parameters if name not in known | {"Confirm"}]
    if not unknown:
        return None
    return fake._exchange_error(
        400,
        "Management.RestApiClient.RestClientException",
        f"A parameter cannot be found that matches parameter name '{unknown[0]}'.",
    )


def cmdlet_reply(items: list[dict[str, Any]], warnings: list[str] | None = None) -> Reply:
    """A cmdlet's answer: its objects and its warnings, as InvokeCommand sends them."""
    return Reply(200, {"@adminapi.warnings": warnings or [], "value": copy.deepcopy(items)})
