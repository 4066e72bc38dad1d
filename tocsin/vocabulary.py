"""What a runbook's templates can read: ``inputs.*``, ``incident.*``, ``runbook.*``, ``steps.ID.*``.

Defined once here and used three ways: the flow builds the context a step's templates are
rendered with (``template_context``), ``tocsin plan`` builds the same context with
placeholders, and the validator refuses a template that names anything else. A step
reads another step's ``outputs`` and ``status``; the outputs of an approval gate and of
a manual task are the fields of ``ApprovalOutputs`` and ``ManualOutputs``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypedDict

from tocsin.incident import Incident
from tocsin.model import Runbook
from tocsin.statuses import StepStatus

TEMPLATE_ROOTS = ("inputs", "steps", "incident", "runbook")
INCIDENT_FIELDS = tuple(f.name for f in fields(Incident))
RUNBOOK_FIELDS = ("id", "version", "title", "severity")
STEP_FIELDS = ("outputs", "status")


class ApprovalOutputs(TypedDict):
    """What a decided (or timed-out) approval gate outputs."""

    decision: str  # approved, rejected or timed_out
    approved_by: list[str]
    decided_at: str
    comment: str


class ManualOutputs(TypedDict):
    """What a manual task marked done outputs."""

    completed_by: str
    completed_at: str
    checklist: list[str]


KIND_OUTPUTS: dict[str, frozenset[str]] = {
    "approval": ApprovalOutputs.__required_keys__,
    "manual": ManualOutputs.__required_keys__,
    "parallel": frozenset(),
}
"""The outputs of the steps that run no action, by kind."""


def runbook_values(runbook: Runbook) -> dict[str, Any]:
    """What templates read as ``runbook.*`` (the keys are ``RUNBOOK_FIELDS``)."""
    return {
        "id": runbook.runbook,
        "version": runbook.version,
        "title": runbook.title,
        "severity": runbook.severity.value,
    }


def step_values(outputs: Any, status: Any) -> dict[str, Any]:
    """What templates read as ``steps.ID.*`` (the keys are ``STEP_FIELDS``)."""
    return {"outputs": outputs, "status": status}


def template_context(
    runbook: Runbook,
    incident: Incident,
    inputs: Mapping[str, Any],
    steps: Mapping[str, dict[str, Any]],
) -> dict[str, Any]:
    """The values a template is rendered with (the keys are ``TEMPLATE_ROOTS``).

    ``steps`` is used as given, not copied: the flow fills it in as steps finish.
    """
    return {
        "inputs": {name: inputs.get(name) for name in runbook.inputs},
        "incident": incident.as_template_values(),
        "runbook": runbook_values(runbook),
        "steps": steps,
    }


__all__ = [
    "INCIDENT_FIELDS",
    "KIND_OUTPUTS",
    "RUNBOOK_FIELDS",
    "STEP_FIELDS",
    "TEMPLATE_ROOTS",
    "ApprovalOutputs",
    "ManualOutputs",
    "StepStatus",
    "runbook_values",
    "step_values",
    "template_context",
]
