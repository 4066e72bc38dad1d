"""A leaver's account, against the fake tenant over HTTPS on loopback: the mailbox handed over
(shared, a colleague's access, forwarding inside the office only), the leaver's Intune
devices retired, and the sign-ins since the departure date."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests import microsoft_support
from tests.microsoft_support import cmdlets, fake_tenant, run_action, settings_for
from tocsin.action_registry import ActionRegistry
from tocsin.errors import ActionError, IntegrationError
from tocsin.integrations.microsoft import CLIENT_SECRET
from tocsin.integrations.microsoft.fake import (
    ALL_ROLES,
    SANDBOX_USER,
    FakeApp,
    FakeMicrosoft,
)
from tocsin.integrations.microsoft.fake_leaver import (
    LEAVER_DEPARTED_DAYS_AGO,
    colleague_of,
    leaver_of,
    sign_in_after_departure,
)
from tocsin.sandbox.tls import LoopbackCA
from tocsin.settings import Settings

DOMAIN = SANDBOX_USER.split("@")[-1]
LEAVER = leaver_of(DOMAIN)
COLLEAGUE = colleague_of(DOMAIN)
NO_ROLE_ID = "55555555-6666-4777-8888-noexchange01"
NO_DEVICES_ID = "55555555-6666-4777-8888-nodevices001"


@pytest.fixture(scope="module")
def tenant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeMicrosoft, LoopbackCA]]:
    apps = (
        FakeApp(client_id=NO_ROLE_ID, secret="no-role", exchange_role=False),
        FakeApp(
            client_id=NO_DEVICES_ID,
            secret="no-devices",
            roles=ALL_ROLES - {"DeviceManagementManagedDevices.PrivilegedOperations.All"},
        ),
    )
    with fake_tenant(tmp_path_factory.mktemp("leaver"), leaver=True, apps=apps) as started:
        yield started


# The Microsoft modules' shared per-test fixtures (tests.microsoft_support).
fake = microsoft_support.fake
settings = microsoft_support.settings


def mailbox(fake: FakeMicrosoft, upn: str = LEAVER) -> dict[str, Any]:
    with fake.lock:
        return dict(fake.tenant.mailboxes[fake.user(upn)["id"]])


def exchange(fake: FakeMicrosoft, upn: str = LEAVER) -> dict[str, Any]:
    with fake.lock:
        return dict(fake.tenant.exchange[fake.user(upn)["id"]])


def trustees(fake: FakeMicrosoft) -> tuple[set[str], set[str]]:
    state = exchange(fake)
    full = {str(e["User"]) for e in state["mailbox_permissions"]}
    send_as = {str(e["Trustee"]) for e in state["recipient_permissions"]}
    return full, send_as


def devices_of(fake: FakeMicrosoft, upn: str) -> dict[str, str]:
    with fake.lock:
        return {
            d["deviceName"]: d["managementState"]
            for d in fake.tenant.managed_devices
            if d["userPrincipalName"] == upn
        }


# -- shared mailbox -----------------------------------------------------------------------------


def test_the_leavers_mailbox_becomes_shared_once_and_converts_back(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    converted = run_action("microsoft.convert_to_shared_mailbox", {"user": LEAVER}, settings)
    assert (converted["before"], converted["after"], converted["changed"]) == (
        "UserMailbox",
        "SharedMailbox",
        True,
    )
    assert mailbox(fake)["RecipientTypeDetails"] == "SharedMailbox"
    assert "licence" in converted["note"]
    again = run_action("microsoft.convert_to_shared_mailbox", {"user": LEAVER}, settings)
    assert again["changed"] is False and again["before"] == "SharedMailbox"
    assert cmdlets(fake).count("Set-Mailbox") == 1
    back = run_action("microsoft.convert_to_user_mailbox", {"user": LEAVER}, settings)
    assert back["changed"] is True and mailbox(fake)["RecipientTypeDetails"] == "UserMailbox"
    assert mailbox(fake, COLLEAGUE)["RecipientTypeDetails"] == "UserMailbox"


# -- a colleague's access -----------------------------------------------------------------------


def test_the_colleague_gets_full_access_and_send_as_once_and_the_undo_takes_only_those(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    params = {"user": LEAVER, "colleague": COLLEAGUE, "send_as": True}
    granted = run_action("microsoft.grant_mailbox_access", params, settings)
    assert granted["granted"] == ["FullAccess", "SendAs"] and granted["changed"] is True
    full, send_as = trustees(fake)
    assert COLLEAGUE in full and COLLEAGUE in send_as
    assert exchange(fake)["automapping"] == {COLLEAGUE: True}
    listed = run_action("microsoft.list_mailbox_delegates", {"user": LEAVER}, settings)
    assert {"trustee": COLLEAGUE, "rights": ["FullAccess", "SendAs"], "folders": {}} in listed[
        "delegates"
    ]

    adds = [c for c in cmdlets(fake) if c.startswith("Add-")]
    again = run_action("microsoft.grant_mailbox_access", params, settings)
    assert again["granted"] == [] and again["already"] == ["FullAccess", "SendAs"]
    assert again["changed"] is False
    assert [c for c in cmdlets(fake) if c.startswith("Add-")] == adds

    undone = run_action(
        "microsoft.remove_mailbox_access",
        {"user": LEAVER, "colleague": COLLEAGUE, "rights": granted["granted"]},
        settings,
    )
    assert undone["removed"] == ["FullAccess", "SendAs"]
    full, send_as = trustees(fake)
    assert COLLEAGUE not in full and COLLEAGUE not in send_as
    assert "NT AUTHORITY\\SELF" in full  # the owner's own entry stays
    repeat = run_action(
        "microsoft.remove_mailbox_access", {"user": LEAVER, "colleague": COLLEAGUE}, settings
    )
    assert repeat["changed"] is False


def test_full_access_alone_leaves_send_as_ungranted(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    granted = run_action(
        "microsoft.grant_mailbox_access",
        {"user": LEAVER, "colleague": COLLEAGUE, "automapping": False},
        settings,
    )
    assert granted["granted"] == ["FullAccess"]
    assert trustees(fake)[1] == {"NT AUTHORITY\\SELF"}
    assert exchange(fake)["automapping"] == {COLLEAGUE: False}


def test_a_colleague_without_a_mailbox_in_the_tenant_is_refused_before_any_grant(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    for colleague in (f"nobody@{DOMAIN}", "partner@other-office.example"):
        with pytest.raises(IntegrationError) as caught:
            run_action(
                "microsoft.grant_mailbox_access",
                {"user": LEAVER, "colleague": colleague, "send_as": True},
                settings,
            )
        assert f"{colleague} has no mailbox in the office's tenant" in caught.value.message
        assert "Recipients" in caught.value.hint
    with pytest.raises(IntegrationError) as itself:
        run_action(
            "microsoft.grant_mailbox_access", {"user": LEAVER, "colleague": LEAVER}, settings
        )
    assert "own user" in itself.value.message
    assert not [c for c in cmdlets(fake) if c.startswith("Add-")]
    assert trustees(fake) == ({"NT AUTHORITY\\SELF"}, {"NT AUTHORITY\\SELF"})


# -- forwarding inside the office ---------------------------------------------------------------


def test_forwarding_goes_to_the_colleague_once(fake: FakeMicrosoft, settings: Settings) -> None:
    params = {"user": LEAVER, "forward_to": COLLEAGUE.upper()}
    forwarded = run_action("microsoft.set_internal_forwarding", params, settings)
    assert forwarded["changed"] is True and forwarded["forward_to"] == COLLEAGUE
    assert DOMAIN in forwarded["accepted_domains"]
    assert forwarded["before"]["forwards"] is False
    state = mailbox(fake)
    assert state["ForwardingSmtpAddress"] == f"smtp:{COLLEAGUE}"
    assert state["DeliverToMailboxAndForward"] is True
    again = run_action("microsoft.set_internal_forwarding", params, settings)
    assert again["changed"] is False
    assert cmdlets(fake).count("Set-Mailbox") == 1
    check = run_action("microsoft.check_forwarding", {"user": LEAVER}, settings)
    assert check["forwarding_smtp_address"] == COLLEAGUE


@pytest.mark.parametrize(
    "outside",
    [
        "erik.private@gmail.example",
        f"fleur@{DOMAIN}.evil.example",  # the office's domain as a prefix is not the office
        f"fleur@mail.{DOMAIN}",  # nor is a subdomain that is not accepted
    ],
)
def test_forwarding_outside_the_accepted_domains_is_refused_and_nothing_changes(
    fake: FakeMicrosoft, settings: Settings, outside: str
) -> None:
    with pytest.raises(IntegrationError) as caught:
        run_action(
            "microsoft.set_internal_forwarding", {"user": LEAVER, "forward_to": outside}, settings
        )
    assert f"{outside} is outside the office" in caught.value.message
    assert DOMAIN in caught.value.message and "leak" in caught.value.hint
    assert "Set-Mailbox" not in cmdlets(fake)
    assert mailbox(fake)["ForwardingSmtpAddress"] is None


# -- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "params"),
    [
        ("microsoft.convert_to_shared_mailbox", {}),
        ("microsoft.grant_mailbox_access", {"colleague": COLLEAGUE}),
        ("microsoft.set_internal_forwarding", {"forward_to": COLLEAGUE}),
    ],
)
def test_without_an_exchange_role_the_refusal_names_what_to_grant(
    fake: FakeMicrosoft,
    tenant: tuple[FakeMicrosoft, LoopbackCA],
    action: str,
    params: dict[str, Any],
) -> None:
    limited = settings_for(fake, tenant[1], client_id=NO_ROLE_ID)
    with pytest.raises(IntegrationError) as caught:
        run_action(action, {"user": LEAVER, **params}, limited, {CLIENT_SECRET: "no-role"})
    assert caught.value.status_code == 403
    assert "Exchange.ManageAsApp" in caught.value.hint and NO_ROLE_ID in caught.value.hint
    assert mailbox(fake)["RecipientTypeDetails"] == "UserMailbox"
    assert mailbox(fake)["ForwardingSmtpAddress"] is None
    assert COLLEAGUE not in trustees(fake)[0]


# -- Intune devices -----------------------------------------------------------------------------


def test_the_leavers_devices_are_listed_and_each_retired_once(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    listed = run_action("intune.list_user_devices", {"user": LEAVER}, settings)
    assert listed["count"] == 2
    assert {d["device"] for d in listed["devices"]} == {"ERIK-LT01", "Erik's iPhone"}
    retired = run_action("intune.remove_user_devices", {"user": LEAVER}, settings)
    assert [(d["device"], d["changed"], d["action_state"]) for d in retired["retired"]] == [
        ("ERIK-LT01", True, "pending"),
        ("Erik's iPhone", True, "pending"),
    ]
    assert devices_of(fake, LEAVER) == {
        "ERIK-LT01": "retirePending",
        "Erik's iPhone": "retirePending",
    }
    assert set(devices_of(fake, SANDBOX_USER).values()) == {"managed"}  # nobody else's device
    retires = [r.path for r in fake.requests if r.method == "POST" and r.path.endswith("/retire")]
    assert len(retires) == 2
    again = run_action("intune.remove_user_devices", {"user": LEAVER}, settings)
    assert [d["changed"] for d in again["retired"]] == [False, False]
    assert [d["management_state"] for d in again["retired"]] == ["retirePending"] * 2
    assert len([r for r in fake.requests if r.path.endswith("/retire")]) == 2


def test_a_kept_device_stays_and_a_misspelt_one_retires_nothing(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    with pytest.raises(IntegrationError) as caught:
        run_action("intune.remove_user_devices", {"user": LEAVER, "keep": ["ERIK-LT02"]}, settings)
    assert "ERIK-LT01" in caught.value.hint
    assert set(devices_of(fake, LEAVER).values()) == {"managed"}
    kept = run_action(
        "intune.remove_user_devices", {"user": LEAVER, "keep": ["erik-lt01"]}, settings
    )
    assert [d["device"] for d in kept["kept"]] == ["ERIK-LT01"]
    assert devices_of(fake, LEAVER) == {"ERIK-LT01": "managed", "Erik's iPhone": "retirePending"}


def test_retiring_without_the_privileged_operations_permission_names_it(
    fake: FakeMicrosoft, tenant: tuple[FakeMicrosoft, LoopbackCA]
) -> None:
    limited = settings_for(fake, tenant[1], client_id=NO_DEVICES_ID)
    with pytest.raises(IntegrationError) as caught:
        run_action(
            "intune.remove_user_devices", {"user": LEAVER}, limited, {CLIENT_SECRET: "no-devices"}
        )
    assert caught.value.status_code == 403
    assert "could not remove 2 of 2" in caught.value.message
    assert "DeviceManagementManagedDevices.PrivilegedOperations.All" in caught.value.hint
    assert set(devices_of(fake, LEAVER).values()) == {"managed"}


# -- sign-ins since the departure date ----------------------------------------------------------


def departure() -> str:
    return (datetime.now(UTC) - timedelta(days=LEAVER_DEPARTED_DAYS_AGO)).date().isoformat()


def test_a_leaver_who_kept_away_has_no_sign_in_since_the_departure_date(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    since = run_action(
        "microsoft.recent_sign_ins", {"user": LEAVER, "since": departure()}, settings
    )
    assert (since["count"], since["successes"]) == (0, 0)
    assert since["since"] == f"{departure()}T00:00:00Z"
    before = (datetime.now(UTC) - timedelta(days=21)).date().isoformat()
    earlier = run_action("microsoft.recent_sign_ins", {"user": LEAVER, "since": before}, settings)
    assert earlier["successes"] == 3 and earlier["countries"] == {"BE": 3}


def test_a_sign_in_after_the_departure_date_is_counted_as_a_success(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    with fake.lock:
        sign_in_after_departure(fake.tenant, DOMAIN)
    since = run_action(
        "microsoft.recent_sign_ins", {"user": LEAVER, "since": departure()}, settings
    )
    assert (since["count"], since["successes"], since["failures"]) == (1, 1, 0)
    assert since["countries"] == {"NG": 1}


def test_a_departure_date_in_the_future_is_refused_before_any_call(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    tomorrow = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    with pytest.raises(ActionError) as caught:
        run_action("microsoft.recent_sign_ins", {"user": LEAVER, "since": tomorrow}, settings)
    assert "in the future" in caught.value.message
    assert not [r for r in fake.requests if "signIns" in r.path]


# -- declarations -------------------------------------------------------------------------------


def test_the_leaver_actions_are_declared_with_their_plan_sentences_and_flags() -> None:
    registry = ActionRegistry.discover()
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "microsoft.convert_to_shared_mailbox": ({}, "Set-Mailbox -Type Shared"),
        "microsoft.convert_to_user_mailbox": ({}, "-Type Regular"),
        "microsoft.grant_mailbox_access": ({"colleague": COLLEAGUE, "send_as": True}, "send as it"),
        "microsoft.remove_mailbox_access": ({"colleague": COLLEAGUE}, "FullAccess, SendAs"),
        "microsoft.set_internal_forwarding": ({"forward_to": COLLEAGUE}, "accepted domains"),
        "intune.remove_user_devices": ({"keep": ["ERIK-LT01"]}, "but ERIK-LT01"),
        "intune.list_user_devices": ({}, "enrolled in Intune"),
    }
    for name, (params, words) in cases.items():
        definition = registry.get(name)
        assert definition.idempotent and definition.output_names, name
        assert definition.destructive == (name != "intune.list_user_devices"), name
        sentence = definition.describe_call(
            definition.parameters.model_validate({"user": LEAVER, **params})
        )
        assert LEAVER in sentence and words in sentence, (name, sentence)
    sign_ins = registry.get("microsoft.recent_sign_ins")
    sentence = sign_ins.describe_call(
        sign_ins.parameters.model_validate({"user": LEAVER, "since": "2026-11-18"})
    )
    assert "since 2026-11-18 00:00 UTC" in sentence
