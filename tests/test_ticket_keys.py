"""Ticket keys: the ticket system says what one looks like; Jira's form is the default."""

from __future__ import annotations

import re

import pytest

from tocsin.errors import InputError
from tocsin.incident import Incident, check_ticket
from tocsin.tickets import TicketKeys

SERVICENOW_KEYS = TicketKeys(
    re.compile(r"INC[0-9]{7}"), example="INC0010001", described="INC and seven digits"
)
ANYTHING = TicketKeys(re.compile(r".+"), example="42", described="anything")


def test_jira_keys_are_the_default() -> None:
    assert check_ticket(" INC-1234 ") == "INC-1234"
    with pytest.raises(InputError) as refused:
        check_ticket("INC0010001")
    assert refused.value.message == "'INC0010001' is not a ticket key"
    assert (
        refused.value.hint == "ticket keys are a project code, a dash and a number, like INC-1234"
    )


def test_a_servicenow_style_system_accepts_its_own_keys_and_says_what_it_expects() -> None:
    assert check_ticket("INC0010001", SERVICENOW_KEYS) == "INC0010001"
    assert SERVICENOW_KEYS.matches("INC0010001") and not SERVICENOW_KEYS.matches("INC-12")
    with pytest.raises(InputError) as refused:
        check_ticket("INC-12", SERVICENOW_KEYS)
    assert refused.value.hint == "ticket keys are INC and seven digits, like INC0010001"


@pytest.mark.parametrize("hostile", ["../etc/passwd", "INC 1", "<!channel>", "a/b", "x" * 65, ""])
def test_no_ticket_system_can_make_a_path_or_markup_a_key(hostile: str) -> None:
    # Keys name flow runs, tags, Slack channels and URL path segments.
    assert not ANYTHING.matches(hostile)
    with pytest.raises(InputError):
        check_ticket(hostile, ANYTHING)
    with pytest.raises(InputError):
        Incident(ticket=hostile)


def test_an_incident_takes_any_systems_safe_key() -> None:
    assert Incident(ticket="INC0010001").ticket == "INC0010001"
    assert Incident(ticket="10001").ticket == "10001"
