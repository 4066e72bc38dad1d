"""The structure pass: a runbook document checked against the pydantic model.

Each of pydantic's errors becomes a problem located at ``file:line:column`` in the YAML and
written for a person: the key or value at fault, what was expected, and a hint (the key or
value probably meant, the pattern an id follows).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ValidationError

from tocsin.errors import Location, Problem
from tocsin.model import (
    ApprovalGate,
    ApproverGroup,
    InputSpec,
    ManualTask,
    RetryPolicy,
    Runbook,
    RunHandlers,
    Source,
    Step,
    UndoAction,
)
from tocsin.yaml_source import PathKey, SourceMap

_TYPE_WORDS = {
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping (key: value lines)",
    "model_type": "a mapping (key: value lines)",
    "model_attributes_type": "a mapping (key: value lines)",
    "list_type": "a list (- item lines)",
}

_PATTERN_HINTS = {
    "id": "a step id is lowercase letters, digits and _, starting with a letter (revoke_sessions)",
    "runbook": "a runbook id is lowercase words joined by - (mailbox-compromise)",
    "action": "an action name is dotted lowercase words (microsoft.revoke_sessions)",
    "version": 'a version is a number like 3 or "1.2.0"',
    "users": "Slack user ids start with U or W (U012AB3CD); find them in the person's profile",
    "usergroup": "a Slack user group id starts with S (S0614TZR7)",
    "approvers": "approver group names are lowercase letters, digits and _",
    "escalate_to": "approver group names are lowercase letters, digits and _",
    "assignee": "roles are lowercase letters, digits and _ (it_partner)",
    "bearer_token_secret": "secret names are lowercase letters, digits and _",
}


def _model_at(path: PathKey) -> type[BaseModel] | None:
    """Which model describes the mapping at ``path`` (for did-you-mean on unknown keys)."""
    if not path:
        return Runbook
    last = path[-1]
    parent = path[-2] if len(path) >= 2 else None
    if isinstance(last, int) and parent in ("steps", "handlers", "parallel"):
        return Step
    if isinstance(last, int) and parent == "sources":
        return Source
    if parent == "inputs" and len(path) == 2:
        return InputSpec
    if parent == "approver_groups" and len(path) == 2:
        return ApproverGroup
    models: dict[str | int, type[BaseModel]] = {
        "approval": ApprovalGate,
        "manual": ManualTask,
        "retry": RetryPolicy,
        "undo": UndoAction,
        "on_failure": RunHandlers,
    }
    return models.get(last)


def _keys_of(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """The hint naming the candidate closest to ``word``, or empty when none is close."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"did you mean {matches[0]!r}?" if matches else ""


def structure_problems(exc: ValidationError, source_map: SourceMap) -> list[Problem]:
    """Turn pydantic's errors into located problems written for a person."""
    problems: dict[tuple[Location, str], Problem] = {}
    for error in exc.errors():
        problem = _structure_problem(error, source_map)
        problems.setdefault((problem.location, problem.message), problem)
    return list(problems.values())


def _document_path(loc: tuple[str | int, ...], source_map: SourceMap) -> tuple[PathKey, list[str]]:
    """Split pydantic's loc into the document path and pydantic's own markers ('[key]', union tags)."""
    path: list[str | int] = []
    markers: list[str] = []
    for part in loc:
        candidate = (*path, part)
        if candidate in source_map.values or candidate in source_map.keys:
            path.append(part)
        elif isinstance(part, str) and not part.startswith(("[", "function-", "literal[")):
            path.append(part)  # a missing key: not in the file, by definition
        else:
            markers.append(str(part))
    return tuple(path), markers


def _structure_problem(error: Any, source_map: SourceMap) -> Problem:
    path, markers = _document_path(tuple(error["loc"]), source_map)
    kind: str = error["type"]
    value = error.get("input")
    last = path[-1] if path else None
    where = _describe_path(path)
    if "[key]" in markers:
        return Problem(
            source_map.locate(path, key=True),
            f"{last!r} is not a valid name",
            "names are lowercase letters, digits and _, starting with a letter",
        )
    if kind == "missing":
        parent = path[:-1]
        return Problem(
            source_map.locate(parent),
            f"{_describe_path(parent)} is missing the required key `{last}`",
            _missing_hint(str(last)),
        )
    if kind == "extra_forbidden":
        model = _model_at(path[:-1])
        allowed = _keys_of(model) if model else []
        hint = did_you_mean(str(last), allowed)
        if not hint and allowed:
            hint = f"allowed keys here: {', '.join(allowed)}"
        return Problem(
            source_map.locate(path, key=True),
            f"unknown key `{last}` in {_describe_path(path[:-1])}",
            hint,
        )
    at_key = error.get("ctx", {}).get("at_key")
    if at_key and (*path, at_key) in source_map.keys:
        message = str(error["msg"])
        return Problem(source_map.locate((*path, at_key), key=True), f"{where}: {message}")
    location = source_map.locate(path)
    if kind in ("literal_error", "enum"):
        expected = str(error.get("ctx", {}).get("expected", ""))
        choices = [part.strip(" '") for part in expected.replace(" or ", ",").split(",")]
        return Problem(
            location,
            f"{where}: {value!r} is not one of {', '.join(c for c in choices if c)}",
            did_you_mean(str(value), choices),
        )
    if kind == "string_pattern_mismatch":
        hint = _PATTERN_HINTS.get(str(last), "")
        if isinstance(last, int) and len(path) >= 2:
            hint = _PATTERN_HINTS.get(str(path[-2]), hint)
        return Problem(location, f"{where}: {value!r} is not a valid value here", hint)
    if kind in _TYPE_WORDS:
        return Problem(location, f"{where} must be {_TYPE_WORDS[kind]}, not {kind_of(value)}")
    if kind == "too_short":
        minimum = error.get("ctx", {}).get("min_length", 1)
        return Problem(location, f"{where} needs at least {minimum} item(s)")
    bounds = {
        "greater_than_equal": ("ge", "at least"),
        "greater_than": ("gt", "more than"),
        "less_than_equal": ("le", "at most"),
        "less_than": ("lt", "less than"),
    }
    if kind in bounds:
        ctx_key, words = bounds[kind]
        limit = error.get("ctx", {}).get(ctx_key)
        return Problem(location, f"{where} must be {words} {limit}, not {value!r}")
    message = str(error["msg"]).removeprefix("Value error, ")
    return Problem(location, f"{where}: {message}" if where != "the runbook" else message)


def _missing_hint(key: str) -> str:
    hints = {
        "title": "every step and the runbook itself have a title a person reads",
        "id": "give the step a unique id such as revoke_sessions",
        "steps": "a runbook needs at least one step",
        "sources": "cite where the procedure comes from (document and section, or a URL)",
        "prompt": "say what the approvers are deciding",
        "type": "input types: string, email, boolean, integer, list, enum",
    }
    return hints.get(key, "")


def _describe_path(path: PathKey) -> str:
    if not path:
        return "the runbook"
    parts: list[str] = []
    for part in path:
        if isinstance(part, int):
            parts[-1] = f"{parts[-1]}[{part}]" if parts else f"[{part}]"
        else:
            parts.append(part)
    return "`" + ".".join(parts) + "`"


def kind_of(value: Any) -> str:
    """What ``value`` is, in the words of a problem (``not the number 3``)."""
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int | float):
        return f"the number {value}"
    return f"the text {value!r}"
