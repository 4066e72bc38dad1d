"""Mailbox forwarding through Exchange Online's admin API (InvokeCommand) against the fake over
HTTPS on loopback: what Graph cannot see, read and removed, with its own token scope."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs

import pytest

from tests import microsoft_support
from tests.microsoft_support import INVOKE, cmdlets, fake_tenant, run_action, settings_for
from tocsin.errors import IntegrationError
from tocsin.integrations.microsoft.fake import (
    ATTACKER_FORWARD,
    SANDBOX_USER,
    FakeApp,
    FakeMicrosoft,
)
from tocsin.sandbox.tls import LoopbackCA
from tocsin.settings import Settings

USER = SANDBOX_USER
NO_ROLE_CLIENT_ID = "44444444-5555-4666-8777-noexchangerl"


@pytest.fixture(scope="module")
def tenant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeMicrosoft, LoopbackCA]]:
    no_role = FakeApp(client_id=NO_ROLE_CLIENT_ID, secret="no-role", exchange_role=False)
    with fake_tenant(tmp_path_factory.mktemp("microsoft"), apps=(no_role,)) as started:
        yield started


# The Microsoft modules' shared per-test fixtures (tests.microsoft_support).
fake = microsoft_support.fake
settings = microsoft_support.settings


def test_the_forwarding_graph_cannot_see_is_read_from_exchange(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    found = run_action("microsoft.check_forwarding", {"user": USER}, settings)
    assert found == {
        "user": USER,
        "forwarding_smtp_address": ATTACKER_FORWARD,
        "forwarding_address": None,
        "deliver_to_mailbox_and_forward": True,
        "forwards": True,
    }
    (call,) = [r for r in fake.requests if r.path == INVOKE]
    assert call.json() == {
        "CmdletInput": {"CmdletName": "Get-Mailbox", "Parameters": {"Identity": USER}}
    }
    assert call.header("x-anchormailbox") == f"UPN:{USER}"
    # Exchange has its own token scope, besides Graph's.
    scopes = [
        parse_qs(r.body.decode())["scope"][0] for r in fake.requests if r.path.endswith("/token")
    ]
    assert f"{fake.url}/.default" in scopes


def test_forwarding_is_removed_and_a_rerun_changes_nothing(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    removed = run_action("microsoft.disable_forwarding", {"user": USER}, settings)
    assert removed["changed"] is True
    assert removed["before"]["forwarding_smtp_address"] == ATTACKER_FORWARD
    user_id = fake.user(USER)["id"]
    forwarding = ("ForwardingSmtpAddress", "ForwardingAddress", "DeliverToMailboxAndForward")
    assert {k: fake.tenant.mailboxes[user_id][k] for k in forwarding} == {
        "ForwardingSmtpAddress": None,
        "ForwardingAddress": None,
        "DeliverToMailboxAndForward": False,
    }
    assert cmdlets(fake) == ["Get-Mailbox", "Set-Mailbox"]

    again = run_action("microsoft.disable_forwarding", {"user": USER}, settings)
    assert again["changed"] is False and again["before"]["forwards"] is False
    assert cmdlets(fake) == ["Get-Mailbox", "Set-Mailbox", "Get-Mailbox"]


def test_an_app_without_an_exchange_role_is_told_how_to_get_one(
    fake: FakeMicrosoft, tenant: tuple[FakeMicrosoft, LoopbackCA]
) -> None:
    settings = settings_for(fake, tenant[1], client_id=NO_ROLE_CLIENT_ID)
    with pytest.raises(IntegrationError) as caught:
        run_action(
            "microsoft.disable_forwarding",
            {"user": USER},
            settings,
            {"microsoft_client_secret": "no-role"},
        )
    assert caught.value.status_code == 403 and caught.value.retryable is False
    assert "may not run Exchange cmdlets" in caught.value.message
    assert (
        "Exchange.ManageAsApp" in caught.value.hint
        and "Exchange Administrator" in caught.value.hint
    )
    assert cmdlets(fake) == ["Get-Mailbox"]


def test_a_user_without_a_mailbox_is_named_with_the_cmdlets_error(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    fake.tenant.mailboxes.clear()
    with pytest.raises(IntegrationError) as caught:
        run_action("microsoft.check_forwarding", {"user": USER}, settings)
    assert f"has no mailbox for read the mailbox of {USER}" in caught.value.message
    assert f"object '{USER}' couldn't be found" in caught.value.message
    assert "Ex6F9304" not in caught.value.message


def test_a_throttled_exchange_call_is_sent_again(fake: FakeMicrosoft, settings: Settings) -> None:
    fake.throttle_exchange(2, retry_after="0.1")
    found = run_action("microsoft.check_forwarding", {"user": USER}, settings)
    assert found["forwards"] is True
    assert cmdlets(fake) == ["Get-Mailbox"] * 3
