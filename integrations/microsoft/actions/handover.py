"""Handing a leaver's mailbox over (dossier §3.2: the accounts of people who left the office
stay active): convert it to a shared mailbox, give a named colleague access to it, forward
its new mail to that colleague inside the office only.

Every action here goes through Exchange Online's admin API (``InvokeCommand``), which
Microsoft does not document as a public API: the app needs ``Exchange.ManageAsApp`` and an
Exchange role (``exchange.py``). The cmdlets are those of Exchange Online PowerShell
(``Set-Mailbox -Type``, ``Add-MailboxPermission``, ``Add-RecipientPermission``,
``Get-AcceptedDomain``); shared/reference/microsoft-365-compromise.md does not cover them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from tocsin.actions import ActionContext, action
from tocsin.errors import IntegrationError
from tocsin.integrations.microsoft import CLIENT_SECRET
from tocsin.integrations.microsoft.actions import UserRef, exchange_for
from tocsin.integrations.microsoft.actions.mailbox import MailboxForwarding, read_forwarding
from tocsin.integrations.microsoft.actions.mailbox_access import take_away
from tocsin.integrations.microsoft.client import SERVICE
from tocsin.integrations.microsoft.exchange import ExchangeOnline

Colleague = Annotated[
    str,
    Field(
        min_length=3,
        max_length=256,
        pattern=r"^[^@\s]+@[^@\s]+$",
        description="The colleague's address (a mailbox of the office), like bob@contoso.com",
    ),
]
Right = Literal["FullAccess", "SendAs"]

_TYPES = {"Shared": "SharedMailbox", "Regular": "UserMailbox"}


def _mailbox(exchange: ExchangeOnline, upn: str) -> dict[str, Any]:
    found = exchange.invoke(
        "Get-Mailbox", {"Identity": upn}, mailbox=upn, what=f"read the mailbox of {upn}"
    )
    return found[0] if found else {}


def _colleague_mailbox(
    exchange: ExchangeOnline, name: str, colleague: str, upn: str
) -> dict[str, Any]:
    """The colleague's mailbox; refused when it is the leaver's own or not in the tenant."""
    if colleague.lower() == upn.lower():
        raise IntegrationError(
            name,
            SERVICE,
            f"the colleague {colleague} is the mailbox's own user; nothing was changed",
            "name the colleague who takes over the mail",
        )
    try:
        return _mailbox(exchange, colleague)
    except IntegrationError as error:
        if "has no mailbox" not in error.message:
            raise
        raise IntegrationError(
            name,
            SERVICE,
            f"{colleague} has no mailbox in the office's tenant; nothing was changed on {upn}",
            "check the colleague's address in the Exchange admin centre (Recipients → "
            "Mailboxes), or hand the mailbox over as a shared mailbox",
            status_code=error.status_code,
        ) from None


# -- mailbox type -----------------------------------------------------------------------------


class MailboxType(BaseModel):
    user: str
    before: str
    """RecipientTypeDetails before the call (UserMailbox, SharedMailbox...)."""
    after: str
    changed: bool
    note: str


def _set_type(
    context: ActionContext, name: str, user: str, wanted: Literal["Shared", "Regular"], note: str
) -> MailboxType:
    upn, exchange = exchange_for(context, name, user)
    before = str(_mailbox(exchange, upn).get("RecipientTypeDetails") or "UserMailbox")
    target = _TYPES[wanted]
    if before not in _TYPES.values():
        raise IntegrationError(
            name,
            SERVICE,
            f"the mailbox of {upn} is a {before}, which is neither a user nor a shared "
            "mailbox; nothing was changed",
            "convert it in the Exchange admin centre if that is really wanted",
        )
    if before != target:
        exchange.invoke(
            "Set-Mailbox",
            {"Identity": upn, "Type": wanted},
            mailbox=upn,
            what=f"convert the mailbox of {upn} to a {target}",
        )
    return MailboxType(user=upn, before=before, after=target, changed=before != target, note=note)


@action(
    "microsoft.convert_to_shared_mailbox",
    destructive=True,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user: (
        f"convert {user}'s mailbox to a shared mailbox (Exchange Online Set-Mailbox -Type "
        "Shared): its mail stays, nobody signs in to it any more"
    ),
)
def convert_to_shared_mailbox(context: ActionContext, *, user: UserRef) -> MailboxType:
    """Convert the user's mailbox to a shared mailbox (``Set-Mailbox -Type Shared``), read
    first with ``Get-Mailbox``: a mailbox already shared is left as it is (``changed``
    false). Undo with ``microsoft.convert_to_user_mailbox``."""
    return _set_type(
        context,
        "microsoft.convert_to_shared_mailbox",
        user,
        "Shared",
        "a shared mailbox under 50 GB needs no licence: remove the user's licence only after "
        "this, or the mailbox is deleted 30 days later; people reach it through FullAccess",
    )


@action(
    "microsoft.convert_to_user_mailbox",
    destructive=True,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user: (
        f"convert {user}'s shared mailbox back to a user mailbox (Exchange Online Set-Mailbox "
        "-Type Regular)"
    ),
)
def convert_to_user_mailbox(context: ActionContext, *, user: UserRef) -> MailboxType:
    """Convert a shared mailbox back to a user mailbox (``Set-Mailbox -Type Regular``): the
    undo of ``microsoft.convert_to_shared_mailbox``; a user mailbox is left as it is."""
    return _set_type(
        context,
        "microsoft.convert_to_user_mailbox",
        user,
        "Regular",
        "a user mailbox needs an Exchange Online licence assigned to the user",
    )


# -- a colleague's access ---------------------------------------------------------------------


def _held(exchange: ExchangeOnline, upn: str, colleague: str) -> set[str]:
    """Which of FullAccess and SendAs the colleague holds on the mailbox (not inherited)."""
    held: set[str] = set()
    who = colleague.lower()
    for entry in exchange.invoke(
        "Get-MailboxPermission", {"Identity": upn}, mailbox=upn, what=f"read who reaches {upn}"
    ):
        rights = " ".join(str(r) for r in entry.get("AccessRights") or [])
        if (
            str(entry.get("User") or "").lower() == who
            and "FullAccess" in rights
            and not entry.get("Deny")
            and not entry.get("IsInherited")
        ):
            held.add("FullAccess")
    for entry in exchange.invoke(
        "Get-RecipientPermission",
        {"Identity": upn},
        mailbox=upn,
        what=f"read who may send as {upn}",
    ):
        rights = " ".join(str(r) for r in entry.get("AccessRights") or [])
        if (
            str(entry.get("Trustee") or "").lower() == who
            and "SendAs" in rights
            and entry.get("AccessControlType", "Allow") == "Allow"
            and not entry.get("IsInherited")
        ):
            held.add("SendAs")
    return held


class MailboxAccessGranted(BaseModel):
    user: str
    colleague: str
    granted: list[str]
    """The rights this call gave (the undo takes exactly these away)."""
    already: list[str]
    """The rights the colleague held before the call."""
    changed: bool


@action(
    "microsoft.grant_mailbox_access",
    destructive=True,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user, colleague, send_as: (
        f"give {colleague} FullAccess to {user}'s mailbox (Exchange Online "
        "Add-MailboxPermission, the mailbox shown in their Outlook)"
        + (" and the right to send as it (Add-RecipientPermission)" if send_as else "")
    ),
)
def grant_mailbox_access(
    context: ActionContext,
    *,
    user: UserRef,
    colleague: Colleague,
    send_as: Annotated[
        bool, Field(description="Also let the colleague send as the mailbox (SendAs)")
    ] = False,
    automapping: Annotated[
        bool, Field(description="Show the mailbox in the colleague's Outlook by itself")
    ] = True,
) -> MailboxAccessGranted:
    """Give a colleague FullAccess to the mailbox (and SendAs when asked); the colleague
    must have a mailbox in the tenant. What they hold already is not granted again.

    Undo with ``microsoft.remove_mailbox_access`` and
    ``rights: "{{ steps.<this step>.outputs.granted }}"``: only what this step gave goes.
    """
    name = "microsoft.grant_mailbox_access"
    upn, exchange = exchange_for(context, name, user)
    address = str(_colleague_mailbox(exchange, name, colleague, upn).get("UserPrincipalName"))
    address = address if "@" in address else colleague
    already = _held(exchange, upn, address)
    wanted = ["FullAccess", *(["SendAs"] if send_as else [])]
    granted = []
    for right in wanted:
        if right in already:
            continue
        if right == "FullAccess":
            exchange.invoke(
                "Add-MailboxPermission",
                {
                    "Identity": upn,
                    "User": address,
                    "AccessRights": ["FullAccess"],
                    "InheritanceType": "All",
                    "AutoMapping": automapping,
                },
                mailbox=upn,
                what=f"give {address} FullAccess to {upn}",
            )
        else:
            exchange.invoke(
                "Add-RecipientPermission",
                {"Identity": upn, "Trustee": address, "AccessRights": ["SendAs"]},
                mailbox=upn,
                what=f"let {address} send as {upn}",
            )
        granted.append(right)
    return MailboxAccessGranted(
        user=upn,
        colleague=address,
        granted=granted,
        already=sorted(already),
        changed=bool(granted),
    )


class MailboxAccessRemoved(BaseModel):
    user: str
    colleague: str
    removed: list[str]
    changed: bool


@action(
    "microsoft.remove_mailbox_access",
    destructive=True,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user, colleague, rights: (
        f"take {', '.join(rights) or 'no right'} on {user}'s mailbox away from {colleague} "
        "(Exchange Online Remove-MailboxPermission, Remove-RecipientPermission)"
    ),
)
def remove_mailbox_access(
    context: ActionContext,
    *,
    user: UserRef,
    colleague: Colleague,
    rights: Annotated[
        list[Right], Field(description="FullAccess and/or SendAs: the rights to take away")
    ] = ["FullAccess", "SendAs"],  # noqa: B006 - pydantic copies defaults
) -> MailboxAccessRemoved:
    """Take a colleague's FullAccess and/or SendAs on the mailbox away: the undo of
    ``microsoft.grant_mailbox_access`` given its ``granted``; what they do not hold is skipped."""
    name = "microsoft.remove_mailbox_access"
    upn, exchange = exchange_for(context, name, user)
    held = _held(exchange, upn, colleague)
    removed = []
    for right in dict.fromkeys(rights):
        if right not in held:
            continue
        take_away(exchange, upn, colleague, right)
        removed.append(right)
    return MailboxAccessRemoved(
        user=upn, colleague=colleague, removed=removed, changed=bool(removed)
    )


# -- forwarding inside the office -------------------------------------------------------------


class InternalForwarding(BaseModel):
    user: str
    forward_to: str
    accepted_domains: list[str]
    """The office's authoritative accepted domains (Get-AcceptedDomain): mail to them stays
    in the tenant."""
    before: MailboxForwarding
    changed: bool


def _office_domains(exchange: ExchangeOnline) -> list[str]:
    found = exchange.invoke("Get-AcceptedDomain", {}, what="read the office's accepted domains")
    return sorted(
        {
            str(d.get("DomainName") or d.get("Name") or "").lower()
            for d in found
            # Only a domain Exchange says it is authoritative for: a missing type is not trusted.
            if str(d.get("DomainType") or "") == "Authoritative"
        }
        - {""}
    )


@action(
    "microsoft.set_internal_forwarding",
    destructive=True,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user, forward_to, keep_copy: (
        f"forward {user}'s new mail to {forward_to}"
        + (", keeping a copy in the mailbox" if keep_copy else "")
        + " (Exchange Online Set-Mailbox -ForwardingSmtpAddress), refused unless "
        f"{forward_to} is in one of the office's accepted domains"
    ),
)
def set_internal_forwarding(
    context: ActionContext,
    *,
    user: UserRef,
    forward_to: Colleague,
    keep_copy: Annotated[
        bool, Field(description="Keep each message in the mailbox too (DeliverToMailboxAndForward)")
    ] = True,
) -> InternalForwarding:
    """Forward the mailbox's new mail to an address of the office (``Set-Mailbox
    -ForwardingSmtpAddress``), refusing any address outside its authoritative accepted
    domains (``Get-AcceptedDomain``: an InternalRelay domain's mail may leave the tenant).
    A mailbox already forwarding there the same way is left as it is.

    No undo: ``microsoft.disable_forwarding`` stops any forwarding, including one the
    mailbox had before this step (its ``before`` output says which).
    """
    name = "microsoft.set_internal_forwarding"
    upn, exchange = exchange_for(context, name, user)
    target = forward_to.strip().lower()
    domains = _office_domains(exchange)
    if target.rsplit("@", 1)[-1] not in domains:
        raise IntegrationError(
            name,
            SERVICE,
            f"{forward_to} is outside the office (its accepted domains are "
            f"{', '.join(domains) or 'none'}); {upn}'s mail was not forwarded",
            "a leaver's mail goes only to a colleague's address in the office; forwarding "
            "outside would leak clients' mail",
        )
    before = read_forwarding(exchange, upn)
    done = (
        (before.forwarding_smtp_address or "").lower() == target
        and before.forwarding_address is None
        and before.deliver_to_mailbox_and_forward == keep_copy
    )
    if not done:
        exchange.invoke(
            "Set-Mailbox",
            {
                "Identity": upn,
                "ForwardingSmtpAddress": f"smtp:{target}",
                "ForwardingAddress": None,
                "DeliverToMailboxAndForward": keep_copy,
            },
            mailbox=upn,
            what=f"forward the mail of {upn} to {target}",
        )
    return InternalForwarding(
        user=upn, forward_to=target, accepted_domains=domains, before=before, changed=not done
    )
