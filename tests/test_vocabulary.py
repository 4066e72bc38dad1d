"""What templates can read is one vocabulary: what the validator accepts is what a run gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from tocsin.action_registry import ActionRegistry
from tocsin.errors import RunbookError
from tocsin.gates import DECIDED
from tocsin.incident import Incident
from tocsin.journal import FINISHED_STEP
from tocsin.plan import build_plan
from tocsin.validation import load_runbook
from tocsin.vocabulary import (
    INCIDENT_FIELDS,
    KIND_OUTPUTS,
    RUNBOOK_FIELDS,
    STEP_FIELDS,
    TEMPLATE_ROOTS,
    StepStatus,
    step_values,
    template_context,
)

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = ActionRegistry.discover()

RUNBOOK = """\
runbook: words
version: 1
title: Words
summary: Reads every part of the vocabulary
severity: low
sources: [{title: Test, document: test.txt}]
inputs:
  user: {type: string, description: Whose account}
approver_groups:
  leads: {users: [U0LEAD1]}
steps:
  - id: gate
    title: Gate
    approval: {approvers: leads, prompt: "Go for {{ inputs.user }}?"}
  - id: call
    title: Call
    manual: {instructions: Call them}
  - id: say
    title: Say
    action: log
    with:
      message: >-
        {{ incident.ticket }} {{ runbook.id }} {{ steps.gate.outputs.decision }}
        {{ steps.call.outputs.completed_by }} {{ steps.call.status }} {{ inputs.user }}
"""


def test_a_runs_template_context_has_exactly_the_names_the_validator_accepts(
    tmp_path: Path,
) -> None:
    path = tmp_path / "words.yaml"
    path.write_text(RUNBOOK)
    loaded = load_runbook(path, REGISTRY)
    incident = Incident(ticket="INC-1")
    steps = {s.id: step_values({}, StepStatus.PENDING) for s, _ in loaded.runbook.iter_steps()}
    context = template_context(loaded.runbook, incident, {"user": "jane"}, steps)
    assert set(context) == set(TEMPLATE_ROOTS)
    assert tuple(context["incident"]) == INCIDENT_FIELDS
    assert tuple(context["runbook"]) == RUNBOOK_FIELDS
    assert all(tuple(values) == STEP_FIELDS for values in context["steps"].values())
    assert context["inputs"] == {"user": "jane"}
    assert context["steps"] is steps  # filled in as the run goes, never a copy


def test_the_plan_renders_with_the_same_vocabulary(tmp_path: Path) -> None:
    path = tmp_path / "words.yaml"
    path.write_text(RUNBOOK)
    plan = build_plan(load_runbook(path, REGISTRY), REGISTRY, Incident(ticket="INC-2"), {})
    said = next(step for step in plan.steps if step.id == "say")
    assert "INC-2 words <steps.gate.outputs.decision>" in str(said.parameters)


@pytest.mark.parametrize(
    ("reference", "refusal"),
    [
        ("incident.tiket", "`incident.tiket` does not exist"),
        ("runbook.name", "`runbook.name` does not exist"),
        ("steps.gate.outputs.approver", "has no output 'approver'"),
        ("steps.gate.state", "`steps.gate.state` does not exist"),
        ("ticket", "unknown name `ticket` in template"),
    ],
)
def test_a_name_outside_the_vocabulary_is_refused(
    tmp_path: Path, reference: str, refusal: str
) -> None:
    path = tmp_path / "words.yaml"
    path.write_text(RUNBOOK.replace("{{ inputs.user }}\n", "{{ " + reference + " }}\n"))
    with pytest.raises(RunbookError) as caught:
        load_runbook(path, REGISTRY)
    assert any(refusal in problem.message for problem in caught.value.problems)


def test_the_outputs_of_gates_and_manual_tasks_are_those_a_run_writes() -> None:
    assert KIND_OUTPUTS["approval"] == {"decision", "approved_by", "decided_at", "comment"}
    assert KIND_OUTPUTS["manual"] == {"completed_by", "completed_at", "checklist"}


def test_every_status_the_journal_and_the_gates_name_is_a_step_status() -> None:
    assert set(FINISHED_STEP) | DECIDED <= {status.value for status in StepStatus}
