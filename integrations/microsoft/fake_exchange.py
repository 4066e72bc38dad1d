"""More of the fake's Exchange Online cmdlets (``InvokeCommand``): hidden inbox rules,
protocols, delegates.

- ``Get-InboxRule -Mailbox <upn> [-IncludeHidden]``: the rules Graph shows (in Exchange's
  shape: ``RuleIdentity``, ``ForwardTo`` as ``"Name" [SMTP:address]``...), and with
  ``IncludeHidden`` also the hidden ones (Outlook's junk rule, an attacker's rule hidden by
  editing its MAPI properties);
- ``Remove-InboxRule -Mailbox <upn> -Identity <RuleIdentity>``;
- ``Get-CASMailbox``/``Set-CASMailbox``: ``PopEnabled``, ``ImapEnabled``, ``EwsEnabled``,
  ``ActiveSyncEnabled``, ``MAPIEnabled``, ``OWAEnabled`` (an unknown parameter is refused as
  the cmdlet does; a set that changes nothing warns);
- ``Get-MailboxPermission``/``Remove-MailboxPermission`` (FullAccess: ``User``,
  ``AccessRights``, ``IsInherited``, ``Deny``), ``Get-RecipientPermission``/
  ``Remove-RecipientPermission`` (SendAs: ``Trustee``); removing what is not there warns;
- ``Add-MailboxPermission -AccessRights FullAccess -AutoMapping``, ``Add-RecipientPermission
  -AccessRights SendAs`` (the trustee must be a mailbox of the tenant; adding what is there
  already changes nothing);
- ``Set-Mailbox -Type Shared|Regular`` (``RecipientTypeDetails`` ``SharedMailbox`` /
  ``UserMailbox``; setting the type it has warns), which fake.py's ``Set-Mailbox`` hands here;
- ``Get-AcceptedDomain``: the tenant's domain (``Default``), the domains of its users'
  sign-in addresses and ``<tenant>.onmicrosoft.com``, all ``Authoritative``.

The shapes are those peer tools read (the API is not documented). ``CMDLETS`` is what the
fake's ``InvokeCommand`` dispatches here; each handler runs with the fake's lock held.
"""

from __future__ import annotations

import copy
import hashlib
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


def _state(fake: FakeMicrosoft, identity: Any) -> tuple[dict[str, Any], dict[str, Any]] | Reply:
    found = fake._exchange_mailbox(identity)
    if isinstance(found, Reply):
        return found
    user, _ = found
    return user, fake.tenant.exchange.setdefault(user["id"], seeded_exchange(user["mail"], ""))


def _refuse_unknown(
    fake: FakeMicrosoft, parameters: Mapping[str, Any], known: set[str]
) -> Reply | None:
    # Unconfirmed: InvokeCommand's refusal of an unknown parameter (its exception and wording).
    unknown = [name for name in parameters if name not in known | {"Confirm"}]
    if not unknown:
        return None
    return fake._exchange_error(
        400,
        "Management.RestApiClient.RestClientException",
        f"A parameter cannot be found that matches parameter name '{unknown[0]}'.",
    )


def _values(items: list[dict[str, Any]], warnings: list[str] | None = None) -> Reply:
    return Reply(200, {"@adminapi.warnings": warnings or [], "value": copy.deepcopy(items)})


def _addresses(recipients: Any) -> list[str] | None:
    found = [
        f'"{r["emailAddress"].get("name") or r["emailAddress"]["address"]}" '
        f"[SMTP:{r['emailAddress']['address']}]"
        for r in recipients or []
        if isinstance(r, dict) and isinstance(r.get("emailAddress"), dict)
    ]
    return found or None


