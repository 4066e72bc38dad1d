"""Exchange Online beyond forwarding, through InvokeCommand against the fake over HTTPS on
loopback: hidden inbox rules, mail protocols (and their undo), mailbox delegates."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import microsoft_support
from tests.microsoft_support import INVOKE, fake_tenant, run_action, settings_for
from tocsin.errors import IntegrationError
from tocsin.integrations.microsoft import CLIENT_SECRET
from tocsin.integrations.microsoft.fake import (
    ALL_ROLES,
    ATTACKER_FORWARD,
    SANDBOX_USER,
    FakeApp,
    FakeMicrosoft,
)
from tocsin.integrations.microsoft.fake_exchange import ATTACKER_DELEGATE, HIDDEN_RULE_NAME
from tocsin.sandbox.tls import LoopbackCA
from tocsin.settings import Settings

USER = SANDBOX_USER
ASSISTANT = "bob@broker-office.example"
NO_ROLE_ID = "55555555-6666-4777-8888-noexchange00"
NO_PERMISSION_ID = "66666666-7777-4888-8999-nomanageasap"


@pytest.fixture(scope="module")
def tenant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeMicrosoft, LoopbackCA]]:
    apps = (
        FakeApp(client_id=NO_ROLE_ID, secret="no-role", exchange_role=False),
        FakeApp(
            client_id=NO_PERMISSION_ID, secret="no-perm", roles=ALL_ROLES - {"Exchange.ManageAsApp"}
        ),
    )
    with fake_tenant(tmp_path_factory.mktemp("microsoft"), apps=apps) as started:
        yield started


# The Microsoft modules' shared per-test fixtures (tests.microsoft_support).
fake = microsoft_support.fake
settings = microsoft_support.settings


def calls(fake: FakeMicrosoft) -> list[tuple[str, dict[str, object]]]:
    return [
        (r.json()["CmdletInput"]["CmdletName"], r.json()["CmdletInput"]["Parameters"])
        for r in fake.requests
        if r.path == INVOKE
    ]


def exchange_state(fake: FakeMicrosoft) -> dict[str, object]:
    return fake.tenant.exchange[fake.user(USER)["id"]]


# -- hidden rules -------------------------------------------------------------------------------


def test_hidden_rules_are_those_only_include_hidden_shows_and_the_attackers_is_flagged(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    found = run_action("microsoft.list_hidden_inbox_rules", {"user": USER}, settings)
    assert calls(fake) == [
        ("Get-InboxRule", {"Mailbox": USER}),
        ("Get-InboxRule", {"Mailbox": USER, "IncludeHidden": True}),
    ]
    by_name = {r["name"]: r for r in found["rules"]}
    assert set(by_name) == {"Junk E-mail Rule", HIDDEN_RULE_NAME}, "Graph's rules are not hidden"
    assert by_name["Junk E-mail Rule"]["flagged"] is False
    assert by_name[HIDDEN_RULE_NAME]["reasons"] == [
        f"forwards mail to {ATTACKER_FORWARD} (outside the organisation)",
        "deletes matching mail",
    ]
    assert found["flagged"] == 1


def test_the_flagged_hidden_rule_is_removed_and_a_rerun_changes_nothing(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    removed = run_action("microsoft.remove_hidden_inbox_rules", {"user": USER}, settings)
    assert [r["name"] for r in removed["removed"]] == [HIDDEN_RULE_NAME]
    (removal,) = [p for c, p in calls(fake) if c == "Remove-InboxRule"]
    assert removal["Identity"] == removed["removed"][0]["rule_identity"]
    assert [r["Name"] for r in exchange_state(fake)["hidden_rules"]] == ["Junk E-mail Rule"]
    graph_rules = len(fake.rules_of(USER))
    again = run_action("microsoft.remove_hidden_inbox_rules", {"user": USER}, settings)
    assert again["removed"] == [] and len(fake.rules_of(USER)) == graph_rules == 4


# -- protocols ----------------------------------------------------------------------------------


def test_pop_and_imap_are_turned_off_by_default_and_a_rerun_changes_nothing(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    done = run_action("microsoft.disable_mail_protocols", {"user": USER}, settings)
    assert done["changed"] == ["pop", "imap"] and done["before"]["pop"] is True
    assert done["after"]["pop"] is False and done["after"]["ews"] is True
    assert ("Set-CASMailbox", {"Identity": USER, "PopEnabled": False, "ImapEnabled": False}) in (
        calls(fake)
    )
    cas = exchange_state(fake)["cas"]
    assert isinstance(cas, dict) and cas["PopEnabled"] is False and cas["EwsEnabled"] is True
    seen = len(calls(fake))
    again = run_action("microsoft.disable_mail_protocols", {"user": USER}, settings)
    assert again["changed"] == [] and [c for c, _ in calls(fake)[seen:]] == ["Get-CASMailbox"]


def test_enabling_gives_back_only_what_the_disable_step_turned_off(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    with fake.lock:
        exchange_state(fake)["cas"]["ImapEnabled"] = False  # type: ignore[index]
    done = run_action(
        "microsoft.disable_mail_protocols",
        {"user": USER, "protocols": ["pop", "imap", "activesync"]},
        settings,
    )
    assert done["changed"] == ["pop", "activesync"]
    undone = run_action(
        "microsoft.enable_mail_protocols", {"user": USER, "protocols": done["changed"]}, settings
    )
    assert undone["changed"] == ["pop", "activesync"]
    cas = exchange_state(fake)["cas"]
    assert isinstance(cas, dict)
    assert (cas["PopEnabled"], cas["ImapEnabled"], cas["ActiveSyncEnabled"]) == (True, False, True)


def test_an_unknown_protocol_is_refused_before_any_call(settings: Settings) -> None:
    from tocsin.errors import ActionError

    with pytest.raises(ActionError) as caught:
        run_action(
            "microsoft.disable_mail_protocols", {"user": USER, "protocols": ["smtp"]}, settings
        )
    assert "protocols" in caught.value.message


# -- delegates ----------------------------------------------------------------------------------


def test_delegates_are_listed_without_the_owner_and_system_entries(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    found = run_action("microsoft.list_mailbox_delegates", {"user": USER}, settings)
    assert found["delegates"] == [
        {"trustee": ASSISTANT, "rights": ["FullAccess"], "folders": {"Calendar": ["Editor"]}},
        {
            "trustee": ATTACKER_DELEGATE,
            "rights": ["FullAccess", "SendAs", "SendOnBehalf"],
            "folders": {"Inbox": ["Reviewer"]},
        },
    ]  # Default and Anonymous with None or AvailabilityOnly are not delegates
    assert [c for c, _ in calls(fake)] == [
        "Get-MailboxPermission",
        "Get-RecipientPermission",
        "Get-Mailbox",
        *["Get-MailboxFolderPermission"] * 3,
    ]


def test_delegates_not_kept_lose_full_access_and_send_as_and_a_rerun_changes_nothing(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    removed = run_action(
        "microsoft.remove_mailbox_delegates", {"user": USER, "keep": [ASSISTANT]}, settings
    )
    assert [d["trustee"] for d in removed["removed"]] == [ATTACKER_DELEGATE]
    assert [d["trustee"] for d in removed["kept"]] == [ASSISTANT]
    removals = [(c, p) for c, p in calls(fake) if c.startswith("Remove-") or c.startswith("Set-")]
    assert removals == [
        (
            "Remove-MailboxPermission",
            {
                "Identity": USER,
                "User": ATTACKER_DELEGATE,
                "AccessRights": ["FullAccess"],
                "InheritanceType": "All",
            },
        ),
        (
            "Remove-RecipientPermission",
            {
                "Identity": USER,
                "Trustee": ATTACKER_DELEGATE,
                "AccessRights": ["SendAs"],
            },
        ),
        (
            "Set-Mailbox",
            {"Identity": USER, "GrantSendOnBehalfTo": {"remove": [ATTACKER_DELEGATE]}},
        ),
        (
            "Remove-MailboxFolderPermission",
            {"Identity": f"{USER}:\\Inbox", "User": ATTACKER_DELEGATE},
        ),
    ]
    user_id = fake.user(USER)["id"]
    assert fake.tenant.mailboxes[user_id]["GrantSendOnBehalfTo"] == []
    inbox = fake.tenant.exchange[user_id]["folder_permissions"]["Inbox"]
    assert ATTACKER_DELEGATE not in [e["User"] for e in inbox]
    listed = run_action("microsoft.list_mailbox_delegates", {"user": USER}, settings)
    assert [d["trustee"] for d in listed["delegates"]] == [ASSISTANT]
    again = run_action(
        "microsoft.remove_mailbox_delegates", {"user": USER, "keep": ["bob"]}, settings
    )
    assert again["removed"] == []


def test_everyone_reading_the_inbox_is_set_back_to_none_not_removed(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    user_id = fake.user(USER)["id"]
    with fake.lock:
        inbox = fake.tenant.exchange[user_id]["folder_permissions"]["Inbox"]
        next(e for e in inbox if e["User"] == "Default")["AccessRights"] = ["Reviewer"]
    listed = run_action("microsoft.list_mailbox_delegates", {"user": USER}, settings)
    assert {"trustee": "Default", "rights": [], "folders": {"Inbox": ["Reviewer"]}} in listed[
        "delegates"
    ]
    run_action(
        "microsoft.remove_mailbox_delegates",
        {"user": USER, "keep": [ASSISTANT, ATTACKER_DELEGATE]},
        settings,
    )
    assert (
        "Set-MailboxFolderPermission",
        {
            "Identity": f"{USER}:\\Inbox",
            "User": "Default",
            "AccessRights": ["None"],
        },
    ) in calls(fake)
    assert next(e for e in inbox if e["User"] == "Default")["AccessRights"] == ["None"]


def test_a_misspelt_kept_delegate_removes_nothing(fake: FakeMicrosoft, settings: Settings) -> None:
    with pytest.raises(IntegrationError) as caught:
        run_action("microsoft.remove_mailbox_delegates", {"user": USER, "keep": ["bobb"]}, settings)
    assert ATTACKER_DELEGATE in caught.value.hint
    assert not [c for c, _ in calls(fake) if c.startswith("Remove-")]


# -- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("client_id", [NO_ROLE_ID, NO_PERMISSION_ID])
@pytest.mark.parametrize(
    "action",
    [
        "microsoft.list_hidden_inbox_rules",
        "microsoft.disable_mail_protocols",
        "microsoft.remove_mailbox_delegates",
    ],
)
def test_without_manage_as_app_or_an_exchange_role_the_refusal_says_both(
    fake: FakeMicrosoft, tenant: tuple[FakeMicrosoft, LoopbackCA], client_id: str, action: str
) -> None:
    secret = "no-role" if client_id == NO_ROLE_ID else "no-perm"
    settings = settings_for(fake, tenant[1], client_id=client_id)
    with pytest.raises(IntegrationError) as caught:
        run_action(action, {"user": USER}, settings, {CLIENT_SECRET: secret})
    assert caught.value.status_code == 403
    assert "Exchange.ManageAsApp" in caught.value.hint
    assert "Exchange Administrator" in caught.value.hint and client_id in caught.value.hint
    cas = exchange_state(fake)["cas"]
    assert isinstance(cas, dict) and cas["PopEnabled"] is True


def test_a_user_without_a_mailbox_is_said_so(fake: FakeMicrosoft, settings: Settings) -> None:
    with fake.lock:
        fake.tenant.mailboxes.clear()
    with pytest.raises(IntegrationError) as caught:
        run_action("microsoft.list_mailbox_delegates", {"user": USER}, settings)
    assert "has no mailbox" in caught.value.message


def test_the_new_actions_are_declared_with_their_plan_sentences_and_flags() -> None:
    from tocsin.action_registry import ActionRegistry

    registry = ActionRegistry.discover()
    readers = {"list_hidden_inbox_rules", "list_mailbox_delegates", "list_admin_roles"}
    for short in (
        *readers,
        "remove_hidden_inbox_rules",
        "disable_mail_protocols",
        "enable_mail_protocols",
        "remove_mailbox_delegates",
        "remove_admin_roles",
    ):
        definition = registry.get(f"microsoft.{short}")
        assert definition.idempotent and definition.output_names, short
        assert definition.destructive == (short not in readers), short
        params: dict[str, object] = {"user": USER}
        if "keep" in definition.parameters.model_fields:
            params["keep"] = ["x"]
        if short == "enable_mail_protocols":
            params["protocols"] = ["pop"]
        sentence = definition.describe_call(definition.parameters.model_validate(params))
        assert USER in sentence, (short, sentence)
    plan = registry.get("microsoft.disable_mail_protocols")
    default = plan.describe_call(plan.parameters.model_validate({"user": USER}))
    assert "pop, imap" in default and "Set-CASMailbox" in default
