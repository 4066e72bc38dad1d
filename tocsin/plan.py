"""What a run would do, computed without calling anything.

``build_plan`` renders every step's parameters with the inputs and the incident;
values that only exist at run time (earlier steps' outputs, inputs not given)
stay visible as placeholders such as ``<steps.find_rules.outputs.count>``. For each
destructive action the plan says what it would touch (the action's ``describe()``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from tocsin.action_registry import ActionRegistry
from tocsin.actions import ActionDefinition
from tocsin.durations import format_duration
from tocsin.errors import TemplateError
from tocsin.guards import guarding_step
from tocsin.incident import Incident
from tocsin.inputs import resolve_inputs
from tocsin.model import Runbook, RunHandlers, Step
from tocsin.settings import EnvironmentSecrets, SecretStore, Settings
from tocsin.templating import evaluate_condition, parse_template, render_value
from tocsin.validation import LoadedRunbook
from tocsin.vocabulary import step_values, template_context

SECRET_MASK = "********"


class Unresolved(str):
    """A value known only at run time, shown as ``<where.it.comes.from>``."""

    __slots__ = ()

    def __new__(cls, source: str) -> Unresolved:
        return super().__new__(cls, f"<{source}>")


class _UnresolvedOutputs(dict[str, Any]):
    def __init__(self, step_id: str) -> None:
        super().__init__()
        self.step_id = step_id

    def __missing__(self, key: str) -> Unresolved:
        return Unresolved(f"steps.{self.step_id}.outputs.{key}")


@dataclass
class PlannedStep:
    """One step as the plan shows it."""

    number: str
    id: str
    kind: str
    title: str
    depth: int
    condition: str | None = None
    condition_outcome: str | None = None  # "runs", "skipped" or "decided at run time"
    action: str | None = None
    destructive: bool = False
    needs_approval: bool = False  # the action cannot be undone: a person must approve it
    approved_by_gate: str | None = None  # the gate whose decision covers this step, if any
    parameters: dict[str, Any] = field(default_factory=dict)
    touches: str | None = None
    preview: str | None = None  # the action's own preview of the call (a campaign's sample)
    failure: str | None = None  # the run would certainly fail here
    details: list[str] = field(default_factory=list)
    undo: str | None = None


@dataclass
class Plan:
    """The ordered steps of a run, with parameters resolved as far as they can be before it."""

    runbook_id: str
    runbook_version: str
    title: str
    severity: str
    ticket: str
    inputs: dict[str, Any]
    defaults_used: list[str]
    missing_inputs: list[str]
    steps: list[PlannedStep]
    handlers: list[PlannedStep]
    secrets_needed: list[str]

    @property
    def destructive_count(self) -> int:
        return sum(1 for step in self.steps if step.destructive)

    @property
    def failures(self) -> list[PlannedStep]:
        return [step for step in [*self.steps, *self.handlers] if step.failure]

    def count(self, kind: str) -> int:
        return sum(1 for step in self.steps if step.kind == kind)


def build_plan(
    loaded: LoadedRunbook,
    registry: ActionRegistry,
    incident: Incident,
    given_inputs: dict[str, Any],
    *,
    settings: Settings | None = None,
    secrets: SecretStore | None = None,
) -> Plan:
    """Compute the plan; raise ``InputError`` when the given inputs are wrong. With the
    settings, the plan also shows each action's preview of its call (``preview``)."""
    runbook = loaded.runbook
    values, missing = resolve_inputs(runbook, given_inputs, allow_missing=True)
    shown_inputs: dict[str, Any] = {}
    template_inputs: dict[str, Any] = {}
    for name, spec in runbook.inputs.items():
        if name in values:
            shown = SECRET_MASK if spec.secret else values[name]
            shown_inputs[name] = shown
            template_inputs[name] = shown
        elif name in missing:
            template_inputs[name] = Unresolved(f"inputs.{name}")
        else:
            template_inputs[name] = None
    unknown_steps = {
        step.id: step_values(_UnresolvedOutputs(step.id), Unresolved(f"steps.{step.id}.status"))
        for step, _ in runbook.iter_steps()
    }
    context = template_context(runbook, incident, template_inputs, unknown_steps)
    planner = _Planner(runbook, registry, context)
    if settings is not None:
        planner.previews = (settings, secrets if secrets is not None else EnvironmentSecrets())
    steps = planner.plan_steps(runbook.steps, prefix="", depth=0)
    handlers = planner.plan_steps(runbook.handlers, prefix="H", depth=0)
    return Plan(
        runbook_id=runbook.runbook,
        runbook_version=runbook.version,
        title=runbook.title,
        severity=runbook.severity.value,
        ticket=incident.ticket,
        inputs=shown_inputs,
        defaults_used=[n for n in runbook.inputs if n not in given_inputs and n in values],
        missing_inputs=missing,
        steps=steps,
        handlers=handlers,
        secrets_needed=sorted(planner.secrets),
    )


