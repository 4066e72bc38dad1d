"""Inputs given for a run (``--set name=value``), checked against what the runbook declares."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from tocsin.errors import InputError
from tocsin.model import InputType, Runbook


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """``["user=a@b.c", "devices=PC1", "devices=PC2"]`` -> ``{"user": "a@b.c", "devices": [...]}``."""
    values: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise InputError(
                f"--set {item!r} is not name=value",
                "write for example --set user=alice@example.com",
            )
        if name in values:
            previous = values[name]
            values[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            values[name] = value
    return values


def resolve_inputs(
    runbook: Runbook, given: Mapping[str, Any], *, allow_missing: bool = False
) -> tuple[dict[str, Any], list[str]]:
    """Typed inputs with defaults applied, and the names of required inputs not given.

    Every wrong input is reported at once in one ``InputError``; with ``allow_missing``
    the missing required inputs are returned instead of being an error.
    """
    errors: list[str] = []
    declared = runbook.inputs
    for name in given:
        if name not in declared:
            close = difflib.get_close_matches(name, list(declared), n=1, cutoff=0.6)
            known = ", ".join(declared) or "none"
            errors.append(
                f"unknown input {name!r}"
                + (f" (did you mean {close[0]!r}?)" if close else f" (inputs: {known})")
            )
    values: dict[str, Any] = {}
    missing: list[str] = []
    for name, spec in declared.items():
        if name in given:
            raw = given[name]
            if isinstance(raw, list) and spec.type is not InputType.LIST:
                errors.append(
                    f"{name}: given {len(raw)} times; only list inputs take several values"
                )
                continue
            try:
                values[name] = spec.convert(raw)
            except ValueError as exc:
                reason = str(exc)
                if spec.secret:
                    reason = reason.replace(str(raw), "****")  # never echo a secret
                errors.append(f"{name}: {reason}")
        elif spec.default is not None:
            values[name] = spec.default
        elif spec.is_required:
            missing.append(name)
    if missing and not allow_missing:
        errors.append(
            "missing required input" + ("s " if len(missing) > 1 else " ") + ", ".join(missing)
        )
    if errors:
        raise InputError(
            f"wrong inputs for runbook {runbook.runbook}:\n  - " + "\n  - ".join(errors),
            "set inputs with --set name=value; `tocsin list` shows each runbook's inputs",
        )
    return values, missing
