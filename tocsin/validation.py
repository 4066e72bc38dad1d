"""Load a runbook file and check everything that can be checked before a run.

Two passes. The structure pass validates the document against the pydantic
model and maps each error back to ``file:line:column``. The semantic pass,
on a structurally valid runbook, checks what needs the whole document or the
action registry: duplicate step ids, unknown actions, ``with:`` parameters,
template references, approver groups, handlers and their cycles. Every
problem found is reported at once.

A valid runbook may still carry warnings, which do not stop it from loading: a step
calling an action that needs approval (``@action(needs_approval=True)``, a device wipe)
without an approval gate covering it that always runs and stops the run when nobody
answers.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from tocsin.actions import ActionRegistry
from tocsin.errors import Location, Problem, RunbookError, UnknownActionError
from tocsin.guards import guarding_step
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
from tocsin.templating import Reference, contains_template, parse_template
from tocsin.vocabulary import (
    INCIDENT_FIELDS,
    KIND_OUTPUTS,
    RUNBOOK_FIELDS,
    STEP_FIELDS,
    TEMPLATE_ROOTS,
)
from tocsin.yaml_source import (
    PathKey,
    SourceMap,
    load_yaml_bytes,
    load_yaml_file,
    read_runbook_bytes,
)

RUNBOOK_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class LoadedRunbook:
    """A validated runbook, where it came from, and the exact bytes that were validated."""

    runbook: Runbook
    path: Path
    source_map: SourceMap
    digest: str
    """sha256 of ``source``: what the run journal and every gate hash are bound to."""
    source: bytes = field(repr=False)
    """The bytes validated: a run executes these, never the file as it is later."""
    warnings: tuple[Problem, ...] = ()
    """What validation advises against without refusing the runbook (located like problems)."""

    @property
    def id(self) -> str:
        return self.runbook.runbook

    @property
    def text(self) -> str:
        """``source`` as text; encoded as UTF-8 it gives ``source`` back, byte for byte."""
        return self.source.decode("utf-8")  # validated as UTF-8 (a BOM stays in the text)


def display_path(path: Path) -> str:
    """``path`` relative to the current folder when it is inside it."""
    try:
        return os.path.relpath(path) if not os.path.relpath(path).startswith("..") else str(path)
    except ValueError:
        return str(path)


def load_runbook(path: Path, registry: ActionRegistry) -> LoadedRunbook:
    """Load and fully validate one runbook file; raise ``RunbookError`` listing every problem."""
    name = display_path(path)
    data = read_runbook_bytes(path, name)  # never more than MAX_BYTES read into memory
    return load_runbook_bytes(data, name, registry, path=path)


def load_runbook_bytes(
    data: bytes, name: str, registry: ActionRegistry, *, path: Path | None = None
) -> LoadedRunbook:
    """Validate a runbook given as bytes; ``name`` is what error locations show."""
    document, source_map = load_yaml_bytes(data, name)
    if not isinstance(document, dict):
        raise RunbookError(
            [
                Problem(
                    source_map.locate(()),
                    "a runbook is a mapping of keys (runbook:, title:, steps:, ...), "
                    f"not {_kind_of(document)}",
                    "see docs/runbook-format.md for a complete example",
                )
            ]
        )
    try:
        runbook = Runbook.model_validate(document)
    except ValidationError as exc:
        raise RunbookError(structure_problems(exc, source_map)) from None
    checker = SemanticChecker(runbook, source_map, registry)
    problems = checker.check()
    if problems:
        raise RunbookError(problems)
    return LoadedRunbook(
        runbook=runbook,
        path=path or Path(name),
        source_map=source_map,
        digest=hashlib.sha256(data).hexdigest(),
        source=bytes(data),  # a caller's bytearray changed later cannot change the run
        warnings=tuple(checker.warnings),
    )


# --- structure pass -------------------------------------------------------------------------

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


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
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
        hint = _did_you_mean(str(last), allowed)
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
            _did_you_mean(str(value), choices),
        )
    if kind == "string_pattern_mismatch":
        hint = _PATTERN_HINTS.get(str(last), "")
        if isinstance(last, int) and len(path) >= 2:
            hint = _PATTERN_HINTS.get(str(path[-2]), hint)
        return Problem(location, f"{where}: {value!r} is not a valid value here", hint)
    if kind in _TYPE_WORDS:
        return Problem(location, f"{where} must be {_TYPE_WORDS[kind]}, not {_kind_of(value)}")
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


def _kind_of(value: Any) -> str:
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


# --- semantic pass --------------------------------------------------------------------------


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
            self._check_needs_approval()
        return self.problems

    def _check_needs_approval(self) -> None:
        """Warn where a step calls an action that needs approval without a gate covering it."""
        for info in self.steps.values():
            calls = [(info.step.action, (*info.path, "action"), "")]
            if info.step.undo is not None:
                calls.append((info.step.undo.action, (*info.path, "undo", "action"), "undo"))
            for name, path, role in calls:
                if name is None or name not in self.registry:
                    continue
                if not self.registry.get(name).needs_approval:
                    continue
                what = f"step {info.step.id!r} calls {name}"
                if role == "undo":
                    self.warnings.append(
                        Problem(
                            self.map.locate(path),
                            f"{what} as its undo, which runs with no approval when a later "
                            "step fails; that action needs a person's approval",
                            f"call {name} in a step of its own behind an approval gate",
                        )
                    )
                    continue
                gate = guarding_step(self.runbook, info.step)
                if gate is None or gate.approval is None:
                    self.warnings.append(
                        Problem(
                            self.map.locate(path),
                            f"{what}, which cannot be undone and needs approval, but no "
                            "approval gate covers this step",
                            "put an approval step right before it (or list it in a gate's "
                            "`guards:`)",
                        )
                    )
                elif gate.when is not None and gate.when != info.step.when:
                    self.warnings.append(
                        Problem(
                            self.map.locate(path),
                            f"{what}, which cannot be undone and needs approval, but the gate "
                            f"{gate.id!r} covering it is skipped when `{gate.when}` is false, "
                            "and the step would then run unapproved",
                            f"give {info.step.id!r} the same `when:` as its gate, or drop the "
                            "gate's",
                        )
                    )
                elif gate.approval.on_timeout == "continue":
                    self.warnings.append(
                        Problem(
                            self.map.locate(path),
                            f"{what}, which cannot be undone and needs approval, but the gate "
                            f"{gate.id!r} covering it lets the run continue when nobody answers",
                            f"set `on_timeout: abort` (or escalate) on {gate.id!r}",
                        )
                    )

    def _check_operators(self) -> None:
        groups = self.runbook.approver_groups
        name = self.runbook.operators
        if name is not None and name not in groups:
            hint = _did_you_mean(name, groups) or "declare the group under `approver_groups:`"
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
                    _did_you_mean(clock.stopped_by, self.steps) or "name the step that meets it",
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
        hint = _did_you_mean(param, allowed) or (
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
                hint = _did_you_mean(first, self.runbook.inputs) or (
                    f"declared inputs: {', '.join(self.runbook.inputs) or 'none'}"
                )
                return f"`inputs.{first}` is not a declared input", hint
        elif ref.root == "incident":
            if first not in INCIDENT_FIELDS:
                return (
                    f"`incident.{first}` does not exist",
                    _did_you_mean(first, INCIDENT_FIELDS)
                    or f"incident has: {', '.join(INCIDENT_FIELDS)}",
                )
        elif ref.root == "runbook":
            if first not in RUNBOOK_FIELDS:
                return (
                    f"`runbook.{first}` does not exist",
                    _did_you_mean(first, RUNBOOK_FIELDS)
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
                _did_you_mean(target_id, self.steps) or "step references use the step's id",
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
                f"{_did_you_mean(attribute, STEP_FIELDS)}".strip(),
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
        hint = _did_you_mean(str(name), known) or f"{what} outputs: {listing}"
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
                hint = _did_you_mean(name, groups) or (
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
                    _did_you_mean(guarded, self.steps),
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
                _did_you_mean(target, handlers) or "declare it under `handlers:`",
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


# --- files and folders ----------------------------------------------------------------------


def find_runbook_files(paths: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """Runbook files under the given files and folders, and the paths that do not exist."""
    files: list[Path] = []
    missing: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                sorted(p for p in path.rglob("*") if p.suffix in RUNBOOK_SUFFIXES and p.is_file())
            )
        elif path.is_file():
            files.append(path)
        else:
            missing.append(path)
    return files, missing


@dataclass
class ValidationReport:
    """The outcome of validating several files."""

    runbooks: list[LoadedRunbook] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    """Advice on valid runbooks; they do not make the report fail."""
    files_checked: int = 0
    declarations: list[str] = field(default_factory=list)
    """Services of the declared HTTP integrations among the files (``tocsin.declared``)."""

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_files(files: Iterable[Path], registry: ActionRegistry) -> ValidationReport:
    """Validate each file; runbook ids must also be unique across the files."""
    report = ValidationReport()
    ids: dict[str, LoadedRunbook] = {}
    from tocsin.declared.load import is_declaration, load_declaration

    for file in files:
        report.files_checked += 1
        try:
            document, _ = load_yaml_file(file, display_path(file))
            if is_declaration(document):
                # A declared integration (integrations/*.yaml) is checked as one, not as a runbook.
                report.declarations.append(load_declaration(file).declaration.service)
                continue
            loaded = load_runbook(file, registry)
        except RunbookError as exc:
            report.problems.extend(exc.problems)
            continue
        if loaded.id in ids:
            report.problems.append(
                Problem(
                    loaded.source_map.locate(("runbook",)),
                    f"runbook id {loaded.id!r} is also used by {display_path(ids[loaded.id].path)}",
                    "runbook ids must be unique: `tocsin run ID` picks a runbook by its id",
                )
            )
            continue
        ids[loaded.id] = loaded
        report.runbooks.append(loaded)
        report.warnings.extend(loaded.warnings)
    return report
