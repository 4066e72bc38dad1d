"""The runbook JSON Schema, generated from the model and the installed actions.

Editors (VS Code's YAML extension, JetBrains IDEs) use it to check runbooks as
they are typed. Each action's ``with:`` parameters are described through an
``if action == name then with: ...`` rule; a parameter may always be given as a
template string, whose value is only known at run time.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic.json_schema import models_json_schema

from tocsin.action_registry import ActionRegistry
from tocsin.model import STEP_KINDS, Runbook

SCHEMA_ID = "https://tocsin.dev/schema/runbook-v1.json"
_TEMPLATE_STRING = {"type": "string", "pattern": r"\{\{|\{%", "description": "A template"}


def runbook_json_schema(registry: ActionRegistry) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a runbook file."""
    definitions = list(registry)
    models = [(Runbook, "validation"), *((d.parameters, "validation") for d in definitions)]
    refs, bundle = models_json_schema(models, ref_template="#/$defs/{model}")  # type: ignore[arg-type]
    defs: dict[str, Any] = bundle["$defs"]
    root = dict(defs.pop("Runbook"))
    step = defs["Step"]
    step["oneOf"] = [{"required": [kind]} for kind in STEP_KINDS]
    rules = []
    for definition in definitions:
        ref = refs[(definition.parameters, "validation")]["$ref"]
        model_name = ref.rsplit("/", 1)[-1]
        _allow_templates(defs[model_name])
        defs[model_name]["description"] = (
            f"Parameters of {definition.name}: {definition.description}"
        )
        rules.append(
            {
                "if": {
                    "properties": {"action": {"const": definition.name}},
                    "required": ["action"],
                },
                "then": {"properties": {"with": {"$ref": ref}}},
            }
        )
    step["allOf"] = rules
    defs["UndoAction"]["allOf"] = rules
    step["properties"]["action"]["enum"] = [d.name for d in definitions] or None
    defs["UndoAction"]["properties"]["action"]["enum"] = [d.name for d in definitions] or None
    root["patternProperties"] = {"^x-": {"description": "Ignored: a place for shared anchors"}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **root,
        "title": "Tocsin runbook (format 1)",
        "$defs": defs,
    }


def _allow_templates(model_schema: dict[str, Any]) -> None:
    for name, prop in list(model_schema.get("properties", {}).items()):
        description = prop.get("description")
        title = prop.get("title")
        wrapped: dict[str, Any] = {"anyOf": [_strip(prop), _TEMPLATE_STRING]}
        if "default" in prop:
            wrapped["default"] = prop["default"]
        if description:
            wrapped["description"] = description
        if title:
            wrapped["title"] = title
        model_schema["properties"][name] = wrapped


def _strip(prop: dict[str, Any]) -> dict[str, Any]:
    stripped = {k: v for k, v in prop.items() if k not in ("title", "description", "default")}
    return _template_items(stripped)


def _template_items(prop: dict[str, Any]) -> dict[str, Any]:
    """A list whose items may each be a template too (``devices: ["{{ inputs.device }}"]``)."""
    if prop.get("type") == "array" and isinstance(prop.get("items"), dict):
        return {**prop, "items": {"anyOf": [prop["items"], _TEMPLATE_STRING]}}
    if isinstance(prop.get("anyOf"), list):
        return {**prop, "anyOf": [_template_items(option) for option in prop["anyOf"]]}
    return prop


def schema_text(registry: ActionRegistry) -> str:
    """The schema as the text written to ``schema/runbook.schema.json``."""
    return (
        json.dumps(runbook_json_schema(registry), indent=2, sort_keys=True, ensure_ascii=False)
        + "\n"
    )
