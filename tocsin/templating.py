"""Templates in runbook strings: ``{{ inputs.user }}``, ``{{ steps.revoke_sessions.outputs.count }}``.

Rendering uses Jinja2's immutable sandbox, tightened further:

* a mapping's keys are reached with dots, never its methods (``outputs.items`` is the
  output named ``items``, not ``dict.items``);
* no attribute starting with ``_`` is reachable, so nothing leads to Python internals;
* the environment has no loader and no globals: ``include``, ``import`` and ``extends``
  are refused when the runbook is validated, and no file or network is reachable;
* ``*`` and ``**`` are capped so that ``{{ 'a' * 10**9 }}`` cannot exhaust memory.

A string that is exactly one ``{{ expression }}`` keeps the expression's type
(an integer stays an integer); anything else renders to text. Values are
rendered once: an input that itself contains ``{{ }}`` is data, never a template.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tocsin.errors import TemplateError

MAX_OUTPUT_CHARS = 100_000
MAX_POWER_BITS = 4096
TEMPLATE_ROOTS = ("inputs", "steps", "incident", "runbook")
_FORBIDDEN_TAGS: dict[type[nodes.Node], str] = {
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from ... import",
    nodes.Extends: "extends",
    nodes.Block: "block",
}


class _RunbookSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if attr.startswith("_"):
            return False
        return bool(super().is_safe_attribute(obj, attr, value))

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping):
            if attribute.startswith("_"):
                return self.unsafe_undefined(obj, attribute)
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(argument, str) and argument.startswith("_"):
            return self.unsafe_undefined(obj, argument)
        return super().getitem(obj, argument)

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "**":
            if isinstance(left, int | float) and isinstance(right, int | float):
                magnitude = math.log2(abs(left)) if abs(left) > 1 else 0.0
                if right > 0 and magnitude * right > MAX_POWER_BITS:
                    raise SecurityError("the power in this template is too large to compute")
            return operator.pow(left, right)
        # operator_name == "*": repeating a string or list is capped
        for sequence, count in ((left, right), (right, left)):
            if isinstance(sequence, str | list | tuple) and isinstance(count, int):
                if len(sequence) * count > MAX_OUTPUT_CHARS:
                    raise SecurityError("this template would build a value that is too large")
        return operator.mul(left, right)


ENVIRONMENT = _RunbookSandbox(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
)
ENVIRONMENT.globals.clear()


def is_template(text: object) -> bool:
    """True when ``text`` is a string holding template syntax."""
    return isinstance(text, str) and ("{{" in text or "{%" in text or "{#" in text)


def contains_template(value: Any) -> bool:
    """True when ``value`` or anything nested inside it is a template."""
    if isinstance(value, dict):
        return any(contains_template(item) for item in value.values())
    if isinstance(value, list):
        return any(contains_template(item) for item in value)
    return is_template(value)


@dataclass(frozen=True)
class Reference:
    """A name a template reads, with the constant path that follows it (``steps.x.outputs.n``)."""

    root: str
    path: tuple[str | int, ...]
    line: int

    def dotted(self) -> str:
        return ".".join([self.root, *(str(part) for part in self.path)])


@dataclass(frozen=True)
class TemplateIssue:
    """Something a template does that the validator refuses, with its line inside the template."""

    message: str
    hint: str
    line: int


@dataclass(frozen=True)
class ParsedTemplate:
    references: tuple[Reference, ...]
    issues: tuple[TemplateIssue, ...]


def parse_template(source: str, *, expression: bool = False) -> ParsedTemplate:
    """Parse a template (or a bare ``when:`` expression) and list what it reads and refuses."""
    if expression and ("{{" in source or "{%" in source):
        return ParsedTemplate(
            (),
            (
                TemplateIssue(
                    "a `when:` condition is one expression, without {{ }} or {% %}",
                    "write for example: inputs.disable_account and steps.check.status == 'succeeded'",
                    1,
                ),
            ),
        )
    text = "{{ " + source + " }}" if expression else source
    try:
        tree = ENVIRONMENT.parse(text)
    except TemplateSyntaxError as exc:
        message = exc.message or "syntax error"
        return ParsedTemplate(
            (),
            (
                TemplateIssue(
                    f"template syntax error: {message}",
                    "templates use Jinja syntax: {{ inputs.name }}, {% if ... %}...{% endif %}",
                    exc.lineno,
                ),
            ),
        )
    if expression and len(tree.body) != 1:
        return ParsedTemplate(
            (),
            (
                TemplateIssue(
                    "a `when:` condition is one expression, without {{ }} or {% %}",
                    "write for example: inputs.disable_account and steps.check.outputs.found",
                    1,
                ),
            ),
        )
    collector = _ReferenceCollector()
    collector.visit(tree)
    return ParsedTemplate(tuple(collector.references), tuple(collector.issues))


class _ReferenceCollector:
    def __init__(self) -> None:
        self.references: list[Reference] = []
        self.issues: list[TemplateIssue] = []
        self.local_names: set[str] = {"loop"}

    def visit(self, node: nodes.Node) -> None:
        for store in node.find_all(nodes.Name):
            if store.ctx in ("store", "param"):
                self.local_names.add(store.name)
        self._walk(node)

    def _walk(self, node: nodes.Node) -> None:
        if isinstance(node, nodes.Getattr | nodes.Getitem):
            base, path, dynamic = _flatten(node)
            self._check_private(node)
            if isinstance(base, nodes.Name):
                if base.ctx == "load" and base.name not in self.local_names:
                    self.references.append(Reference(base.name, tuple(path), node.lineno))
                for argument in dynamic:
                    self._walk(argument)
                return
        if (
            isinstance(node, nodes.Name)
            and node.ctx == "load"
            and node.name not in self.local_names
        ):
            self.references.append(Reference(node.name, (), node.lineno))
        for tag_type, tag in _FORBIDDEN_TAGS.items():
            if isinstance(node, tag_type):
                self.issues.append(
                    TemplateIssue(
                        f"`{{% {tag} %}}` is not allowed in a runbook template",
                        "templates cannot read files or other templates; put the text in the runbook",
                        node.lineno,
                    )
                )
                return
        for child in node.iter_child_nodes():
            self._walk(child)

    def _check_private(self, node: nodes.Node) -> None:
        current: nodes.Node = node
        while isinstance(current, nodes.Getattr | nodes.Getitem):
            name = None
            if isinstance(current, nodes.Getattr):
                name = current.attr
            elif isinstance(current.arg, nodes.Const) and isinstance(current.arg.value, str):
                name = current.arg.value
            if name is not None and name.startswith("_"):
                self.issues.append(
                    TemplateIssue(
                        f"`{name}` is not reachable: templates cannot reach Python internals",
                        "templates read runbook data only: inputs, steps, incident and runbook",
                        current.lineno,
                    )
                )
                return
            current = current.node


def _flatten(node: nodes.Node) -> tuple[nodes.Node, list[str | int], list[nodes.Node]]:
    """``a.b['c'][x].d`` -> (Name a, ['b', 'c'], [x]); the path stops at the first dynamic index."""
    parts: list[str | int] = []
    dynamic: list[nodes.Node] = []
    current = node
    while True:
        if isinstance(current, nodes.Getattr):
            parts.append(current.attr)
            current = current.node
        elif isinstance(current, nodes.Getitem):
            if isinstance(current.arg, nodes.Const) and isinstance(current.arg.value, str | int):
                parts.append(current.arg.value)
            else:
                dynamic.append(current.arg)
                parts.clear()
            current = current.node
        else:
            parts.reverse()
            return current, parts, dynamic


@lru_cache(maxsize=4096)
def _compiled_template(source: str) -> Any:
    return ENVIRONMENT.from_string(source)


@lru_cache(maxsize=4096)
def _compiled_expression(source: str) -> Callable[..., Any]:
    return ENVIRONMENT.compile_expression(source, undefined_to_none=False)


def _single_expression(text: str) -> str | None:
    stripped = text.strip()
    if (
        stripped.startswith("{{")
        and stripped.endswith("}}")
        and stripped.count("{{") == 1
        and stripped.count("}}") == 1
        and "{%" not in stripped
        and "{#" not in stripped
    ):
        return stripped[2:-2].strip()
    return None


def render_string(text: str, context: Mapping[str, Any]) -> Any:
    """Render one string; a lone ``{{ expr }}`` keeps its type."""
    if not is_template(text):
        return text
    try:
        expression = _single_expression(text)
        if expression is not None:
            value = _compiled_expression(expression)(**context)
            if isinstance(value, Undefined):
                str(value)  # StrictUndefined raises the UndefinedError that names what is missing
            return value
        rendered = _compiled_template(text).render(**context)
    except UndefinedError as exc:
        raise TemplateError(
            f"template {text.strip()!r} reads a value that does not exist: {exc.message}",
            "check the name against the runbook's inputs and the outputs of earlier steps",
        ) from None
    except SecurityError as exc:
        raise TemplateError(f"template {text.strip()!r} was refused: {exc}") from None
    except TemplateSyntaxError as exc:
        raise TemplateError(
            f"template {text.strip()!r} has a syntax error: {exc.message}"
        ) from None
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise TemplateError(f"template {text.strip()!r} failed: {exc}") from None
    if len(rendered) > MAX_OUTPUT_CHARS:
        raise TemplateError(
            f"template {text.strip()[:60]!r}... renders to {len(rendered)} characters, "
            f"more than the {MAX_OUTPUT_CHARS} allowed"
        )
    return rendered


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every template string inside ``value`` (dicts and lists included)."""
    if isinstance(value, dict):
        return {key: render_value(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render_value(item, context) for item in value]
    if isinstance(value, str):
        return render_string(value, context)
    return value


def evaluate_condition(expression: str, context: Mapping[str, Any]) -> bool:
    """Evaluate a ``when:`` expression to true or false."""
    return bool(render_string("{{ " + expression + " }}", context))
