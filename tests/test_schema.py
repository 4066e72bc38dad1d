"""The generated JSON Schema lets editors check runbooks as they are typed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from tocsin.action_registry import ActionRegistry
from tocsin.schema import schema_text

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "schema" / "runbook.schema.json"
SCHEMA = json.loads(schema_text(ActionRegistry.discover()))
VALIDATOR = Draft202012Validator(SCHEMA)

MINIMAL: dict[str, Any] = {
    "runbook": "sample-book",
    "version": 1,
    "title": "Sample",
    "summary": "Sample",
    "severity": "low",
    "sources": [{"title": "Doc", "document": "d.txt"}],
    "inputs": {"level": {"type": "string", "description": "L", "default": "info"}},
    "steps": [{"id": "first", "title": "First", "action": "log", "with": {"message": "hi"}}],
}


def _errors(document: dict[str, Any]) -> list[str]:
    return [error.message for error in VALIDATOR.iter_errors(document)]


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    Draft202012Validator.check_schema(SCHEMA)


def test_the_committed_schema_file_is_up_to_date() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == schema_text(ActionRegistry.discover()), (
        "run: tocsin schema -o schema/runbook.schema.json"
    )


@pytest.mark.parametrize(
    "path",
    [
        *sorted((ROOT / "runbooks").glob("*.yaml")),
        *sorted((ROOT / "tests/fixtures/valid").glob("*.yaml")),
    ],
    ids=lambda p: p.name,
)
def test_valid_runbooks_pass_the_schema(path: Path) -> None:
    assert _errors(yaml.safe_load(path.read_text(encoding="utf-8"))) == []


def test_a_minimal_runbook_and_a_templated_parameter_pass() -> None:
    assert _errors(MINIMAL) == []
    templated = json.loads(json.dumps(MINIMAL))
    templated["steps"][0]["with"]["level"] = "{{ inputs.level }}"
    assert _errors(templated) == []


def _with_step(**changes: Any) -> dict[str, Any]:
    document = json.loads(json.dumps(MINIMAL))
    document["steps"][0].update(changes)
    return {key: value for key, value in document.items()}


@pytest.mark.parametrize(
    ("document", "where", "rule"),
    [
        ({**MINIMAL, "step": []}, "$", "additionalProperties"),
        ({**MINIMAL, "severity": "hihg"}, "$.severity", "enum"),
        (_with_step(manual={"instructions": "Do it"}), "$.steps[0]", "oneOf"),
        (_with_step(action="slack.post_mesage"), "$.steps[0].action", "enum"),
        (_with_step(**{"with": {"mesage": "hi"}}), "$.steps[0].with", "additionalProperties"),
        (
            _with_step(**{"with": {"message": "hi", "level": "loud"}}),
            "$.steps[0].with.level",
            "anyOf",
        ),
        (_with_step(timeout="30"), "$.steps[0].timeout", "anyOf"),
    ],
    ids=[
        "unknown-key",
        "bad-enum",
        "two-kinds",
        "unknown-action",
        "unknown-param",
        "bad-param",
        "bad-duration",
    ],
)
def test_malformed_runbooks_fail_the_schema_where_they_are_wrong(
    document: dict[str, Any], where: str, rule: str
) -> None:
    # The error an editor shows must point at the wrong key, for the right reason.
    found = {(error.json_path, error.validator) for error in VALIDATOR.iter_errors(document)}
    assert (where, rule) in found, found
