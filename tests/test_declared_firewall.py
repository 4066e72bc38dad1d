"""The shipped firewall declaration (integrations/firewall.yaml) against the fake firewall,
which verifies each request's HMAC signature itself."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.declared_support import call, declared_settings
from tocsin.errors import ActionError, ConfigurationError, IntegrationError
from tocsin.integrations.firewall.fake import FakeFirewall
from tocsin.settings import Settings

KEY = "fw-test-key-0123456789abcdef"
SECRETS = {"firewall_hmac_key": KEY}


@pytest.fixture(scope="module")
def firewall() -> Iterator[FakeFirewall]:
    with FakeFirewall(key=KEY) as fake:
        yield fake


@pytest.fixture
def settings(firewall: FakeFirewall) -> Settings:
    firewall.reset()
    return declared_settings({"firewall": f"{firewall.url}/api/v2"})


def test_an_office_range_is_blocked_listed_and_unblocked(
    firewall: FakeFirewall, settings: Settings
) -> None:
    blocked = call(
        "firewall.block_range", settings, SECRETS, office_id="OF-7", cidr="203.0.113.0/24"
    )
    assert blocked == {"rule_id": "R-0001", "cidr": "203.0.113.0/24", "status_code": 201}
    assert firewall.active_blocks("OF-7") == ["203.0.113.0/24"]

    listed = call("firewall.block_status", settings, SECRETS, office_id="OF-7")
    assert listed["count"] == 1 and listed["blocks"][0]["cidr"] == "203.0.113.0/24"
    assert firewall.requests[-1].raw_query == "state=active"  # signed with its query

    removed = call(
        "firewall.unblock_range", settings, SECRETS, office_id="OF-7", cidr="203.0.113.0/24"
    )
    assert removed == {"removed": True, "status_code": 200}
    # The range is one path segment: its / is encoded, never a new segment.
    assert firewall.requests[-1].path == "/api/v2/offices/OF-7/blocks/203.0.113.0%2F24"
    assert firewall.active_blocks() == []


def test_blocking_twice_and_unblocking_twice_succeed_without_changing_more(
    firewall: FakeFirewall, settings: Settings
) -> None:
    first = call(
        "firewall.block_range", settings, SECRETS, office_id="OF-7", cidr="198.51.100.0/24"
    )
    again = call(
        "firewall.block_range", settings, SECRETS, office_id="OF-7", cidr="198.51.100.0/24"
    )
    assert (first["status_code"], again["status_code"]) == (201, 409)
    assert again["rule_id"] == first["rule_id"]  # the existing rule, read from the 409
    assert firewall.active_blocks() == ["198.51.100.0/24"]

    call("firewall.unblock_range", settings, SECRETS, office_id="OF-7", cidr="198.51.100.0/24")
    gone = call(
        "firewall.unblock_range", settings, SECRETS, office_id="OF-7", cidr="198.51.100.0/24"
    )
    assert gone == {"removed": None, "status_code": 404}
    assert firewall.active_blocks() == []


def test_a_refused_range_says_the_firewall_s_message_from_the_declared_error_shape(
    firewall: FakeFirewall, settings: Settings
) -> None:
    with pytest.raises(IntegrationError) as caught:
        call("firewall.block_range", settings, SECRETS, office_id="OF-7", cidr="10.0.0.0/8")
    assert caught.value.status_code == 422
    # error.message: /error/message, not the whole JSON body
    assert caught.value.message.endswith(": refusing to block 10.0.0.0/8: broader than /16")
    assert "range_too_broad" not in caught.value.message
    assert firewall.active_blocks() == []


def test_a_wrong_key_is_refused_by_the_firewall_and_nothing_is_blocked(
    firewall: FakeFirewall, settings: Settings
) -> None:
    wrong = "not-the-firewall-key-42"
    with pytest.raises(IntegrationError) as caught:
        call(
            "firewall.block_range", settings, {"firewall_hmac_key": wrong},
            office_id="OF-7", cidr="203.0.113.0/24",
        )  # fmt: skip
    assert caught.value.status_code == 401
    assert "the signature does not match the request" in caught.value.message
    assert "TOCSIN_SECRET_FIREWALL_HMAC_KEY" in caught.value.hint
    assert wrong not in f"{caught.value.message} {caught.value.hint}"
    sent = firewall.requests[-1]
    assert sent.header("x-signature") and wrong not in str(sent.headers)
    assert firewall.active_blocks() == []


def test_a_missing_key_names_the_variable_before_anything_is_sent(
    firewall: FakeFirewall, settings: Settings
) -> None:
    with pytest.raises(ConfigurationError, match="firewall_hmac_key") as caught:
        call("firewall.block_range", settings, {}, office_id="OF-7", cidr="203.0.113.0/24")
    assert caught.value.hint == "set the environment variable TOCSIN_SECRET_FIREWALL_HMAC_KEY"
    assert firewall.requests == []


@pytest.mark.parametrize("cidr", ["203.0.113.7/24", "not-a-range", "203.0.113.0/24\r\nX: y"])
def test_a_value_that_is_not_a_network_is_refused_before_the_call(
    firewall: FakeFirewall, settings: Settings, cidr: str
) -> None:
    with pytest.raises(ActionError, match="cidr"):
        call("firewall.block_range", settings, SECRETS, office_id="OF-7", cidr=cidr)
    assert firewall.requests == []