def _visible_rules(fake: FakeMicrosoft, user: dict[str, Any]) -> list[dict[str, Any]]:
    """Graph's rules of the mailbox, as Get-InboxRule shows them."""
    rules = []
    for rule in fake.tenant.rules.get(user["id"], []):
        actions = rule.get("actions") or {}
        number = int(hashlib.sha256(rule["id"].encode()).hexdigest()[:15], 16)
        rules.append(
            {
                "Name": rule["displayName"],
                "RuleIdentity": str(number),
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
    refused = _refuse_unknown(fake, parameters, {"Mailbox", "IncludeHidden", "Identity"})
    if refused:
        return refused
    found = _state(fake, parameters.get("Mailbox"))
    if isinstance(found, Reply):
        return found
    user, state = found
    rules = _visible_rules(fake, user)
    if parameters.get("IncludeHidden"):
        rules += state["hidden_rules"]
    upn = user["userPrincipalName"]
    shown = [{"Identity": f"{upn}\\{r['RuleIdentity']}", "MailboxOwnerId": upn, **r} for r in rules]
    return _values(shown)


def remove_inbox_rule(fake: FakeMicrosoft, parameters: Mapping[str, Any]) -> Reply:
    # Unconfirmed: AlwaysDeleteOutlookRulesBlob as a JSON boolean over InvokeCommand.
    refused = _refuse_unknown(
        fake, parameters, {"Mailbox", "Identity", "AlwaysDeleteOutlookRulesBlob"}
    )
    if refused:
        return refused
    found = _state(fake, parameters.get("Mailbox"))
    if isinstance(found, Reply):
        return found
    user, state = found
    wanted = str(parameters.get("Identity", "")).rsplit("\\", 1)[-1]
    hidden = [r for r in state["hidden_rules"] if r["RuleIdentity"] == wanted]
    if hidden:
        state["hidden_rules"].remove(hidden[0])
        return _values([])
    visible = {r["RuleIdentity"]: r for r in _visible_rules(fake, user)}
    if wanted in visible:
        graph_rules = fake.tenant.rules.get(user["id"], [])
        graph_rules[:] = [
            r
            for r in graph_rules
            if str(int(hashlib.sha256(r["id"].encode()).hexdigest()[:15], 16)) != wanted
        ]
        return _values([])
    return fake._exchange_error(
        404,
        "Configuration.Tasks.ManagementObjectNotFoundException",
        f"The operation couldn't be performed because object '{parameters.get('Identity')}' "
        "couldn't be found on 'AM0PR01A001DC01.EURPR01A001.prod.outlook.com'.",
    )


def get_cas_mailbox(fake: FakeMicrosoft, parameters: Mapping[str, Any]) -> Reply:
    found = _state(fake, parameters.get("Identity"))
    if isinstance(found, Reply):
        return found
    user, state = found
    return _values(
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
    refused = _refuse_unknown(fake, parameters, {"Identity", *CAS_PROPERTIES})
    if refused:
        return refused
    found = _state(fake, parameters.get("Identity"))
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
    warnings = (
        [
            f"The command completed successfully but no settings of '{parameters['Identity']}' "
            "have been modified."
        ]
        if before == state["cas"]
        else []
    )
    return _values([], warnings)


def get_mailbox_permission(fake: FakeMicrosoft, parameters: Mapping[str, Any]) -> Reply:
    found = _state(fake, parameters.get("Identity"))
    if isinstance(found, Reply):
        return found
    return _values(found[1]["mailbox_permissions"])


def get_recipient_permission(fake: FakeMicrosoft, parameters: Mapping[str, Any]) -> Reply:
    found = _state(fake, parameters.get("Identity"))
    if isinstance(found, Reply):
        return found
    return _values(found[1]["recipient_permissions"])


def _remove_permission(
    fake: FakeMicrosoft, parameters: Mapping[str, Any], key: str, who: str, rights: str
) -> Reply:
    # Unconfirmed: AccessRights given as a JSON list of strings (["FullAccess"]).
    refused = _refuse_unknown(
        fake, parameters, {"Identity", who, "AccessRights", "InheritanceType"}
    )
    if refused:
        return refused
    found = _state(fake, parameters.get("Identity"))
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
    return _values([], warnings)


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
    refused = _refuse_unknown(fake, parameters, {"Identity", who, "AccessRights", *known})
    if refused:
        return refused
    found = _state(fake, parameters.get("Identity"))
    if isinstance(found, Reply):
        return found
    user, state = found
    trustee = _state(fake, parameters.get(who))
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
    return _values(present)


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


MAILBOX_TYPES = {"Shared": "SharedMailbox", "Regular": "UserMailbox"}


def set_mailbox_type(fake: FakeMicrosoft, parameters: Mapping[str, Any]) -> Reply:
    """``Set-Mailbox -Identity <upn> -Type Shared|Regular`` (fake.py's Set-Mailbox hands it here)."""
    refused = _refuse_unknown(fake, parameters, {"Identity", "Type"})
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
    warnings = (
        [
            f"The command completed successfully but no settings of '{parameters['Identity']}' "
            "have been modified."
        ]
        if before == wanted
        else []
    )
    return _values([], warnings)


def get_accepted_domain(fake: FakeMicrosoft, parameters: Mapping[str, Any]) -> Reply:
    refused = _refuse_unknown(fake, parameters, {"Identity"})
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
    return _values(domains)


# Unconfirmed: the shapes of Get-/Remove-BlockedSenderAddress over InvokeCommand, and the
# error Remove- gives for an address that is not restricted.
def get_blocked_sender_address(fake: FakeMicrosoft, parameters: Mapping[str, Any]) -> Reply:
    refused = _refuse_unknown(fake, parameters, {"SenderAddress"})
    if refused:
        return refused
    found = _state(fake, parameters.get("SenderAddress"))
    if isinstance(found, Reply):
        return _values([])  # an address Exchange never restricted: nothing listed
    _, state = found
    return _values([state["blocked_sender"]] if state.get("blocked_sender") else [])


def remove_blocked_sender_address(fake: FakeMicrosoft, parameters: Mapping[str, Any]) -> Reply:
    refused = _refuse_unknown(fake, parameters, {"SenderAddress", "Reason"})
    if refused:
        return refused
    found = _state(fake, parameters.get("SenderAddress"))
    if isinstance(found, Reply) or not found[1].get("blocked_sender"):
        return fake._exchange_error(
            400,
            "Microsoft.Exchange.Management.Tasks.ManagementObjectNotFoundException",
            f"The sender {parameters.get('SenderAddress')} is not in the restricted list.",
        )
    found[1]["blocked_sender"] = None
    found[1]["unblocked_because"] = str(parameters.get("Reason") or "")
    return _values([])


CMDLETS: dict[str, Handler] = {
    "Get-BlockedSenderAddress": get_blocked_sender_address,
    "Remove-BlockedSenderAddress": remove_blocked_sender_address,
    "Get-InboxRule": get_inbox_rule,
    "Remove-InboxRule": remove_inbox_rule,
    "Get-CASMailbox": get_cas_mailbox,
    "Set-CASMailbox": set_cas_mailbox,
    "Get-MailboxPermission": get_mailbox_permission,
    "Remove-MailboxPermission": remove_mailbox_permission,
    "Get-RecipientPermission": get_recipient_permission,
    "Remove-RecipientPermission": remove_recipient_permission,
    "Add-MailboxPermission": add_mailbox_permission,
    "Add-RecipientPermission": add_recipient_permission,
    "Get-AcceptedDomain": get_accepted_domain,
}
