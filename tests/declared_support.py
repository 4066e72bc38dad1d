"""Calling declared actions the way the engine does: the registry's definition, a context
whose settings point the declared service at a fake on loopback."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tocsin.action_registry import ActionRegistry
from tocsin.actions import ActionContext, ActionDefinition
from tocsin.settings import Settings, StaticSecrets, load_settings, with_values


def declared_settings(
    base_urls: Mapping[str, str], *, folder: Path | None = None, ca_bundle: Path | None = None
) -> Settings:
    declared: dict[str, Any] = {"base_urls": dict(base_urls)}
    if folder is not None:
        declared["folder"] = str(folder)
    if ca_bundle is not None:
        declared["ca_bundle"] = str(ca_bundle)
    return with_values(load_settings(), {"declared": declared})


def context(settings: Settings, secrets: Mapping[str, str]) -> ActionContext:
    return ActionContext("INC-1", "step", StaticSecrets(dict(secrets)), settings)


def definition(name: str, settings: Settings | None = None) -> ActionDefinition:
    registry = ActionRegistry.for_settings(settings or load_settings())
    assert not registry.skipped, [str(p) for e in registry.skipped for p in e.problems]
    return registry.get(name)


def call(
    name: str, settings: Settings, secrets: Mapping[str, str], **parameters: Any
) -> dict[str, Any]:
    """Check the parameters and call the action, as a step of a run does."""
    return definition(name, settings).invoke(context(settings, secrets), parameters)