class _Planner:
    def __init__(self, runbook: Runbook, registry: ActionRegistry, context: dict[str, Any]) -> None:
        self.runbook = runbook
        self.registry = registry
        self.context = context
        self.secrets: set[str] = set()
        self.previews: tuple[Settings, SecretStore] | None = None

    def render(self, value: Any) -> Any:
        try:
            return render_value(value, self.context)
        except TemplateError as exc:
            return Unresolved(f"cannot render: {exc.message}")

    def render_call(self, definition: ActionDefinition, with_: dict[str, Any]) -> Any:
        """A call's parameters as the run will render them (URL values encoded), when known.

        Raises ``TemplateError`` when the run would refuse them (a value that moves a URL).
        """
        rendered = self.render(with_)
        if not isinstance(rendered, dict):
            return rendered
        known_urls = {
            name: with_[name]
            for name in definition.url_parameters()
            if name in with_ and not _has_unresolved(rendered.get(name))
        }  # a URL with placeholders stays readable; it is encoded at run time
        return {**rendered, **definition.render_parameters(known_urls, self.context)}

    def plan_steps(self, steps: list[Step], *, prefix: str, depth: int) -> list[PlannedStep]:
        planned: list[PlannedStep] = []
        for index, step in enumerate(steps, start=1):
            number = f"{prefix}{'.' if prefix and prefix != 'H' else ''}{index}"
            planned.append(self.plan_step(step, number, depth))
            if step.parallel:
                planned.extend(self.plan_steps(step.parallel, prefix=number, depth=depth + 1))
        return planned

    def plan_step(self, step: Step, number: str, depth: int) -> PlannedStep:
        planned = PlannedStep(
            number=number,
            id=step.id,
            kind=step.kind,
            title=str(self.render(step.title)),
            depth=depth,
        )
        if step.when is not None:
            planned.condition = step.when
            planned.condition_outcome = self.condition_outcome(step.when)
        if step.action is not None:
            self.plan_action(step, planned)
        if step.approval is not None:
            gate = step.approval
            planned.details.append(
                f"approvers: {gate.approvers} · quorum {gate.quorum} · timeout "
                f"{format_duration(gate.timeout)} · on timeout: {gate.on_timeout}"
                + (f" to {gate.escalate_to}" if gate.escalate_to else "")
            )
            planned.details.append(f"prompt: {self.render(gate.prompt)}")
            if gate.guards:
                planned.details.append(f"covers: {', '.join(gate.guards)}")
        if step.manual is not None:
            task = step.manual
            if task.assignee:
                planned.details.append(f"assignee: {task.assignee}")
            planned.details.append(f"instructions: {str(self.render(task.instructions)).strip()}")
            planned.details.extend(f"[ ] {self.render(item)}" for item in task.checklist)
        if step.parallel:
            planned.details.append(f"runs {len(step.parallel)} branches at the same time")
        self.plan_policies(step, planned)
        return planned

    def condition_outcome(self, expression: str) -> str:
        parsed = parse_template(expression, expression=True)
        if any(ref.root == "steps" for ref in parsed.references):
            return "decided at run time"
        try:
            rendered = render_value("{{ " + expression + " }}", self.context)
        except TemplateError:
            return "decided at run time"
        if isinstance(rendered, Unresolved):
            return "decided at run time"
        return "runs" if evaluate_condition(expression, self.context) else "skipped"

    def plan_action(self, step: Step, planned: PlannedStep) -> None:
        assert step.action is not None
        definition = self.registry.get(step.action)
        planned.action = definition.name
        planned.destructive = definition.destructive
        planned.needs_approval = definition.needs_approval
        if definition.needs_approval:
            gate = guarding_step(self.runbook, step)
            planned.approved_by_gate = gate.id if gate is not None else None
        try:
            parameters = self.render_call(definition, step.with_)
        except TemplateError as exc:
            planned.failure = exc.message
            return
        planned.parameters = parameters if isinstance(parameters, dict) else {}
        self.secrets.update(definition.secrets)
        if _has_unresolved(planned.parameters):
            self.secrets.update(
                str(planned.parameters[name])
                for name in definition.secret_parameters()
                if planned.parameters.get(name)
                and not isinstance(planned.parameters[name], Unresolved)
            )
            planned.touches = "depends on values known only at run time"
            return
        try:
            checked = definition.parameters.model_validate(planned.parameters)
        except ValidationError as exc:
            planned.failure = "; ".join(
                f"{'.'.join(map(str, err['loc'])) or 'with'}: {err['msg']}" for err in exc.errors()
            )
            return
        self.secrets.update(definition.secrets_needed(checked.model_dump()))
        planned.destructive = definition.changes_anything(checked)
        planned.touches = definition.describe_call(checked)
        if self.previews is not None:
            planned.preview = definition.preview_call(*self.previews, checked)

    def plan_policies(self, step: Step, planned: PlannedStep) -> None:
        policies: list[str] = []
        if step.retry is not None:
            policies.append(
                f"retry: {step.retry.attempts} attempts, backoff {format_duration(step.retry.backoff)}"
                + (f" ×{step.retry.backoff_factor:g}" if step.retry.backoff_factor != 1 else "")
            )
        if step.timeout is not None:
            policies.append(f"timeout {format_duration(step.timeout)}")
        if step.kind != "approval":
            on_failure = step.on_failure
            if isinstance(on_failure, RunHandlers):
                policies.append(f"on failure: run {', '.join(on_failure.run)}, then stop")
            elif on_failure == "continue":
                policies.append("on failure: continue")
        if policies:
            planned.details.append(" · ".join(policies))
        if step.undo is not None:
            undo = self.registry.get(step.undo.action)
            planned.undo = f"{undo.name}"
            try:
                parameters = self.render_call(undo, step.undo.with_)
            except TemplateError as exc:
                planned.undo = f"{undo.name} (would fail: {exc.message})"
                return
            if isinstance(parameters, dict) and not _has_unresolved(parameters):
                try:
                    planned.undo = undo.describe_call(undo.parameters.model_validate(parameters))
                except ValidationError:
                    planned.undo = f"{undo.name} {parameters}"


def _has_unresolved(value: Any) -> bool:
    if isinstance(value, Unresolved):
        return True
    if isinstance(value, str):
        return "<steps." in value or "<inputs." in value or "<cannot render" in value
    if isinstance(value, dict):
        return any(_has_unresolved(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_unresolved(item) for item in value)
    return False
