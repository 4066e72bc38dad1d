"""The mailbox: inbox rules (Graph) and forwarding (Exchange Online's admin API, since Graph
does not show it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from tocsin.actions import ActionContext, action
from tocsin.integrations.microsoft import CLIENT_SECRET
from tocsin.integrations.microsoft.actions import (
    FoundUser,
    Keep,
    Removals,
    UserRef,
    exchange_for,
    look_up_user,
    split_by_keep,
)
from tocsin.integrations.microsoft.client import BatchItem
from tocsin.integrations.microsoft.exchange import ExchangeOnline

# -- inbox rules ----------------------------------------------------------------------------

SUSPECT_FOLDERS = frozenset(
    {
        "rss feeds",
        "rss subscriptions",
        "archive",
        "junk email",
        "deleted items",
        "conversation history",
        "notes",
        "sync issues",
        "conflicts",
        "outbox",
    }
)
"""Folders attackers move mail to so that the user does not see it (S6)."""


class InboxRule(BaseModel):
    id: str
    name: str
    enabled: bool
    flagged: bool
    reasons: list[str]
    """Why the rule looks like an attacker's: forwards, redirects, deletes, hides mail."""


class InboxRules(BaseModel):
    user: str
    user_id: str
    rules: list[InboxRule]
    flagged: int
    note: str = (
        "Graph does not show hidden rules: check them with Exchange Online PowerShell "
        "(Get-InboxRule -Mailbox <user> -IncludeHidden), and mailbox forwarding with Get-Mailbox"
    )


def _addresses(recipients: Any) -> list[str]:
    found = []
    for recipient in recipients or []:
        email = recipient.get("emailAddress") if isinstance(recipient, dict) else None
        if isinstance(email, dict) and email.get("address"):
            found.append(str(email["address"]))
    return found


def forwarding_reasons(sent: Iterable[tuple[str, Iterable[str]]], domain: str) -> list[str]:
    """Why a rule is suspect for where it sends mail: one reason per (verb, address), the
    address marked when it is outside the organisation's ``domain``."""
    reasons = []
    for verb, addresses in sent:
        for address in addresses:
            outside = not address.lower().endswith("@" + domain.lower())
            reasons.append(
                f"{verb} mail to {address}" + (" (outside the organisation)" if outside else "")
            )
    return reasons


def _judge_rule(raw: dict[str, Any], folders: dict[str, str] | None, domain: str) -> InboxRule:
    actions = raw.get("actions") if isinstance(raw.get("actions"), dict) else {}
    actions = actions or {}
    reasons = forwarding_reasons(
        (
            ("forwards", _addresses(actions.get("forwardTo"))),
            ("forwards as attachment", _addresses(actions.get("forwardAsAttachmentTo"))),
            ("redirects", _addresses(actions.get("redirectTo"))),
        ),
        domain,
    )
    if actions.get("delete"):
        reasons.append("deletes matching mail")
    if actions.get("permanentDelete"):
        reasons.append("permanently deletes matching mail")
    for key, verb in (("moveToFolder", "moves"), ("copyToFolder", "copies")):
        folder = actions.get(key)
        if not folder:
            continue
        if folders is None:
            reasons.append(f"{verb} mail to a folder Tocsin cannot name (grant Mail.ReadBasic.All)")
        elif folder not in folders:
            reasons.append(f"{verb} mail to a folder that is not at the top of the mailbox")
        elif folders[folder].lower() in SUSPECT_FOLDERS:
            reasons.append(f"{verb} mail to {folders[folder]}")
    name = str(raw.get("displayName") or "")
    if reasons and not re.search(r"\w", name):
        reasons.append(f"has a name of punctuation only ({name!r})")
    return InboxRule(
        id=str(raw.get("id")),
        name=name,
        enabled=bool(raw.get("isEnabled", True)),
        flagged=bool(reasons),
        reasons=reasons,
    )


def _rules(found: FoundUser) -> list[InboxRule]:
    graph = found.graph
    answer = graph.call(
        "GET",
        "/users/{user}/mailFolders/inbox/messageRules",
        user=found.id,
        what="list the inbox rules",
    )
    raw = [r for r in (answer.body or {}).get("value") or [] if isinstance(r, dict)]
    folders: dict[str, str] | None = {}
    if any((r.get("actions") or {}).get(k) for r in raw for k in ("moveToFolder", "copyToFolder")):
        listed = graph.call(
            "GET",
            "/users/{user}/mailFolders",
            user=found.id,
            query={"$select": "id,displayName", "$top": 250},
            allow=(403,),
        )
        folders = (
            None
            if listed.status == 403
            else {
                str(f["id"]): str(f.get("displayName", ""))
                for f in (listed.body or {}).get("value") or []
            }
        )
    domain = found.upn.rsplit("@", 1)[-1]
    return [_judge_rule(r, folders, domain) for r in raw]


@action(
    "microsoft.list_inbox_rules",
    destructive=False,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user: (
        f"list the inbox rules of {user}'s mailbox and flag those that "
        "forward, redirect, delete or hide mail"
    ),
)
def list_inbox_rules(context: ActionContext, *, user: UserRef) -> InboxRules:
    """List the mailbox's inbox rules, flagging those that forward, redirect, delete or hide mail."""
    found = look_up_user(context, "microsoft.list_inbox_rules", user)
    rules = _rules(found)
    return InboxRules(
        user=found.upn,
        user_id=found.id,
        rules=rules,
        flagged=sum(1 for r in rules if r.flagged),
    )


class RemovedRules(BaseModel):
    user: str
    user_id: str
    removed: list[InboxRule]
    kept: list[InboxRule]
    """Flagged rules kept because ``keep`` names them."""
    unflagged: list[str]
    """Names of the rules left alone because nothing in them looks like an attacker's."""


