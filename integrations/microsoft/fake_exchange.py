"""More of the fake's Exchange Online cmdlets (``InvokeCommand``): hidden inbox rules,
protocols, mailbox type, accepted domains.

- ``Get-InboxRule -Mailbox <upn> [-IncludeHidden]``: the rules Graph shows (in Exchange's
  shape: ``RuleIdentity``, ``ForwardTo`` as ``"Name" [SMTP:address]``...), and with
  ``IncludeHidden`` also the hidden ones (Outlook's junk rule, an attacker's rule hidden by
  editing its MAPI properties);
- ``Remove-InboxRule -Mailbox <upn> -Identity <RuleIdentity>``;
- ``Get-CASMailbox``/``Set-CASMailbox``: ``PopEnabled``, ``ImapEnabled``, ``EwsEnabled``,
  ``ActiveSyncEnabled``, ``MAPIEnabled``, ``OWAEnabled`` (an unknown parameter is refused as
  the cmdlet does; a set that changes nothing warns);
- ``Set-Mailbox -Type Shared|Regular`` (``RecipientTypeDetails`` ``SharedMailbox`` /
  ``UserMailbox``; setting the type it has warns), which fake.py's ``Set-Mailbox`` hands here;
- ``Get-AcceptedDomain``: the tenant's domain (``Default``), the domains of its users'
  sign-in addresses and ``<tenant>.onmicrosoft.com``, all ``Authoritative``.

Who may reach a mailbox (mailbox, recipient and folder permissions, the blocked sender) is
in ``fake_exchange_access``; the seeded state and the handlers' shared replies in
``fake_exchange_state``.

The shapes are those peer tools read (the API is not documented). ``CMDLETS`` is what the
fake's ``InvokeCommand`` dispatches here; each handler runs with the fake's lock held.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tocsin.integrations.microsoft.fake_exchange_access import ACCESS_CMDLETS
from tocsin.integrations.microsoft.fake_exchange_state import (
    ATTACKER_DELEGATE,
    CAS_PROPERTIES,
    GENUINE_DELEGATE_LOCAL,
    HIDDEN_RULE_NAME,
    Handler,
    checked_mailbox,
    cmdlet_reply,
    mailbox_state,
    refuse_unknown_parameters,
    seeded_exchange,
)
from tocsin.sandbox.fake_service import Reply

if TYPE_CHECKING:
    from tocsin.integrations.microsoft.fake import FakeMicrosoft

__all__ = [
    "ATTACKER_DELEGATE",
    "CMDLETS",
    "GENUINE_DELEGATE_LOCAL",
    "HIDDEN_RULE_NAME",
    "seeded_exchange",
    "set_mailbox_type",
]


def _addresses(recipients: Any) -> list[str] | None:
    found = [
        f'"{r["emailAddress"].get("name") or r["emailAddress"]["address"]}" '
        f"[SMTP:{r['emailAddress']['address']}]"
        for r in recipients or []
        if isinstance(r, dict) and isinstance(r.get("emailAddress"), dict)
    ]
    return found or None


def _rule_identity(rule: Mapping[str, Any]) -> str:
    """The RuleIdentity Exchange shows for a rule Graph lists (a number made from its id)."""
    return str(int(hashlib.sha256(rule["id"].encode()).hexdigest()[:15], 16))


def _unmodified(parameters: Mapping[str, Any], unchanged: bool) -> list[str]:
    """The warning a Set- cmdlet gives when it changed nothing; none when it did."""
    if not unchanged:
        return []
    return [
        f"The command completed successfully but no settings of '{parameters['Identity']}' "
        "have been modified."
    ]


def _visible_rules(fake: FakeMicrosoft, user: dict[str, Any]) -> list[dict[str, Any]]:
    """Graph's rules of the mailbox, as Get-InboxRule shows them."""
    rules = []
    for rule in fake.tenant.rules.get(user["id"], []):
        actions = rule.get("actions") or {}
        rules.append(
            {
                "Name": rule["displayName"],
                "RuleIdentity": _rule_identity(rule),
                "Enabled": rule.get("isEnabled", True),
                "Priority": rule.get("sequence", 0),
                "ForwardTo": _addresses(actions.get("forwardTo")),
                "RedirectTo": _addresses(actions.get("redirectTo")),
                "ForwardAsAttachmentTo": _addresses(actions.get("forwardAsAttachmentTo")),
                "DeleteMessage": bool(actions.get("delete")),
                "MoveToFolder": actions.get("moveToFolder"),
                "Description": "",
            }
        )
    return rules


def get_inbox_rule(fake: FakeMicrosoft, parameters: Mapping[str, Any]) -> Reply:
    # Unconfirmed: IncludeHidden as a JSON boolean (a PowerShell switch over InvokeCommand).
    found = checked_mailbox(
        fake, parameters, {"Mailbox", "IncludeHidden", "Identity"}, by="Mailbox"
    )
    if isinstance(found, Reply):
        return found
    user, state = found
    rules = _visible_rules(fake, user)
    if parameters.get("IncludeHidden"):
        rules += state["hidden_rules"]
    upn = user["userPrincipalName"]
    shown = [{"Identity": f"{upn}\\{r['RuleIdentity']}", "MailboxOwnerId": upn, **r} for r in rules]
    return cmdlet_reply(shown)


