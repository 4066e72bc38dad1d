"""The shipped platform declaration (integrations/platform.yaml) against the fake platform."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.declared_support import call, declared_settings
from tocsin.errors import ActionError, IntegrationError
from tocsin.integrations.platform.fake import Account, Device, FakePlatform, Office
from tocsin.settings import Settings

TOKEN = "plt-declared-test-token-0123"
SECRETS = {"platform_api_token": TOKEN}
OFFICE = Office(
    id="OF-7",
    name="Courtier Martin",
    devices=[Device("PC-1", "CERT-0001"), Device("PC-2", "CERT-0002")],
    accounts=[Account("A-1", "martin"), Account("A-2", "assistant")],
    open_sessions=3,
)


@pytest.fixture(scope="module")
def platform() -> Iterator[FakePlatform]:
    with FakePlatform(token=TOKEN, offices=[OFFICE]) as fake:
        yield fake


@pytest.fixture
def settings(platform: FakePlatform) -> Settings:
    platform.reset()
    return declared_settings({"platform": f"{platform.url}/api/v1"})


def test_the_whole_procedure_runs_through_the_declared_operations(
    platform: FakePlatform, settings: Settings
) -> None:
    status = call("platform.office_status", settings, SECRETS, office_id="OF-7")
    assert (status["name"], status["status"], status["open_sessions"]) == (
        "Courtier Martin",
        "connected",
        3,
    )

    disconnected = call(
        "platform.disconnect_office", settings, SECRETS,
        office_id="OF-7", reason="office hacked", ticket="INC-1",
    )  # fmt: skip
    assert disconnected == {"status": "disconnected", "sessions_closed": 3, "status_code": 200}
    assert platform.requests[-1].json() == {"reason": "office hacked", "ticket": "INC-1"}

    revoked = call("platform.revoke_office_certificates", settings, SECRETS, office_id="OF-7")
    assert revoked["revoked"] == ["CERT-0001", "CERT-0002"]
    reset = call("platform.revoke_office_passwords", settings, SECRETS, office_id="OF-7")
    assert reset["accounts_reset"] == 2

    issued = call(
        "platform.issue_office_access",
        settings,
        SECRETS,
        office_id="OF-7",
        devices=["PC-1", "PC-2"],
    )
    assert [item["device"] for item in issued["issued"]] == ["PC-1", "PC-2"]
    assert platform.requests[-1].json() == {"devices": ["PC-1", "PC-2"]}  # a list, not its text

    reconnected = call("platform.reconnect_office", settings, SECRETS, office_id="OF-7")
    assert reconnected["status"] == "connected"
    office = platform.office("OF-7")
    assert office.status == "connected"
    assert {a.credentials_status for a in office.accounts} == {"revoked"}
    assert all(r.bearer_token() == TOKEN for r in platform.requests)


def test_disconnecting_again_succeeds_and_closes_nothing_more(
    platform: FakePlatform, settings: Settings
) -> None:
    first = call(
        "platform.disconnect_office", settings, SECRETS,
        office_id="OF-7", reason="hack", ticket="INC-1",
    )  # fmt: skip
    again = call(
        "platform.disconnect_office", settings, SECRETS,
        office_id="OF-7", reason="hack", ticket="INC-1",
    )  # fmt: skip
    assert (first["sessions_closed"], again["sessions_closed"]) == (3, 0)
    assert again["status"] == "disconnected"


def test_a_refusal_is_reported_with_the_platform_s_own_sentence(settings: Settings) -> None:
    call("platform.revoke_office_certificates", settings, SECRETS, office_id="OF-7")

    with pytest.raises(IntegrationError) as caught:
        call("platform.reconnect_office", settings, SECRETS, office_id="OF-7")

    assert caught.value.status_code == 409
    assert caught.value.action == "platform.reconnect_office"
    assert "have a revoked certificate and no new one; issue certificates first" in str(
        caught.value
    )


def test_an_unknown_office_is_a_404_naming_what_to_check(settings: Settings) -> None:
    with pytest.raises(IntegrationError) as caught:
        call("platform.office_status", settings, SECRETS, office_id="OF-404")
    assert caught.value.status_code == 404
    assert "no office 'OF-404'" in caught.value.message
    assert "identifiers" in caught.value.hint


def test_a_wrong_token_names_the_secret_and_never_shows_it(settings: Settings) -> None:
    wrong = "plt-wrong-token-987654"
    with pytest.raises(IntegrationError) as caught:
        call("platform.office_status", settings, {"platform_api_token": wrong}, office_id="OF-7")
    assert caught.value.status_code == 401
    assert "TOCSIN_SECRET_PLATFORM_API_TOKEN" in caught.value.hint
    assert wrong not in f"{caught.value.message} {caught.value.hint} {caught.value!r}"


def test_a_declared_retry_status_is_tried_again_until_it_passes(
    platform: FakePlatform, settings: Settings
) -> None:
    platform.fail_next(2, 503)
    status = call("platform.office_status", settings, SECRETS, office_id="OF-7")
    assert status["status_code"] == 200
    assert len(platform.requests) == 3  # two 503s, then the answer (attempts: 3)


def test_a_429_waits_the_retry_after_it_asks_for(
    platform: FakePlatform, settings: Settings
) -> None:
    platform.fail_next(1, 429, headers={"Retry-After": "1"})
    status = call("platform.office_status", settings, SECRETS, office_id="OF-7")
    assert status["status_code"] == 200
    assert len(platform.requests) == 2


def test_parameters_are_checked_against_their_declared_types(settings: Settings) -> None:
    with pytest.raises(ActionError, match="office_id"):
        call("platform.office_status", settings, SECRETS, office_id="not-an-office")
    with pytest.raises(ActionError, match="devices"):
        call("platform.issue_office_access", settings, SECRETS, office_id="OF-7", devices="PC-1")


def test_a_429_asking_for_longer_than_a_step_waits_fails_at_once_saying_so(
    platform: FakePlatform, settings: Settings
) -> None:
    platform.fail_next(1, 429, headers={"Retry-After": "120"})
    with pytest.raises(IntegrationError) as caught:
        call("platform.office_status", settings, SECRETS, office_id="OF-7")
    assert caught.value.status_code == 429 and caught.value.retryable
    assert "(it asks for 120 s)" in caught.value.hint
    assert len(platform.requests) == 1
    # not acted on: the step's retry may send even a non-idempotent operation again
    assert caught.value.unapplied and caught.value.retry_after == 120.0


def test_an_operation_that_is_not_idempotent_is_not_sent_again_after_a_502(
    platform: FakePlatform, settings: Settings
) -> None:
    platform.fail_next(1, 502)
    with pytest.raises(IntegrationError) as caught:
        call("platform.issue_office_access", settings, SECRETS, office_id="OF-7", devices=["PC-1"])
    assert caught.value.status_code == 502 and not caught.value.unapplied
    assert len(platform.requests) == 1  # it may have issued: a second call could issue twice
