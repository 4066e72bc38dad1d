"""The semantic pass: the checks that need the whole runbook and the action registry.

On a structurally valid runbook: duplicate step ids, unknown actions, ``with:`` parameters,
template references (to inputs, the incident, earlier steps' outputs), approver groups,
clocks, handlers and their cycles. Every problem is collected, none stops the others; the
needs-approval warnings (``approval_warnings``) follow when there is no problem.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from tocsin.action_registry import ActionRegistry
from tocsin.approval_warnings import needs_approval_warnings
from tocsin.errors import Location, Problem, UnknownActionError
from tocsin.model import ApprovalGate, Runbook, RunHandlers, Step
from tocsin.runbook_structure import did_you_mean
from tocsin.templating import Reference, contains_template, parse_template
from tocsin.vocabulary import (
    INCIDENT_FIELDS,
    KIND_OUTPUTS,
    RUNBOOK_FIELDS,
    STEP_FIELDS,
    TEMPLATE_ROOTS,
)
from tocsin.yaml_source import PathKey, SourceMap


@dataclass
class _StepInfo:
    step: Step
    path: PathKey
    order: int
    section: str  # "steps" or "handlers"
    parallel_group: PathKey | None  # the path of the enclosing parallel step, if any
    visible: frozenset[str] = field(default_factory=frozenset)


class SemanticChecker:
    """Checks that need the whole runbook and the action registry."""

    def __init__(self, runbook: Runbook, source_map: SourceMap, registry: ActionRegistry) -> None:
        self.runbook = runbook
        self.map = source_map
        self.registry = registry
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.steps: dict[str, _StepInfo] = {}

    def add(self, path: PathKey, message: str, hint: str = "", *, key: bool = False) -> None:
        self.problems.append(Problem(self.map.locate(path, key=key), message, hint))

    def check(self) -> list[Problem]:
        self._index_steps()
        for info in self.steps.values():
            self._check_step(info)
        self._check_handlers()
        self._check_clocks()
        self._check_operators()
        if not self.problems:  # coverage is computed on a runbook whose references hold
            self.warnings.extend(
                needs_approval_warnings(
                    self.runbook,
                    self.map,
                    self.registry,
                    ((info.step, info.path) for info in self.steps.values()),
                )
            )
        return self.problems

    def _check_operators(self) -> None:
        groups = self.runbook.approver_groups
        name = self.runbook.operators
        if name is not None and name not in groups:
            hint = did_you_mean(name, groups) or "declare the group under `approver_groups:`"
            self.add(
                ("operators",),
                f"operators names approver group {name!r}, which is not declared",
                hint,
            )

    def _check_clocks(self) -> None:
        for name, clock in self.runbook.clocks.items():
            if clock.stopped_by not in self.steps:
                self.add(
                    ("clocks", name, "stopped_by"),
                    f"clock {name!r} is stopped by {clock.stopped_by!r}, which is not a step",
                    did_you_mean(clock.stopped_by, self.steps) or "name the step that meets it",
                )

    # index and visibility

    def _index_steps(self) -> None:
        order = 0
        first_seen: dict[str, PathKey] = {}
        for section, steps in (("steps", self.runbook.steps), ("handlers", self.runbook.handlers)):
            for info in self._walk(steps, (section,), None, section):
                info.order = order
                order += 1
                if info.step.id in first_seen:
                    line = self.map.locate((*first_seen[info.step.id], "id")).line
                    self.add(
                        (*info.path, "id"),
                        f"duplicate step id {info.step.id!r} (first used on line {line})",
                        "step ids must be unique in a runbook, handlers included",
                    )
                    continue
                first_seen[info.step.id] = info.path
                self.steps[info.step.id] = info

    def _walk(
        self, steps: list[Step], prefix: PathKey, group: PathKey | None, section: str
    ) -> Iterator[_StepInfo]:
        for index, step in enumerate(steps):
            path = (*prefix, index)
            yield _StepInfo(step, path, 0, section, group)
            if step.parallel:
                yield from self._walk(step.parallel, (*path, "parallel"), path, section)

    def _completed_before(self, info: _StepInfo) -> set[str]:
        """Ids of the steps that have finished whenever ``info``'s step starts."""
        main_ids = [i for i in self.steps.values() if i.section == "steps"]
        if info.section == "handlers":
            handler_order = [i for i in self.steps.values() if i.section == "handlers"]
            earlier = {
                i.step.id
                for i in handler_order
                if i.order < info.order and not _inside(i.path, info.path)
            }
            return {i.step.id for i in main_ids} | earlier
        top = info.path[:2]
        visible: set[str] = set()
        for other in main_ids:
            if other.path[:2] == top:
                continue  # same top-level block: its branches run concurrently or contain us
            if other.order < info.order:
                visible.add(other.step.id)
        return visible

    # per step

    def _check_step(self, info: _StepInfo) -> None:
        step, path = info.step, info.path
        visible = self._completed_before(info)
        if step.action is not None:
            self._check_action_call(step.action, step.with_, path, "action")
            for name, template in step.outputs.items():
                self._check_template(
                    template,
                    (*path, "outputs", name),
                    visible | {step.id},
                    info,
                    extra_roots=("result",),
                )
        if step.undo is not None:
            self._check_action_call(step.undo.action, step.undo.with_, (*path, "undo"), "action")
            self._check_strings(step.undo.with_, (*path, "undo", "with"), visible | {step.id}, info)
        self._check_strings(step.with_, (*path, "with"), visible, info)
        self._check_template(step.title, (*path, "title"), visible, info)
        if step.description:
            self._check_template(step.description, (*path, "description"), visible, info)
        if step.when is not None:
            self._check_template(step.when, (*path, "when"), visible, info, expression=True)
        if step.approval is not None:
            self._check_approval(step.approval, (*path, "approval"), visible, info)
        if step.manual is not None:
            self._check_template(
                step.manual.instructions, (*path, "manual", "instructions"), visible, info
            )
            for index, item in enumerate(step.manual.checklist):
                self._check_template(item, (*path, "manual", "checklist", index), visible, info)
        if isinstance(step.on_failure, RunHandlers):
            for index, target in enumerate(step.on_failure.run):
                self._check_handler_target(target, (*path, "on_failure", "run", index))

    def _check_action_call(
        self, name: str, parameters: dict[str, Any], path: PathKey, key: str
    ) -> None:
        try:
            definition = self.registry.get(name)
        except UnknownActionError as exc:
            self.add((*path, key), exc.message, exc.hint)
            return
        deferred = {p for p, value in parameters.items() if contains_template(value)}
        concrete = {p: value for p, value in parameters.items() if p not in deferred}
        allowed = list(definition.parameters.model_fields)
        for param in sorted(deferred - set(allowed)):
            self._unknown_parameter(param, name, allowed, path)
        try:
            definition.parameters.model_validate(concrete)
        except ValidationError as exc:
            for error in exc.errors():
                loc = tuple(error["loc"])
                param = str(loc[0]) if loc else ""
                if error["type"] == "missing" and param in deferred:
                    continue  # given as a template, checked when rendered
                if error["type"] == "extra_forbidden":
                    self._unknown_parameter(param, name, allowed, path)
                elif error["type"] == "missing":
                    self.add(
                        (*path, "with") if "with" in self._keys_under(path) else path,
                        f"action {name} needs the parameter `{param}`",
                        f"add `{param}:` under `with:`; `tocsin actions {name}` describes it",
                    )
                elif not loc:
                    message = str(error["msg"]).removeprefix("Value error, ")
                    self.add(
                        (*path, "with"), f"parameters of {name} do not fit together: {message}"
                    )
                else:
                    message = str(error["msg"]).removeprefix("Value error, ")
                    self.add(
                        (*path, "with", *loc),
                        f"parameter `{'.'.join(map(str, loc))}` of {name}: {message}",
                    )

    def _keys_under(self, path: PathKey) -> set[str]:
        return {
            str(k[len(path)])
            for k in self.map.keys
            if k[: len(path)] == path and len(k) > len(path)
        }

    def _unknown_parameter(
        self, param: str, action: str, allowed: list[str], path: PathKey
    ) -> None:
        hint = did_you_mean(param, allowed) or (
            f"{action} takes: {', '.join(allowed)}" if allowed else f"{action} takes no parameters"
        )
        self.add(
            (*path, "with", param), f"`{param}` is not a parameter of {action}", hint, key=True
        )

    def _check_strings(self, value: Any, path: PathKey, visible: set[str], info: _StepInfo) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                self._check_strings(item, (*path, key), visible, info)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self._check_strings(item, (*path, index), visible, info)
        elif isinstance(value, str):
            self._check_template(value, path, visible, info)

    def _check_template(
        self,
        text: str,
        path: PathKey,
        visible: set[str],
        info: _StepInfo,
        *,
        expression: bool = False,
        extra_roots: tuple[str, ...] = (),
    ) -> None:
        if not expression and not contains_template(text):
            return
        parsed = parse_template(text, expression=expression)
        for issue in parsed.issues:
            self.problems.append(
                Problem(self._template_location(path, issue.line), issue.message, issue.hint)
            )
        for reference in parsed.references:
            message, hint = self._check_reference(reference, visible, info, extra_roots)
            if message:
                self.problems.append(
                    Problem(self._template_location(path, reference.line), message, hint)
                )

    def _template_location(self, path: PathKey, template_line: int) -> Location:
        base = self.map.locate(path)
        if template_line <= 1 and not self.map.is_block_scalar(path):
            return base
        offset = template_line if self.map.is_block_scalar(path) else template_line - 1
        return Location(base.file, base.line + offset, 1)

    def _check_reference(
        self, ref: Reference, visible: set[str], info: _StepInfo, extra_roots: tuple[str, ...]
    ) -> tuple[str, str]:
        roots = (*TEMPLATE_ROOTS, *extra_roots)
        if ref.root not in roots:
            hint = f"templates read {', '.join(roots)}"
            if ref.root in self.runbook.inputs:
                hint = f"did you mean inputs.{ref.root}?"
            return f"unknown name `{ref.root}` in template", hint
        if not ref.path:
            return "", ""
        first = str(ref.path[0])
        if ref.root == "inputs":
            if first not in self.runbook.inputs:
                hint = did_you_mean(first, self.runbook.inputs) or (
                    f"declared inputs: {', '.join(self.runbook.inputs) or 'none'}"
                )
                return f"`inputs.{first}` is not a declared input", hint
        elif ref.root == "incident":
            if first not in INCIDENT_FIELDS:
                return (
                    f"`incident.{first}` does not exist",
                    did_you_mean(first, INCIDENT_FIELDS)
                    or f"incident has: {', '.join(INCIDENT_FIELDS)}",
                )
        elif ref.root == "runbook":
            if first not in RUNBOOK_FIELDS:
                return (
                    f"`runbook.{first}` does not exist",
                    did_you_mean(first, RUNBOOK_FIELDS)
                    or f"runbook has: {', '.join(RUNBOOK_FIELDS)}",
                )
        elif ref.root == "steps":
            return self._check_step_reference(ref, visible, info)
        elif ref.root == "result":
            return self._check_output_name(info.step, ref.path[0], "result")
        return "", ""

    def _check_step_reference(
        self, ref: Reference, visible: set[str], info: _StepInfo
    ) -> tuple[str, str]:
        target_id = str(ref.path[0])
        target = self.steps.get(target_id)
        if target is None:
            return (
                f"`steps.{target_id}` is not a step of this runbook",
                did_you_mean(target_id, self.steps) or "step references use the step's id",
            )
        if target_id not in visible:
            if target_id == info.step.id:
                return (
                    f"step {target_id!r} reads its own {'.'.join(map(str, ref.path[1:2])) or 'values'}",
                    "a step's own outputs are readable only in its undo: and outputs:",
                )
            if target.parallel_group is not None and target.parallel_group[:2] == info.path[:2]:
                return (
                    f"`steps.{target_id}` runs in parallel with {info.step.id!r}, "
                    "so its outputs are not ready",
                    "read it in a step after the parallel block",
                )
            if target.section == "handlers":
                return (f"`steps.{target_id}` is a failure handler; main steps cannot read it", "")
            return (
                f"`steps.{target_id}` runs after {info.step.id!r}; a step can only read "
                "steps that ran before it",
                "move the step, or read another step's outputs",
            )
        if len(ref.path) < 2:
            return "", ""
        attribute = str(ref.path[1])
        if attribute not in STEP_FIELDS:
            return (
                f"`steps.{target_id}.{attribute}` does not exist",
                f"a step reference reads `.outputs.<name>` or `.status`; "
                f"{did_you_mean(attribute, STEP_FIELDS)}".strip(),
            )
        if attribute == "outputs" and len(ref.path) >= 3:
            return self._check_output_name(target.step, ref.path[2], f"steps.{target_id}.outputs")
        return "", ""

    def _check_output_name(self, step: Step, name: str | int, prefix: str) -> tuple[str, str]:
        known = self._outputs_of(step, include_declared=prefix != "result")
        if known is None or str(name) in known:
            return "", ""
        what = (
            f"action {step.action}" if step.action and prefix == "result" else f"step {step.id!r}"
        )
        listing = ", ".join(sorted(known)) or "nothing"
        hint = did_you_mean(str(name), known) or f"{what} outputs: {listing}"
        return f"`{prefix}.{name}` does not exist: {what} has no output {str(name)!r}", hint

    def _outputs_of(self, step: Step, *, include_declared: bool = True) -> frozenset[str] | None:
        if step.action is None:
            return KIND_OUTPUTS[step.kind]
        if step.action not in self.registry:
            return None  # reported as an unknown action already
        produced = self.registry.get(step.action).output_names
        if produced is None:
            return None
        return produced | frozenset(step.outputs) if include_declared else produced

    def _check_approval(
        self, gate: ApprovalGate, path: PathKey, visible: set[str], info: _StepInfo
    ) -> None:
        self._check_template(gate.prompt, (*path, "prompt"), visible, info)
        groups = self.runbook.approver_groups
        for key, name in (("approvers", gate.approvers), ("escalate_to", gate.escalate_to)):
            if name is not None and name not in groups:
                hint = did_you_mean(name, groups) or (
                    f"declared approver groups: {', '.join(groups)}"
                    if groups
                    else "declare the group under `approver_groups:`"
                )
                self.add((*path, key), f"approver group {name!r} is not declared", hint)
        for key, name in (("approvers", gate.approvers), ("escalate_to", gate.escalate_to)):
            group = groups.get(name) if name else None
            if (
                group is not None
                and group.usergroup is None
                and gate.quorum > len(set(group.users))
            ):
                self.add(
                    (*path, "quorum") if key == "approvers" else (*path, key),
                    f"quorum {gate.quorum} can never be met: approver group {name!r} "
                    f"has {len(set(group.users))} member(s)",
                    "lower the quorum or add people (or a Slack user group) to the group",
                )
        for index, guarded in enumerate(gate.guards or []):
            target = self.steps.get(guarded)
            if target is None:
                self.add(
                    (*path, "guards", index),
                    f"`guards` names an unknown step {guarded!r}",
                    did_you_mean(guarded, self.steps),
                )
            elif target.order <= info.order or target.section != info.section:
                self.add(
                    (*path, "guards", index),
                    f"step {guarded!r} does not come after the gate {info.step.id!r}",
                    "a gate can only guard steps that run after it",
                )

    def _check_handler_target(self, target: str, path: PathKey) -> None:
        info = self.steps.get(target)
        if info is None:
            handlers = [i.step.id for i in self.steps.values() if i.section == "handlers"]
            self.add(
                path,
                f"on_failure runs {target!r}, which is not a handler",
                did_you_mean(target, handlers) or "declare it under `handlers:`",
            )
        elif info.section != "handlers" or info.parallel_group is not None:
            self.add(
                path,
                f"on_failure runs {target!r}, which is a main step, not a handler",
                "on_failure can only run steps listed under `handlers:`",
            )

    def _check_handlers(self) -> None:
        edges: dict[str, list[str]] = {}
        referenced: set[str] = set()
        for info in self.steps.values():
            if isinstance(info.step.on_failure, RunHandlers):
                referenced.update(info.step.on_failure.run)
                if info.section == "handlers":
                    edges[info.step.id] = list(info.step.on_failure.run)
        for info in self.steps.values():
            if (
                info.section == "handlers"
                and info.parallel_group is None
                and info.step.id not in referenced
            ):
                self.add(
                    (*info.path, "id"),
                    f"handler {info.step.id!r} is never run: no on_failure runs it",
                    f"add on_failure: {{run: [{info.step.id}]}} to a step, or delete the handler",
                )
        for cycle in _cycles(edges):
            first = self.steps[cycle[0]]
            self.add(
                (*first.path, "on_failure"),
                f"on_failure handlers run each other in a cycle: {' -> '.join([*cycle, cycle[0]])}",
                "a handler's on_failure must not lead back to itself",
            )


def _inside(path: PathKey, container: PathKey) -> bool:
    return path[: len(container)] == container


def _cycles(edges: dict[str, list[str]]) -> list[list[str]]:
    """Each elementary cycle once, found by depth-first search from the smallest node."""
    found: list[list[str]] = []
    seen_cycles: set[frozenset[str]] = set()

    def visit(node: str, stack: list[str]) -> None:
        for following in edges.get(node, []):
            if following in stack:
                cycle = stack[stack.index(following) :]
                if frozenset(cycle) not in seen_cycles:
                    seen_cycles.add(frozenset(cycle))
                    found.append(cycle)
            elif following in edges:
                visit(following, [*stack, following])

    for start in sorted(edges):
        visit(start, [start])
    return found
