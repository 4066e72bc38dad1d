"""The fake's Exchange Online cmdlets about who may reach a mailbox (``InvokeCommand``).

- ``Get-MailboxPermission``/``Remove-MailboxPermission`` (FullAccess: ``User``,
  ``AccessRights``, ``IsInherited``, ``Deny``), ``Get-RecipientPermission``/
  ``Remove-RecipientPermission`` (SendAs: ``Trustee``); removing what is not there warns;
- ``Add-MailboxPermission -AccessRights FullAccess -AutoMapping``, ``Add-RecipientPermission
  -AccessRights SendAs`` (the trustee must be a mailbox of the tenant; adding what is there
  already changes nothing);
- ``Get-BlockedSenderAddress``/``Remove-BlockedSenderAddress``: the restriction Exchange puts
  on a mailbox caught sending spam;
- ``Get-MailboxFolderPermission``, ``Remove-MailboxFolderPermission``,
  ``Set-MailboxFolderPermission`` (``upn:\\Folder``; Default and Anonymous can only be set).

``ACCESS_CMDLETS`` is the part of ``fake_exchange.CMDLETS`` these handlers answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tocsin.integrations.microsoft.fake_exchange_state import (
    Handler,
    checked_mailbox,
    cmdlet_reply,
    mailbox_state,
    refuse_unknown_parameters,
    standard_folders,
)
from tocsin.sandbox.fake_service import Reply

if TYPE_CHECKING:
    from tocsin.integrations.microsoft.fake import FakeMicrosoft


def get_mailbox_permission(fake: FakeMicrosoft, parameters: Mapping[str, Any]) -> Reply:
    found = mailbox_state(fake, parameters.get("Identity"))
    if isinstance(found, Reply):
        return found
    return cmdlet_reply(found[1]["mailbox_permissions"])


def get_recipient_permission(fake: FakeMicrosoft, parameters: Mapping[str, Any]) -> Reply:
    found = mailbox_state(fake, parameters.get("Identity"))
    if isinstance(found, Reply):
        return found
    return cmdlet_reply(found[1]["recipient_permissions"])


def _remove_permission(
    fake: FakeMicrosoft, parameters: Mapping[str, Any], key: str, who: str, rights: str
) -> Reply:
    # Unconfirmed: AccessRights given as a JSON list of strings (["FullAccess"]).
    found = checked_mailbox(fake, parameters, {"Identity", who, "AccessRights", "InheritanceType"})
    if isinstance(found, Reply):
        return found
    _, state = found
    trustee = str(parameters.get(who, "")).lower()
    entries = state[key]
    gone = [
        e
        for e in entries
        if e[who].lower() == trustee
        and any(rights in right for right in e["AccessRights"])
        and not e.get("IsInherited")
    ]
    for entry in gone:
        entries.remove(entry)
    warnings = (
        []
        if gone
        else [
            f"Can't remove the access control entry on the object '{parameters.get('Identity')}' "
            f"for account '{parameters.get(who)}' because the ACE doesn't exist on the object."
        ]
    )
    return cmdlet_reply([], warnings)


def remove_mailbox_permission(fake: FakeMicrosoft, parameters: Mapping[str, Any]) -> Reply:
    return _remove_permission(fake, parameters, "mailbox_permissions", "User", "FullAccess")


def remove_recipient_permission(fake: FakeMicrosoft, parameters: Mapping[str, Any]) -> Reply:
    return _remove_permission(fake, parameters, "recipient_permissions", "Trustee", "SendAs")


def _add_permission(
    fake: FakeMicrosoft,
    parameters: Mapping[str, Any],
    key: str,
    who: str,
    rights: str,
    known: set[str],
) -> Reply:
    found = checked_mailbox(fake, parameters, {"Identity", who, "AccessRights", *known})
    if isinstance(found, Reply):
        return found
    user, state = found
    trustee = mailbox_state(fake, parameters.get(who))
    if isinstance(trustee, Reply):
        return trustee
    if [str(r) for r in parameters.get("AccessRights") or []] != [rights]:
        return fake._exchange_error(
            400,
            "Management.RestApiClient.RestClientException",
            f"Cannot bind parameter 'AccessRights': this fake grants only {rights}.",
        )
    address = trustee[0]["userPrincipalName"]
    entries = state[key]
    present = [
        e
        for e in entries
        if str(e[who]).lower() == address.lower()
        and any(rights in right for right in e["AccessRights"])
    ]
    if not present:
        entry: dict[str, Any] = {
            "Identity": user["userPrincipalName"],
            who: address,
            "AccessRights": [rights],
            "IsInherited": False,
        }
        if key == "mailbox_permissions":
            entry.update({"Deny": False, "InheritanceType": "All"})
            state.setdefault("automapping", {})[address.lower()] = bool(
                parameters.get("AutoMapping", True)
            )
        else:
            entry.update({"AccessControlType": "Allow", "InheritanceType": "None"})
        entries.append(entry)
        present = [entry]
    return cmdlet_reply(present)


def add_mailbox_permission(fake: FakeMicrosoft, parameters: Mapping[str, Any]) -> Reply:
    return _add_permission(
        fake,
        parameters,
        "mailbox_permissions",
        "User",
        "FullAccess",
        {"AutoMapping", "InheritanceType"},
    )


def add_recipient_permission(fake: FakeMicrosoft, parameters: Mapping[str, Any]) -> Reply:
    return _add_permission(fake, parameters, "recipient_permissions", "Trustee", "SendAs", set())


# Unconfirmed: the shapes of Get-/Remove-BlockedSenderAddress over InvokeCommand, and the
# error Remove- gives for an address that is not restricted.
def get_blocked_sender_address(fake: FakeMicrosoft, parameters: Mapping[str, Any]) -> Reply:
    refused = refuse_unknown_parameters(fake, parameters, {"SenderAddress"})
    if refused:
        return refused
    found = mailbox_state(fake, parameters.get("SenderAddress"))
    if isinstance(found, Reply):
        return cmdlet_reply([])  # an address Exchange never restricted: nothing listed
    _, state = found
    return cmdlet_reply([state["blocked_sender"]] if state.get("blocked_sender") else [])


def remove_blocked_sender_address(fake: FakeMicrosoft, parameters: Mapping[str, Any]) -> Reply:
    refused = refuse_unknown_parameters(fake, parameters, {"SenderAddress", "Reason"})
    if refused:
        return refused
    found = mailbox_state(fake, parameters.get("SenderAddress"))
    if isinstance(found, Reply) or not found[1].get("blocked_sender"):
        return fake._exchange_error(
            400,
            "Microsoft.Exchange.Management.Tasks.ManagementObjectNotFoundException",
            f"The sender {parameters.get('SenderAddress')} is not in the restricted list.",
        )
    found[1]["blocked_sender"] = None
    found[1]["unblocked_because"] = str(parameters.get("Reason") or "")
    return cmdlet_reply([])


def _folder(fake: FakeMicrosoft, identity: Any) -> tuple[list[dict[str, Any]], str] | Reply:
    """``upn:\\Folder`` → that folder's permission entries."""
    mailbox, _, folder = str(identity or "").partition(":\\")
    found = mailbox_state(fake, mailbox)
    if isinstance(found, Reply):
        return found
    # Every mailbox has these folders, with Exchange's Default and Anonymous entries.
    entries = found[1].setdefault("folder_permissions", standard_folders()).get(folder)
    if entries is None:
        return fake._exchange_error(
            400,
            "Management.RestApiClient.RestClientException",
            f"The operation couldn't be performed because '{identity}' couldn't be found.",
        )
    return entries, folder


