"""Which steps an approval gate covers: what its decision is bound to (the gate hash), whose
approval it takes to run one of them again after a crash, and whether a step that needs
approval has one (validation). Pure functions of the runbook model."""

from __future__ import annotations

from tocsin.model import ApprovalGate, Runbook, Step


def leaf_steps(steps: list[Step]) -> list[Step]:
    """The steps themselves, a parallel block replaced by its branches (at any depth)."""
    flat: list[Step] = []
    for step in steps:
        flat.extend(leaf_steps(step.parallel) if step.parallel else [step])
    return flat


def guarded_ids(runbook: Runbook, gate_step: Step) -> list[str]:
    """The steps a gate's decision covers: its ``guards:``, else the steps up to the next gate."""
    assert gate_step.approval is not None
    if gate_step.approval.guards is not None:
        return list(gate_step.approval.guards)
    ids: list[str] = []
    found = False
    for step in runbook.steps:
        if step.id == gate_step.id:
            found = True
            continue
        if found:
            if step.approval is not None:
                break
            ids.append(step.id)
    return ids


def guarding_gate(runbook: Runbook, step: Step) -> ApprovalGate | None:
    """The first gate whose decision covers ``step`` (itself or inside a covered block)."""
    gate_step = guarding_step(runbook, step)
    return gate_step.approval if gate_step is not None else None


def guarding_step(runbook: Runbook, step: Step) -> Step | None:
    """The approval step of the first gate whose decision covers ``step``."""
    for candidate, _ in runbook.iter_steps():
        if candidate.approval is None:
            continue
        covered = [runbook.step(i) for i in guarded_ids(runbook, candidate)]
        if step.id in {s.id for s in leaf_steps(covered)} | {s.id for s in covered}:
            return candidate
    return None


__all__ = ["guarded_ids", "guarding_gate", "guarding_step", "leaf_steps"]