def remove_inbox_rule(fake: FakeMicrosoft, parameters: Mapping[str, Any]) -> Reply:
    # Unconfirmed: AlwaysDeleteOutlookRulesBlob as a JSON boolean over InvokeCommand.
    found = checked_mailbox(
        fake, parameters, {"Mailbox", "Identity", "AlwaysDeleteOutlookRulesBlob"}, by="Mailbox"
    )
    if isinstance(found, Reply):
        return found
    user, state = found
    wanted = str(parameters.get("Identity", "")).rsplit("\\", 1)[-1]
    hidden = [r for r in state["hidden_rules"] if r["RuleIdentity"] == wanted]
    if hidden:
        state["hidden_rules"].remove(hidden[0])
        return cmdlet_reply([])
    visible = {r["RuleIdentity"]: r for r in _visible_rules(fake, user)}
    if wanted in visible:
        graph_rules = fake.tenant.rules.get(user["id"], [])
        graph_rules[:] = [r for r in graph_rules if _rule_identity(r) != wanted]
        return cmdlet_reply([])
    return fake._exchange_error(
        404,
        "Configuration.Tasks.ManagementObjectNotFoundException",
        f"The operation couldn't be performed because object '{parameters.get('Identity')}' "
        "couldn't be found on 'AM0PR01A001DC01.EURPR01A001.prod.outlook.com'.",
    )


def get_cas_mailbox(fake: FakeMicrosoft, parameters: Mapping[str, Any]) -> Reply:
    found = mailbox_state(fake, parameters.get("Identity"))
    if isinstance(found, Reply):
        return found
    user, state = found
    return cmdlet_reply(
        [
            {
                "Identity": user["displayName"],
                "Name": user["displayName"],
                "PrimarySmtpAddress": user["mail"],
                "ExternalDirectoryObjectId": user["id"],
                **state["cas"],
            }
        ]
    )


def set_cas_mailbox(fake: FakeMicrosoft, parameters: Mapping[str, Any]) -> Reply:
    found = checked_mailbox(fake, parameters, {"Identity", *CAS_PROPERTIES})
    if isinstance(found, Reply):
        return found
    _, state = found
    before = dict(state["cas"])
    for name in CAS_PROPERTIES:
        if name in parameters:
            if not isinstance(parameters[name], bool):
                return fake._exchange_error(
                    400,
                    "Management.RestApiClient.RestClientException",
                    f"Cannot process argument transformation on parameter '{name}'. Cannot "
                    "convert value to type System.Boolean.",
                )
            state["cas"][name] = parameters[name]
    return cmdlet_reply([], _unmodified(parameters, before == state["cas"]))


MAILBOX_TYPES = {"Shared": "SharedMailbox", "Regular": "UserMailbox"}


def set_mailbox_type(fake: FakeMicrosoft, parameters: Mapping[str, Any]) -> Reply:
    """``Set-Mailbox -Identity <upn> -Type Shared|Regular`` (fake.py's Set-Mailbox hands it here)."""
    refused = refuse_unknown_parameters(fake, parameters, {"Identity", "Type"})
    if refused:
        return refused
    found = fake._exchange_mailbox(parameters.get("Identity"))
    if isinstance(found, Reply):
        return found
    _, mailbox = found
    wanted = MAILBOX_TYPES.get(str(parameters.get("Type")))
    if wanted is None:
        return fake._exchange_error(
            400,
            "Management.RestApiClient.RestClientException",
            f"Cannot process argument transformation on parameter 'Type'. Cannot convert value "
            f'"{parameters.get("Type")}" to type "ConvertibleMailboxSubType".',
        )
    before = mailbox.get("RecipientTypeDetails", "UserMailbox")
    mailbox["RecipientTypeDetails"] = wanted
    return cmdlet_reply([], _unmodified(parameters, before == wanted))


def get_accepted_domain(fake: FakeMicrosoft, parameters: Mapping[str, Any]) -> Reply:
    refused = refuse_unknown_parameters(fake, parameters, {"Identity"})
    if refused:
        return refused
    initial = f"{fake.tenant_domain.split('.')[0].replace('-', '')}.onmicrosoft.com"
    names = [
        fake.tenant_domain.lower(),
        *(u["userPrincipalName"].rsplit("@", 1)[-1].lower() for u in fake.tenant.users),
        initial,
    ]
    domains = [
        {
            "Identity": name,
            "Name": name,
            "DomainName": name,
            "DomainType": "Authoritative",
            "Default": name == fake.tenant_domain.lower(),
            "InitialDomain": name == initial,
            "MatchSubDomains": False,
        }
        for name in dict.fromkeys(names)
    ]
    return cmdlet_reply(domains)


CMDLETS: dict[str, Handler] = {
    **ACCESS_CMDLETS,
    "Get-InboxRule": get_inbox_rule,
    "Remove-InboxRule": remove_inbox_rule,
    "Get-CASMailbox": get_cas_mailbox,
    "Set-CASMailbox": set_cas_mailbox,
    "Get-AcceptedDomain": get_accepted_domain,
}