def _checked_folder(
    fake: FakeMicrosoft, parameters: Mapping[str, Any], known: set[str]
) -> list[dict[str, Any]] | Reply:
    """A folder cmdlet's parameters checked against ``known``, then the permission entries of
    the folder ``Identity`` names; the error InvokeCommand gives otherwise."""
    refused = refuse_unknown_parameters(fake, parameters, known)
    if refused:
        return refused
    found = _folder(fake, parameters.get("Identity"))
    return found if isinstance(found, Reply) else found[0]


def _user_entry(
    fake: FakeMicrosoft, entries: list[dict[str, Any]], parameters: Mapping[str, Any]
) -> dict[str, Any] | Reply:
    """The folder's permission entry of ``User``; the error Exchange gives when it has none."""
    user = str(parameters.get("User") or "").lower()
    match = [e for e in entries if str(e["User"]).lower() == user]
    if not match:
        return fake._exchange_error(
            400,
            "Microsoft.Exchange.Management.StoreTasks.UserNotFoundInPermissionEntryException",
            f"There is no existing permission entry found for user: {parameters.get('User')}.",
        )
    return match[0]


def get_mailbox_folder_permission(fake: FakeMicrosoft, parameters: Mapping[str, Any]) -> Reply:
    entries = _checked_folder(fake, parameters, {"Identity"})
    return entries if isinstance(entries, Reply) else cmdlet_reply(entries)


def remove_mailbox_folder_permission(fake: FakeMicrosoft, parameters: Mapping[str, Any]) -> Reply:
    entries = _checked_folder(fake, parameters, {"Identity", "User"})
    if isinstance(entries, Reply):
        return entries
    if str(parameters.get("User") or "").lower() in ("default", "anonymous"):
        return fake._exchange_error(
            400,
            "Management.RestApiClient.RestClientException",
            f"The {parameters.get('User')} permission entry cannot be removed; set it to None.",
        )
    entry = _user_entry(fake, entries, parameters)
    if isinstance(entry, Reply):
        return entry
    entries.remove(entry)
    return cmdlet_reply([])


def set_mailbox_folder_permission(fake: FakeMicrosoft, parameters: Mapping[str, Any]) -> Reply:
    entries = _checked_folder(fake, parameters, {"Identity", "User", "AccessRights"})
    if isinstance(entries, Reply):
        return entries
    entry = _user_entry(fake, entries, parameters)
    if isinstance(entry, Reply):
        return entry
    rights = parameters.get("AccessRights")
    entry["AccessRights"] = list(rights) if isinstance(rights, list) else [str(rights)]
    return cmdlet_reply([])


ACCESS_CMDLETS: dict[str, Handler] = {
    "Get-MailboxFolderPermission": get_mailbox_folder_permission,
    "Remove-MailboxFolderPermission": remove_mailbox_folder_permission,
    "Set-MailboxFolderPermission": set_mailbox_folder_permission,
    "Get-BlockedSenderAddress": get_blocked_sender_address,
    "Remove-BlockedSenderAddress": remove_blocked_sender_address,
    "Get-MailboxPermission": get_mailbox_permission,
    "Remove-MailboxPermission": remove_mailbox_permission,
    "Get-RecipientPermission": get_recipient_permission,
    "Remove-RecipientPermission": remove_recipient_permission,
    "Add-MailboxPermission": add_mailbox_permission,
    "Add-RecipientPermission": add_recipient_permission,
}
