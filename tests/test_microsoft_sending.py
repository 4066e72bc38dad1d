"""A mailbox Exchange Online restricted after the attacker's spam (Restricted entities),
checked and let send again through InvokeCommand against the fake over HTTPS on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import microsoft_support
from tests.microsoft_support import cmdlets, fake_tenant, run_action, settings_for
from tocsin.action_registry import ActionRegistry
from tocsin.errors import IntegrationError
from tocsin.integrations.microsoft import CLIENT_SECRET
from tocsin.integrations.microsoft.fake import (
    SANDBOX_USER,
    FakeApp,
    FakeMicrosoft,
)
from tocsin.sandbox.tls import LoopbackCA
from tocsin.settings import Settings

USER = SANDBOX_USER
NO_ROLE_ID = "55555555-6666-4777-8888-noexchange00"


@pytest.fixture(scope="module")
def tenant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeMicrosoft, LoopbackCA]]:
    apps = (FakeApp(client_id=NO_ROLE_ID, secret="no-role", exchange_role=False),)
    with fake_tenant(tmp_path_factory.mktemp("sending"), apps=apps) as started:
        yield started


# The Microsoft modules' shared per-test fixtures (tests.microsoft_support).
fake = microsoft_support.fake
settings = microsoft_support.settings


def blocked(fake: FakeMicrosoft) -> object:
    return fake.tenant.exchange[fake.user(USER)["id"]].get("blocked_sender")


def test_the_restriction_is_read_with_exchanges_reason(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    found = run_action("microsoft.check_sending_restriction", {"user": USER}, settings)
    assert found["restricted"] is True and found["changed"] is False
    assert "Outbound spam" in str(found["reason"]) and found["since"]
    assert cmdlets(fake) == ["Get-BlockedSenderAddress"]
    assert blocked(fake) is not None


def test_unblocking_lets_the_user_send_and_a_rerun_changes_nothing(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    first = run_action(
        "microsoft.unblock_sending", {"user": USER, "reason": "Cleaned, INC-13"}, settings
    )
    assert first["changed"] is True and first["restricted"] is False
    assert "Outbound spam" in str(first["reason"])  # what it was, for the report
    assert blocked(fake) is None
    assert fake.tenant.exchange[fake.user(USER)["id"]]["unblocked_because"] == "Cleaned, INC-13"
    again = run_action("microsoft.unblock_sending", {"user": USER}, settings)
    assert again["changed"] is False and again["restricted"] is False
    assert cmdlets(fake) == [
        "Get-BlockedSenderAddress",
        "Remove-BlockedSenderAddress",
        "Get-BlockedSenderAddress",
    ]


def test_without_an_exchange_role_nothing_is_lifted_and_the_hint_says_how_to_grant(
    fake: FakeMicrosoft, tenant: tuple[FakeMicrosoft, LoopbackCA]
) -> None:
    settings = settings_for(fake, tenant[1], client_id=NO_ROLE_ID)
    with pytest.raises(IntegrationError) as caught:
        run_action(
            "microsoft.unblock_sending", {"user": USER}, settings, {CLIENT_SECRET: "no-role"}
        )
    assert caught.value.status_code == 403
    assert "Exchange.ManageAsApp" in caught.value.hint and NO_ROLE_ID in caught.value.hint
    assert blocked(fake) is not None


def test_the_sending_actions_are_declared_honestly() -> None:
    registry = ActionRegistry.discover()
    check = registry.get("microsoft.check_sending_restriction")
    unblock = registry.get("microsoft.unblock_sending")
    assert not check.destructive and check.idempotent
    assert unblock.destructive and unblock.idempotent and not unblock.needs_approval
    sentence = unblock.describe_call(unblock.parameters.model_validate({"user": USER}))
    assert (
        sentence.startswith(f"let {USER} send mail again")
        and "Remove-BlockedSenderAddress" in sentence
    )
