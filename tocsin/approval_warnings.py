"""Warnings on a valid runbook: a step calling an action that needs approval
(``@action(needs_approval=True)``, a device wipe) without an approval gate covering it that
always runs and stops the run when nobody answers (which gate covers a step: ``guards``)."""

from __future__ import annotations

from collections.abc import Iterable

from tocsin.action_registry import ActionRegistry
from tocsin.errors import Problem
from tocsin.guards import guarding_step
from tocsin.model import Runbook, Step
from tocsin.yaml_source import PathKey, SourceMap


def needs_approval_warnings(
    runbook: Runbook,
    source_map: SourceMap,
    registry: ActionRegistry,
    steps: Iterable[tuple[Step, PathKey]],
) -> list[Problem]:
    """Where one of ``steps`` (each with its path) calls an action that needs approval
    without a gate covering it that always runs and aborts when nobody answers."""
    warnings: list[Problem] = []
    for step, step_path in steps:
        calls = [(step.action, (*step_path, "action"), "")]
        if step.undo is not None:
            calls.append((step.undo.action, (*step_path, "undo", "action"), "undo"))
        for name, path, role in calls:
            if name is None or name not in registry:
                continue
            if not registry.get(name).needs_approval:
                continue
            what = f"step {step.id!r} calls {name}"
            if role == "undo":
                warnings.append(
                    Problem(
                        source_map.locate(path),
                        f"{what} as its undo, which runs with no approval when a later "
                        "step fails; that action needs a person's approval",
                        f"call {name} in a step of its own behind an approval gate",
                    )
                )
                continue
            gate = guarding_step(runbook, step)
            if gate is None or gate.approval is None:
                warnings.append(
                    Problem(
                        source_map.locate(path),
                        f"{what}, which cannot be undone and needs approval, but no "
                        "approval gate covers this step",
                        "put an approval step right before it (or list it in a gate's `guards:`)",
                    )
                )
            elif gate.when is not None and gate.when != step.when:
                warnings.append(
                    Problem(
                        source_map.locate(path),
                        f"{what}, which cannot be undone and needs approval, but the gate "
                        f"{gate.id!r} covering it is skipped when `{gate.when}` is false, "
                        "and the step would then run unapproved",
                        f"give {step.id!r} the same `when:` as its gate, or drop the gate's",
                    )
                )
            elif gate.approval.on_timeout == "continue":
                warnings.append(
                    Problem(
                        source_map.locate(path),
                        f"{what}, which cannot be undone and needs approval, but the gate "
                        f"{gate.id!r} covering it lets the run continue when nobody answers",
                        f"set `on_timeout: abort` (or escalate) on {gate.id!r}",
                    )
                )
    return warnings
