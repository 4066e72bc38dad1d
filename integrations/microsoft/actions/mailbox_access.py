"""Who and what reaches the mailbox besides the user, as only Exchange Online shows it:
hidden inbox rules, the mail protocols (POP, IMAP, EWS, ActiveSync...), delegates
(FullAccess, SendAs).

Every action here goes through Exchange Online's admin API (``InvokeCommand``), which
Microsoft does not document as a public API: the app needs ``Exchange.ManageAsApp`` and an
Exchange role (``exchange.py``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from tocsin.actions import ActionContext, action
from tocsin.integrations.microsoft import CLIENT_SECRET
from tocsin.integrations.microsoft.actions import (
    Keep,
    Removals,
    UserRef,
    exchange_for,
    split_by_keep,
)
from tocsin.integrations.microsoft.actions.mailbox import SUSPECT_FOLDERS, forwarding_reasons
from tocsin.integrations.microsoft.exchange import ExchangeOnline

# No ``Confirm``: over InvokeCommand nothing prompts, and peer tools send no such parameter.

# -- hidden inbox rules -----------------------------------------------------------------------

OUTLOOK_JUNK_RULE = "Junk E-mail Rule"


class HiddenRule(BaseModel):
    rule_identity: str
    name: str
    enabled: bool
    flagged: bool
    reasons: list[str]


class HiddenRules(BaseModel):
    user: str
    rules: list[HiddenRule]
    """The rules Get-InboxRule shows only with -IncludeHidden (Graph never shows them)."""
    flagged: int


def _smtp(entries: Any) -> list[str]:
    found = []
    for entry in entries or []:
        match = re.search(r"\[(?:SMTP|smtp):([^\]]+)\]", str(entry))
        found.append(match.group(1) if match else str(entry))
    return found


def _judge_hidden(raw: dict[str, Any], domain: str) -> HiddenRule:
    reasons = forwarding_reasons(
        (
            ("forwards", _smtp(raw.get("ForwardTo"))),
            ("forwards as attachment", _smtp(raw.get("ForwardAsAttachmentTo"))),
            ("redirects", _smtp(raw.get("RedirectTo"))),
        ),
        domain,
    )
    if raw.get("DeleteMessage"):
        reasons.append("deletes matching mail")
    folder = str(raw.get("MoveToFolder") or "")
    junk_rule = raw.get("Name") == OUTLOOK_JUNK_RULE and folder.lower() == "junk email"
    if folder and folder.rsplit("\\", 1)[-1].lower() in SUSPECT_FOLDERS and not junk_rule:
        reasons.append(f"moves mail to {folder}")
    return HiddenRule(
        rule_identity=str(raw.get("RuleIdentity")),
        name=str(raw.get("Name") or ""),
        enabled=bool(raw.get("Enabled", True)),
        flagged=bool(reasons),
        reasons=reasons,
    )


def _hidden_rules(exchange: ExchangeOnline, upn: str) -> list[HiddenRule]:
    what = f"list the inbox rules of {upn}"
    shown = exchange.invoke("Get-InboxRule", {"Mailbox": upn}, mailbox=upn, what=what)
    every = exchange.invoke(
        "Get-InboxRule", {"Mailbox": upn, "IncludeHidden": True}, mailbox=upn, what=what
    )
    visible = {str(r.get("RuleIdentity")) for r in shown}
    domain = upn.rsplit("@", 1)[-1]
    return [_judge_hidden(r, domain) for r in every if str(r.get("RuleIdentity")) not in visible]


@action(
    "microsoft.list_hidden_inbox_rules",
    destructive=False,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user: (
        f"list the hidden inbox rules of {user}'s mailbox (Exchange Online Get-InboxRule "
        "-IncludeHidden), which Graph does not show"
    ),
)
def list_hidden_inbox_rules(context: ActionContext, *, user: UserRef) -> HiddenRules:
    """List the inbox rules only ``Get-InboxRule -IncludeHidden`` shows, flagging those that
    forward, redirect, delete or hide mail (Outlook's own junk rule is not flagged)."""
    upn, exchange = exchange_for(context, "microsoft.list_hidden_inbox_rules", user)
    rules = _hidden_rules(exchange, upn)
    return HiddenRules(user=upn, rules=rules, flagged=sum(1 for r in rules if r.flagged))


class RemovedHiddenRules(BaseModel):
    user: str
    removed: list[HiddenRule]
    kept: list[HiddenRule]
    note: str = (
        "a hidden rule Remove-InboxRule cannot reach is removed with MFCMapi in the mailbox "
        "(Microsoft's guidance for hidden rules)"
    )


@action(
    "microsoft.remove_hidden_inbox_rules",
    destructive=True,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user, keep: (
        f"remove the hidden inbox rules of {user} that forward, redirect, delete or hide mail "
        "(Exchange Online Remove-InboxRule)" + (f", but {', '.join(keep)}" if keep else "")
    ),
)
def remove_hidden_inbox_rules(
    context: ActionContext,
    *,
    user: UserRef,
    keep: Keep = [],  # noqa: B006 - pydantic copies defaults
) -> RemovedHiddenRules:
    """Remove the flagged hidden inbox rules but those ``keep`` names (by name or RuleIdentity)."""
    name = "microsoft.remove_hidden_inbox_rules"
    upn, exchange = exchange_for(context, name, user)
    split = split_by_keep(
        name,
        keep,
        _hidden_rules(exchange, upn),
        keys=lambda r: (r.rule_identity, r.name),
        label=lambda r: repr(r.name),
        what="hidden inbox rule",
        removable=lambda r: r.flagged,
    )
    removals = Removals(name, split.targets)
    removals.remove_each(
        lambda rule: exchange.invoke(
            "Remove-InboxRule",
            {"Mailbox": upn, "Identity": rule.rule_identity, "AlwaysDeleteOutlookRulesBlob": True},
            mailbox=upn,
            what=f"remove the hidden inbox rule {rule.name!r} of {upn}",
        ),
        label=lambda rule: f"rule {rule.name!r}",
    )
    return RemovedHiddenRules(user=upn, removed=removals.removed(), kept=split.kept)


# -- mail protocols ---------------------------------------------------------------------------

Protocol = Literal["pop", "imap", "ews", "activesync", "mapi", "owa"]
PROPERTIES: dict[str, str] = {
    "pop": "PopEnabled",
    "imap": "ImapEnabled",
    "ews": "EwsEnabled",
    "activesync": "ActiveSyncEnabled",
    "mapi": "MAPIEnabled",
    "owa": "OWAEnabled",
}
Protocols = Annotated[
    list[Protocol],
    Field(
        description="Protocols: pop, imap, ews (Exchange Web Services: Outlook for Mac, "
        "third-party clients), activesync (phone mail apps), mapi (Outlook desktop), owa "
        "(Outlook on the web)",
    ),
]


class MailProtocols(BaseModel):
    user: str
    before: dict[str, bool]
    """Each protocol's state before the call (true: enabled)."""
    changed: list[str]
    """The protocols this call switched (the undo gives them back)."""
    after: dict[str, bool]


def _set_protocols(
    context: ActionContext, name: str, user: str, protocols: Sequence[str], enabled: bool
) -> MailProtocols:
    upn, exchange = exchange_for(context, name, user)
    found = exchange.invoke(
        "Get-CASMailbox", {"Identity": upn}, mailbox=upn, what=f"read the protocols of {upn}"
    )
    mailbox = found[0] if found else {}
    before = {p: bool(mailbox.get(prop, True)) for p, prop in PROPERTIES.items()}
    changed = [p for p in dict.fromkeys(protocols) if before[p] != enabled]
    if changed:
        exchange.invoke(
            "Set-CASMailbox",
            {"Identity": upn, **{PROPERTIES[p]: enabled for p in changed}},
            mailbox=upn,
            what=f"{'enable' if enabled else 'disable'} {', '.join(changed)} for {upn}",
        )
    return MailProtocols(
        user=upn,
        before=before,
        changed=changed,
        after={**before, **{p: enabled for p in changed}},
    )


@action(
    "microsoft.disable_mail_protocols",
    destructive=True,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user, protocols: (
        f"turn off {', '.join(protocols)} for {user}'s mailbox (Exchange Online Set-CASMailbox)"
    ),
)
def disable_mail_protocols(
    context: ActionContext,
    *,
    user: UserRef,
    protocols: Protocols = ["pop", "imap"],  # noqa: B006 - pydantic copies defaults
) -> MailProtocols:
    """Turn off mail protocols (POP and IMAP unless ``protocols`` says otherwise) so that
    the attacker's client cannot download the mailbox; ``changed`` lists what was on.

    Undo with ``microsoft.enable_mail_protocols`` and
    ``protocols: "{{ steps.<this step>.outputs.changed }}"``: only what this step turned off
    is turned on again.
    """
    return _set_protocols(context, "microsoft.disable_mail_protocols", user, protocols, False)


@action(
    "microsoft.enable_mail_protocols",
    destructive=True,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user, protocols: (
        f"turn {', '.join(protocols) or 'no protocol'} back on for {user}'s mailbox "
        "(Exchange Online Set-CASMailbox)"
    ),
)
def enable_mail_protocols(
    context: ActionContext, *, user: UserRef, protocols: Protocols
) -> MailProtocols:
    """Turn mail protocols on again: the undo of ``microsoft.disable_mail_protocols``, given
    its ``changed`` output."""
    return _set_protocols(context, "microsoft.enable_mail_protocols", user, protocols, True)


# -- delegates --------------------------------------------------------------------------------


DELEGATE_FOLDERS = ("Inbox", "Calendar", "Sent Items")
"""The folders whose permissions are read: where an attacker's reader would sit."""
_EVERYONE = {"default", "anonymous"}
_HARMLESS = {"none", "availabilityonly", "limiteddetails"}


class Delegate(BaseModel):
    trustee: str
    rights: list[str]
    """FullAccess (read the whole mailbox), SendAs (send as the user), SendOnBehalf (send
    on their behalf)."""
    folders: dict[str, list[str]] = {}
    """Folder permissions by folder (Inbox: Reviewer). The trustee ``Default`` is everyone in
    the organisation, ``Anonymous`` everyone outside: listed only when they can read."""


class MailboxDelegates(BaseModel):
    user: str
    delegates: list[Delegate]
    note: str = (
        "FullAccess, SendAs and SendOnBehalf on the mailbox, and permissions on "
        + ", ".join(DELEGATE_FOLDERS)
        + "; permissions on other folders are not read"
    )


def _system(trustee: str) -> bool:
    return trustee.upper().startswith(("NT AUTHORITY\\", "S-1-5-"))


def _text(value: Any) -> str:
    """A trustee as Exchange gives it: a name, or an object with one (``DisplayName``)."""
    if isinstance(value, dict):
        return str(value.get("PrimarySmtpAddress") or value.get("DisplayName") or "")
    return str(value or "")


def _delegates(exchange: ExchangeOnline, upn: str) -> list[Delegate]:
    rights: dict[str, list[str]] = {}
    folders: dict[str, dict[str, list[str]]] = {}
    full = exchange.invoke(
        "Get-MailboxPermission",
        {"Identity": upn},
        mailbox=upn,
        what=f"read who has FullAccess to {upn}",
    )
    for entry in full:
        trustee = str(entry.get("User") or "")
        granted = " ".join(str(r) for r in entry.get("AccessRights") or [])
        if (
            "FullAccess" in granted
            and not entry.get("IsInherited")
            and not entry.get("Deny")
            and not _system(trustee)
        ):
            rights.setdefault(trustee, []).append("FullAccess")
    send_as = exchange.invoke(
        "Get-RecipientPermission",
        {"Identity": upn},
        mailbox=upn,
        what=f"read who may send as {upn}",
    )
    for entry in send_as:
        trustee = str(entry.get("Trustee") or "")
        granted = " ".join(str(r) for r in entry.get("AccessRights") or [])
        allowed = entry.get("AccessControlType", "Allow") == "Allow"
        if (
            "SendAs" in granted
            and allowed
            and not entry.get("IsInherited")
            and not _system(trustee)
        ):
            rights.setdefault(trustee, []).append("SendAs")
    mailbox = exchange.invoke(
        "Get-Mailbox", {"Identity": upn}, mailbox=upn, what=f"read who may send on behalf of {upn}"
    )
    for trustee in (mailbox[0].get("GrantSendOnBehalfTo") or []) if mailbox else []:
        rights.setdefault(_text(trustee), []).append("SendOnBehalf")
    for folder in DELEGATE_FOLDERS:
        entries = exchange.invoke(
            "Get-MailboxFolderPermission",
            {"Identity": f"{upn}:\\{folder}"},
            mailbox=upn,
            what=f"read the permissions on {upn}'s {folder}",
        )
        for entry in entries:
            trustee = _text(entry.get("User"))
            folder_rights = [str(r) for r in entry.get("AccessRights") or []]
            if not trustee or {r.lower() for r in folder_rights} <= _HARMLESS:
                continue
            folders.setdefault(trustee, {})[folder] = folder_rights
    return [
        Delegate(trustee=t, rights=rights.get(t, []), folders=folders.get(t, {}))
        for t in dict.fromkeys([*rights, *folders])
    ]


@action(
    "microsoft.list_mailbox_delegates",
    destructive=False,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user: (
        f"list who besides {user} has FullAccess, SendAs, SendOnBehalf or folder permissions "
        "on their mailbox (Exchange Online)"
    ),
)
def list_mailbox_delegates(context: ActionContext, *, user: UserRef) -> MailboxDelegates:
    """List who besides the owner has FullAccess (Get-MailboxPermission), SendAs
    (Get-RecipientPermission), SendOnBehalf (Get-Mailbox) or a permission on the inbox,
    calendar or sent items (Get-MailboxFolderPermission); inherited and system entries, and
    Default/Anonymous entries that cannot read, are left out."""
    upn, exchange = exchange_for(context, "microsoft.list_mailbox_delegates", user)
    return MailboxDelegates(user=upn, delegates=_delegates(exchange, upn))


class RemovedDelegates(BaseModel):
    user: str
    removed: list[Delegate]
    kept: list[Delegate]


def take_away(exchange: ExchangeOnline, upn: str, trustee: str, right: str) -> None:
    """Remove ``trustee``'s FullAccess (Remove-MailboxPermission) or SendAs
    (Remove-RecipientPermission) on ``upn``'s mailbox."""
    if right == "FullAccess":
        exchange.invoke(
            "Remove-MailboxPermission",
            {
                "Identity": upn,
                "User": trustee,
                "AccessRights": ["FullAccess"],
                "InheritanceType": "All",
            },
            mailbox=upn,
            what=f"remove the FullAccess of {trustee} on {upn}",
        )
    else:
        exchange.invoke(
            "Remove-RecipientPermission",
            {"Identity": upn, "Trustee": trustee, "AccessRights": ["SendAs"]},
            mailbox=upn,
            what=f"remove the SendAs of {trustee} on {upn}",
        )


@action(
    "microsoft.remove_mailbox_delegates",
    destructive=True,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user, keep: (
        f"take FullAccess, SendAs, SendOnBehalf and folder permissions on {user}'s mailbox "
        "away from everyone"
        + (f" but {', '.join(keep)}" if keep else "")
        + " (Exchange Online Remove-MailboxPermission, Remove-RecipientPermission, Set-Mailbox "
        "-GrantSendOnBehalfTo, Remove-MailboxFolderPermission)"
    ),
)
def remove_mailbox_delegates(
    context: ActionContext,
    *,
    user: UserRef,
    keep: Keep = [],  # noqa: B006 - pydantic copies defaults
) -> RemovedDelegates:
    """Remove every delegate's FullAccess, SendAs, SendOnBehalf and folder permissions but
    those of the trustees ``keep`` names; Default and Anonymous (everyone) are set back to
    None rather than removed, which Exchange refuses."""
    name = "microsoft.remove_mailbox_delegates"
    upn, exchange = exchange_for(context, name, user)
    split = split_by_keep(
        name,
        keep,
        _delegates(exchange, upn),
        keys=lambda d: (d.trustee, d.trustee.split("@")[0]),
        label=lambda d: d.trustee,
        what="delegate",
    )

    def remove_delegate(delegate: Delegate) -> None:
        for right in ("FullAccess", "SendAs"):
            if right in delegate.rights:
                take_away(exchange, upn, delegate.trustee, right)
        if "SendOnBehalf" in delegate.rights:
            # Unconfirmed: PowerShell's @{remove="..."} sent over InvokeCommand as a JSON object.
            exchange.invoke(
                "Set-Mailbox",
                {"Identity": upn, "GrantSendOnBehalfTo": {"remove": [delegate.trustee]}},
                mailbox=upn,
                what=f"remove the SendOnBehalf of {delegate.trustee} on {upn}",
            )
        for folder in delegate.folders:
            identity = f"{upn}:\\{folder}"
            if delegate.trustee.lower() in _EVERYONE:
                exchange.invoke(
                    "Set-MailboxFolderPermission",
                    {"Identity": identity, "User": delegate.trustee, "AccessRights": ["None"]},
                    mailbox=upn,
                    what=f"set {delegate.trustee}'s permission on {upn}'s {folder} back to None",
                )
            else:
                exchange.invoke(
                    "Remove-MailboxFolderPermission",
                    {"Identity": identity, "User": delegate.trustee},
                    mailbox=upn,
                    what=f"remove {delegate.trustee}'s permission on {upn}'s {folder}",
                )

    removals = Removals(name, split.targets)
    removals.remove_each(remove_delegate, label=lambda d: f"delegate {d.trustee}")
    return RemovedDelegates(user=upn, removed=removals.removed(), kept=split.kept)
