"""Whether Exchange Online stopped the user from sending (the "Restricted entities" list,
after the attacker sent spam from the mailbox), and letting them send again (reference §13,
S1 step 4: the user's messages bounce with NDR 5.1.8 until then).

No Graph call reaches this list: both actions go through Exchange Online's admin API
(``Get-BlockedSenderAddress`` / ``Remove-BlockedSenderAddress``, ``exchange.py``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from tocsin.actions import ActionContext, action
from tocsin.integrations.microsoft import CLIENT_SECRET
from tocsin.integrations.microsoft.actions import UserRef, exchange_for
from tocsin.integrations.microsoft.exchange import ExchangeOnline

Reason = Annotated[
    str,
    Field(
        min_length=3,
        max_length=500,
        description="Why the user may send again, kept by Exchange with the removal",
    ),
]


class SendingRestriction(BaseModel):
    user: str
    restricted: bool
    """Whether Exchange Online blocks the user from sending (Restricted entities)."""
    reason: str | None = None
    """Exchange's reason, such as outbound spam, when restricted."""
    since: str | None = None
    changed: bool = False
    """Whether this call lifted the restriction."""


def _read(
    context: ActionContext, name: str, user: str
) -> tuple[str, ExchangeOnline, dict[str, Any]]:
    upn, exchange = exchange_for(context, name, user)
    # Unconfirmed: the shape of a Get-BlockedSenderAddress entry over InvokeCommand
    # (SenderAddress, Reason, CreatedDatetime are the PowerShell object's properties).
    found = exchange.invoke(
        "Get-BlockedSenderAddress",
        {"SenderAddress": upn},
        what=f"read whether {upn} is blocked from sending",
    )
    return upn, exchange, found[0] if found else {}


def _restriction(upn: str, entry: dict[str, Any], *, changed: bool = False) -> SendingRestriction:
    return SendingRestriction(
        user=upn,
        restricted=bool(entry) and not changed,
        reason=str(entry["Reason"]) if entry.get("Reason") else None,
        since=str(entry["CreatedDatetime"]) if entry.get("CreatedDatetime") else None,
        changed=changed,
    )


@action(
    "microsoft.check_sending_restriction",
    destructive=False,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user: (
        f"read whether Exchange Online blocks {user} from sending mail (Restricted entities, "
        "Get-BlockedSenderAddress)"
    ),
)
def check_sending_restriction(context: ActionContext, *, user: UserRef) -> SendingRestriction:
    """Whether the user is on Exchange Online's restricted list, and why."""
    upn, _, entry = _read(context, "microsoft.check_sending_restriction", user)
    return _restriction(upn, entry)


@action(
    "microsoft.unblock_sending",
    destructive=True,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user, reason: (
        f"let {user} send mail again if Exchange Online restricted them "
        f"(Remove-BlockedSenderAddress, reason: {reason})"
    ),
)
def unblock_sending(
    context: ActionContext,
    *,
    user: UserRef,
    reason: Reason = "Account cleaned after compromise; incident handled with Tocsin",
) -> SendingRestriction:
    """Remove the user from the restricted list; a user who is not on it is left as is
    (``changed`` false). Run it only once the mailbox is clean: the attacker's rules and
    forwarding would send spam again, and Exchange would restrict the user again."""
    name = "microsoft.unblock_sending"
    upn, exchange, entry = _read(context, name, user)
    if not entry:
        return _restriction(upn, entry)
    exchange.invoke(
        "Remove-BlockedSenderAddress",
        {"SenderAddress": upn, "Reason": reason},
        what=f"let {upn} send mail again",
    )
    return _restriction(upn, entry, changed=True)
