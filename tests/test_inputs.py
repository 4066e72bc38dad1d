"""Inputs given with --set are typed, defaulted and checked against the runbook."""

from __future__ import annotations

import pytest

from tocsin.errors import InputError
from tocsin.incident import Incident, check_ticket
from tocsin.inputs import parse_assignments, resolve_inputs
from tocsin.model import Runbook

RUNBOOK = Runbook.model_validate(
    {
        "runbook": "sample",
        "version": 1,
        "title": "Sample",
        "summary": "Sample",
        "severity": "low",
        "sources": [{"title": "Doc", "document": "x.txt"}],
        "inputs": {
            "user": {"type": "email", "description": "Mailbox owner"},
            "disable_account": {"type": "boolean", "description": "Block", "default": True},
            "devices": {"type": "list", "description": "Devices", "required": False},
            "max_devices": {"type": "integer", "description": "Limit", "default": 10},
            "scope": {
                "type": "enum",
                "description": "Scope",
                "values": ["user", "office"],
                "default": "user",
            },
            "note": {"type": "string", "description": "Free text", "required": False},
            "temporary_password": {
                "type": "string",
                "description": "Password",
                "secret": True,
                "required": False,
            },
            "contacts": {
                "type": "list",
                "items": "email",
                "description": "People",
                "required": False,
            },
        },
        "steps": [{"id": "s", "title": "S", "manual": {"instructions": "Do it"}}],
    }
)


def test_values_are_converted_to_their_declared_types_and_defaults_applied() -> None:
    values, missing = resolve_inputs(
        RUNBOOK,
        parse_assignments(
            [
                "user= alice@broker.example",
                "disable_account=no",
                "devices=PC-1,PC-2",
                "max_devices=3",
            ]
        ),
    )
    assert missing == []
    assert values == {
        "user": "alice@broker.example",
        "disable_account": False,
        "devices": ["PC-1", "PC-2"],
        "max_devices": 3,
        "scope": "user",
    }


def test_repeated_set_builds_a_list() -> None:
    values, _ = resolve_inputs(
        RUNBOOK,
        parse_assignments(["user=a@b.example", "contacts=x@b.example", "contacts=y@b.example"]),
    )
    assert values["contacts"] == ["x@b.example", "y@b.example"]


def test_every_wrong_input_is_reported_at_once() -> None:
    with pytest.raises(InputError) as caught:
        resolve_inputs(
            RUNBOOK,
            parse_assignments(
                ["usr=a@b.example", "max_devices=many", "scope=world", "contacts=nobody"]
            ),
        )
    message = caught.value.message
    assert "unknown input 'usr' (did you mean 'user'?)" in message
    assert "max_devices: expected a whole number, got 'many'" in message
    assert "scope: 'world' is not one of user, office" in message
    assert "contacts: 'nobody' is not an email address" in message
    assert "missing required input user" in message
    assert caught.value.exit_code == 2


def test_a_wrong_secret_input_is_not_echoed() -> None:
    runbook = RUNBOOK.model_copy(deep=True)
    runbook.inputs["pin"] = runbook.inputs["max_devices"].model_copy(
        update={"secret": True, "default": None}
    )
    with pytest.raises(InputError) as caught:
        resolve_inputs(runbook, {"user": "a@b.example", "pin": "hunter2x"})
    assert "hunter2x" not in caught.value.message
    assert "pin:" in caught.value.message


def test_missing_inputs_can_be_listed_instead_of_refused_for_a_plan() -> None:
    values, missing = resolve_inputs(RUNBOOK, {}, allow_missing=True)
    assert missing == ["user"]
    assert "user" not in values


def test_set_without_equals_sign_is_refused() -> None:
    with pytest.raises(InputError, match="is not name=value"):
        parse_assignments(["user"])


def test_a_scalar_input_given_twice_is_refused() -> None:
    with pytest.raises(InputError, match="given 2 times"):
        resolve_inputs(RUNBOOK, parse_assignments(["user=a@b.example", "user=c@d.example"]))


@pytest.mark.parametrize("ticket", ["INC-1", "SEC-20931", "OPS_EU-7"])
def test_ticket_keys_are_accepted(ticket: str) -> None:
    assert check_ticket(ticket) == ticket
    assert Incident(ticket=ticket).as_template_values()["ticket"] == ticket


@pytest.mark.parametrize("ticket", ["", "inc-1", "INC1", "INC-", "INC-1; rm -rf /"])
def test_malformed_ticket_keys_are_refused(ticket: str) -> None:
    with pytest.raises(InputError, match="is not a ticket key"):
        check_ticket(ticket)