@action(
    "microsoft.remove_inbox_rules",
    destructive=True,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user, keep: (
        f"delete the inbox rules of {user} that forward, redirect, "
        f"delete or hide mail" + (f", but {', '.join(keep)}" if keep else "")
    ),
)
def remove_inbox_rules(context: ActionContext, *, user: UserRef, keep: Keep = []) -> RemovedRules:  # noqa: B006 - pydantic copies defaults
    """Delete the inbox rules that forward, redirect, delete or hide mail (rules without such
    actions are left alone); ``keep`` names flagged rules the user confirms are theirs.

    List them first (``microsoft.list_inbox_rules``) to keep the evidence; hidden rules and
    mailbox forwarding are not visible to Graph.
    """
    name = "microsoft.remove_inbox_rules"
    found = look_up_user(context, name, user)
    rules = _rules(found)
    split = split_by_keep(
        name,
        keep,
        rules,
        keys=lambda r: (r.id, r.name),
        label=lambda r: repr(r.name),
        what="inbox rule",
        removable=lambda r: r.flagged,
    )
    items = [
        BatchItem(
            rule.id,
            "DELETE",
            found.graph.relative(
                "/users/{user}/mailFolders/inbox/messageRules/{rule}", user=found.id, rule=rule.id
            ),
        )
        for rule in split.targets
    ]
    removals = Removals(name, split.targets)
    # In $batch, at most 4 to the mailbox at once (batch.py: Outlook's MailboxConcurrency).
    outcomes = found.graph.batch(items, what="delete an inbox rule")
    for rule, outcome in zip(split.targets, outcomes, strict=True):
        removals.record(rule, outcome, f"rule {rule.name!r}")
    return RemovedRules(
        user=found.upn,
        user_id=found.id,
        removed=removals.removed(),
        kept=split.kept,
        unflagged=[r.name for r in rules if not r.flagged],
    )


# -- mailbox forwarding (Exchange Online) ----------------------------------------------------


class MailboxForwarding(BaseModel):
    """Where the mailbox forwards every message, as Exchange Online says (Graph cannot see it)."""

    user: str
    forwarding_smtp_address: str | None
    """An address anywhere (``smtp:`` removed): what an attacker sets."""
    forwarding_address: str | None
    """A recipient of the organisation (an admin sets this one)."""
    deliver_to_mailbox_and_forward: bool
    forwards: bool


def read_forwarding(exchange: ExchangeOnline, upn: str) -> MailboxForwarding:
    """The mailbox's forwarding as Exchange Online's Get-Mailbox shows it."""
    found = exchange.invoke(
        "Get-Mailbox", {"Identity": upn}, mailbox=upn, what=f"read the mailbox of {upn}"
    )
    mailbox = found[0] if found else {}
    smtp = mailbox.get("ForwardingSmtpAddress")
    address = mailbox.get("ForwardingAddress")
    smtp_text = str(smtp).removeprefix("smtp:").removeprefix("SMTP:") if smtp else None
    return MailboxForwarding(
        user=upn,
        forwarding_smtp_address=smtp_text,
        forwarding_address=str(address) if address else None,
        deliver_to_mailbox_and_forward=bool(mailbox.get("DeliverToMailboxAndForward")),
        forwards=bool(smtp_text or address),
    )


@action(
    "microsoft.check_forwarding",
    destructive=False,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user: (
        f"read whether {user}'s mailbox forwards mail (Exchange Online Get-Mailbox)"
    ),
)
def check_forwarding(context: ActionContext, *, user: UserRef) -> MailboxForwarding:
    """Read the mailbox's forwarding (Exchange Online), which Graph does not show.

    Goes through Exchange Online's admin API (InvokeCommand), which Microsoft does not
    document as a public API: the app needs Exchange.ManageAsApp and an Exchange role.
    """
    upn, exchange = exchange_for(context, "microsoft.check_forwarding", user)
    return read_forwarding(exchange, upn)


class RemovedForwarding(BaseModel):
    user: str
    before: MailboxForwarding
    changed: bool
    note: str = (
        "forwarding by inbox rules, transport rules and apps is not this setting: see "
        "microsoft.remove_inbox_rules and microsoft.revoke_oauth_grants"
    )


@action(
    "microsoft.disable_forwarding",
    destructive=True,
    idempotent=True,
    secrets=(CLIENT_SECRET,),
    describe=lambda user: (
        f"stop {user}'s mailbox forwarding mail (Exchange Online Set-Mailbox "
        "-ForwardingSmtpAddress $null -ForwardingAddress $null)"
    ),
)
def disable_forwarding(context: ActionContext, *, user: UserRef) -> RemovedForwarding:
    """Stop the mailbox forwarding mail (Exchange Online Set-Mailbox), as S1 step 2 asks.

    Goes through Exchange Online's admin API (InvokeCommand), which Microsoft does not
    document as a public API: the app needs Exchange.ManageAsApp and an Exchange role.
    """
    name = "microsoft.disable_forwarding"
    upn, exchange = exchange_for(context, name, user)
    before = read_forwarding(exchange, upn)
    if before.forwards or before.deliver_to_mailbox_and_forward:
        exchange.invoke(
            "Set-Mailbox",
            {
                "Identity": upn,
                "ForwardingSmtpAddress": None,
                "ForwardingAddress": None,
                "DeliverToMailboxAndForward": False,
            },
            mailbox=upn,
            what=f"remove the forwarding of {upn}",
        )
    return RemovedForwarding(
        user=upn, before=before, changed=before.forwards or before.deliver_to_mailbox_and_forward
    )
