"""Templates in runbook strings: ``{{ inputs.user }}``, ``{{ steps.revoke_sessions.outputs.count }}``.

Rendering uses Jinja2's immutable sandbox, tightened further:

* a mapping's keys are reached with dots, never its methods (``outputs.items`` is the
  output named ``items``, not ``dict.items``);
* no attribute starting with ``_`` is reachable, so nothing leads to Python internals;
* the environment has no loader and no globals: ``include``, ``import`` and ``extends``
  are refused when the runbook is validated, and no file or network is reachable;
* nothing a template builds can grow past a limit (``tocsin.template_limits``): widths,
  repeats, joins, ``%`` and ``format`` fields, products and powers are estimated before they
  run, every filter and method result is checked, loops share an iteration budget, and the
  rendered text is counted as it is produced;
* ``{% macro %}``, ``{% call %}``, ``{% filter %}``, ``{% set %}...{% endset %}`` and
  recursive loops are refused: they build text outside those checks, and runbooks need none.

A string that is exactly one ``{{ expression }}`` keeps the expression's type
(an integer stays an integer); anything else renders to text. Values are
rendered once: an input that itself contains ``{{ }}`` is data, never a template.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache, update_wrapper
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from tocsin import template_limits as limits
from tocsin.errors import TemplateError

MAX_OUTPUT_CHARS = limits.MAX_BUILT_CHARS
MAX_POWER_BITS = limits.MAX_INT_BITS
_NO_FILES = "templates cannot read files or other templates; put the text in the runbook"
_NO_BLOCKS = "write the text out, or use a filter on a value: {{ inputs.name | upper }}"
_FORBIDDEN_TAGS: dict[type[nodes.Node], tuple[str, str]] = {
    nodes.Include: ("include", _NO_FILES),
    nodes.Import: ("import", _NO_FILES),
    nodes.FromImport: ("from ... import", _NO_FILES),
    nodes.Extends: ("extends", _NO_FILES),
    nodes.Block: ("block", _NO_FILES),
    nodes.Macro: ("macro", _NO_BLOCKS),
    nodes.CallBlock: ("call", _NO_BLOCKS),
    nodes.FilterBlock: ("filter", _NO_BLOCKS),
    nodes.AssignBlock: ("set %}...{% endset", _NO_BLOCKS),
}
_BINOPS: dict[str, Callable[[Any, Any], Any]] = {
    "*": limits.multiply,
    "**": limits.power,
    "+": limits.add,
    "%": limits.modulo,
}


class _CappedCodeGenerator(CodeGenerator):
    """Jinja's code generator with ``~`` routed through the sandbox's capped join."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            markup = "context.eval_ctx.volatile"
        else:
            markup = "True" if frame.eval_ctx.autoescape else "False"
        self.write("environment.join_pieces((")
        for argument in node.nodes:
            self.visit(argument, frame)
            self.write(", ")
        self.write(f"), {markup})")

    # A literal list, tuple or mapping of references is measured as the text it stands for:
    # `[inputs.body, inputs.body, ...]` would otherwise let `| map('upper')` copy each one.
    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self.write("environment.built_literal(")
        super().visit_List(node, frame)
        self.write(")")

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self.write("environment.built_literal(")
        super().visit_Dict(node, frame)
        self.write(")")

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx != "load":  # `{% for a, b in ... %}` assigns to a tuple: nothing is built
            super().visit_Tuple(node, frame)
            return
        self.write("environment.built_literal(")
        super().visit_Tuple(node, frame)
        self.write(")")


class _RunbookSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(_BINOPS)
    code_generator_class = _CappedCodeGenerator

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
        return _BINOPS[operator_name](left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        limits.check_call(__obj, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        name = getattr(__obj, "__name__", "this call")
        return limits.check_built(f"`{name}()`", result)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``str.format`` and ``format_map`` through a formatter whose fields are capped."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        text: str = value.__self__
        formatter: limits.CappedFormatter | limits.CappedEscapeFormatter
        if isinstance(text, Markup):
            formatter = limits.CappedEscapeFormatter(self, escape=text.escape)
        else:
            formatter = limits.CappedFormatter(self)
        is_format_map = value.__name__ == "format_map"

        def capped_format(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                mapping: Mapping[str, Any] = args[0]
                args, kwargs = (), dict(mapping)
            result: str = type(text)(formatter.vformat(text, args, kwargs))
            limits.check_built("this `format` call", result)
            return result

        return update_wrapper(capped_format, value)

    def join_pieces(self, pieces: tuple[Any, ...], markup: bool) -> str:
        return limits.join_pieces(pieces, markup)

    def built_literal(self, value: Any) -> Any:
        limits.check_size("this literal", limits.text_size(value))
        return value

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):  # every loop draws on the rendering's budget
            loop.iter = nodes.Filter(
                loop.iter, "tocsin_counted_loop", [], [], None, None, lineno=loop.lineno
            )
        tree.set_environment(self)
        return tree


ENVIRONMENT = _RunbookSandbox(
    undefined=StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
    finalize=limits.check_output,
)
ENVIRONMENT.globals.clear()
ENVIRONMENT.filters = limits.capped_filters(ENVIRONMENT.filters)


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
    try:
        return _parse_template(source, expression=expression)
    except RecursionError:  # Jinja's parser recurses: `((((...))))` or `not not ...` thousands deep
        return ParsedTemplate(
            (),
            (
                TemplateIssue(
                    "this template nests too deeply to be read (brackets, operators or "
                    "`not`s hundreds of levels deep)",
                    "split it into simpler expressions, for example with {% set %}",
                    1,
                ),
            ),
        )


def _parse_template(source: str, *, expression: bool) -> ParsedTemplate:
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
        for macro in node.find_all(nodes.Macro):  # refused, and reported once as such
            self.local_names.add(macro.name)
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
        if isinstance(node, nodes.For) and node.recursive:
            self.issues.append(
                TemplateIssue(
                    "a recursive `{% for %}` loop is not allowed in a runbook template",
                    "loop over the values themselves; runbook data is at most a few levels deep",
                    node.lineno,
                )
            )
        for tag_type, (tag, hint) in _FORBIDDEN_TAGS.items():
            if isinstance(node, tag_type):
                self.issues.append(
                    TemplateIssue(
                        f"`{{% {tag} %}}` is not allowed in a runbook template", hint, node.lineno
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
    # validation refuses these already; a template that skipped it is refused here too
    for issue in parse_template(source).issues:
        raise SecurityError(issue.message)
    return ENVIRONMENT.from_string(source)


@lru_cache(maxsize=4096)
def _compiled_expression(source: str) -> tuple[Callable[..., Any], bool]:
    """The expression, and whether it builds a value (rather than only reading one)."""
    tree = ENVIRONMENT.parse("{{ " + source + " }}")
    builds = True
    if len(tree.body) == 1 and isinstance(tree.body[0], nodes.Output):
        outputs = tree.body[0].nodes
        builds = len(outputs) != 1 or not _is_plain_reference(outputs[0])
    return ENVIRONMENT.compile_expression(source, undefined_to_none=False), builds


def _is_plain_reference(node: nodes.Node | None) -> bool:
    """``steps.x.outputs.body`` or ``inputs['user']``: data passed on, not built."""
    while isinstance(node, nodes.Getattr | nodes.Getitem):
        if isinstance(node, nodes.Getitem) and not isinstance(node.arg, nodes.Const):
            return False
        node = node.node
    return isinstance(node, nodes.Name)


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


def _shown(text: str) -> str:
    """A template as quoted in an error: its first characters, never megabytes of it."""
    stripped = text.strip()
    return repr(stripped if len(stripped) <= 80 else stripped[:77] + "...")


@lru_cache(maxsize=16)
def _escaping_environment(escape: Callable[[str], str]) -> Any:
    """The sandbox, with every ``{{ }}`` value passed through ``escape`` once measured."""

    def finalize(value: Any) -> str:
        return escape(str(limits.check_output(value)))

    return ENVIRONMENT.overlay(finalize=finalize)


@lru_cache(maxsize=4096)
def _compiled_escaping_template(source: str, escape: Callable[[str], str]) -> Any:
    for issue in parse_template(source).issues:
        raise SecurityError(issue.message)
    return _escaping_environment(escape).from_string(source)


def _render_text(
    source: str, context: Mapping[str, Any], escape: Callable[[str], str] | None = None
) -> str:
    """Render a template, counting its output as it is produced."""
    pieces: list[str] = []
    size = 0
    compiled = (
        _compiled_template(source)
        if escape is None
        else _compiled_escaping_template(source, escape)
    )
    for piece in compiled.generate(**context):
        size += len(piece)
        if size > MAX_OUTPUT_CHARS:
            raise TemplateError(
                f"template {_shown(source)} renders to more than {MAX_OUTPUT_CHARS:,} "
                "characters, the most a rendered string may hold",
                "shorten the text, or pass a long value on as `{{ steps.ID.outputs.NAME }}` alone",
            )
        pieces.append(piece)
    return "".join(pieces)


def render_string(
    text: str, context: Mapping[str, Any], *, escape: Callable[[str], str] | None = None
) -> Any:
    """Render one string; a lone ``{{ expr }}`` keeps its type.

    ``escape``: the text is markup (Slack mrkdwn...): each ``{{ }}`` value goes through it,
    while what the author wrote stays as written, and the result is always text.
    """
    if not is_template(text):
        return text
    budget = limits.CURRENT_LOOP_BUDGET.set(limits.LoopBudget())
    try:
        expression = _single_expression(text)
        if expression is None or escape is not None:
            return _render_text(text, context, escape)
        function, builds = _compiled_expression(expression)
        value = function(**context)
        if isinstance(value, Undefined):
            str(value)  # StrictUndefined raises the UndefinedError that names what is missing
        if builds:
            limits.check_built("this expression", value)
        return value
    except UndefinedError as exc:
        raise TemplateError(
            f"template {_shown(text)} reads a value that does not exist: {exc.message}",
            "check the name against the runbook's inputs and the outputs of earlier steps",
        ) from None
    except SecurityError as exc:
        raise TemplateError(
            f"template {_shown(text)} was refused: {exc}",
            'see "Limits" in docs/runbook-format.md for what a template may build',
        ) from None
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template {_shown(text)} has a syntax error: {exc.message}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as exc:
        raise TemplateError(f"template {_shown(text)} failed: {exc}") from None
    except RecursionError:
        raise TemplateError(f"template {_shown(text)} failed: it nests too deeply") from None
    finally:
        limits.CURRENT_LOOP_BUDGET.reset(budget)


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every template string inside ``value`` (dicts and lists included).

    A failure names the field it happened in (``body.text``, ``to[0]``), after the message.
    """
    return _render_at(value, context, "")


def _render_at(value: Any, context: Mapping[str, Any], field: str) -> Any:
    if isinstance(value, dict):
        return {
            key: _render_at(item, context, f"{field}.{key}" if field else str(key))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_render_at(item, context, f"{field}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, str):
        try:
            return render_string(value, context)
        except TemplateError as exc:
            if not field:
                raise
            raise TemplateError(f"`{field}`: {exc.message}", exc.hint) from None
    return value


def evaluate_condition(expression: str, context: Mapping[str, Any]) -> bool:
    """Evaluate a ``when:`` expression to true or false."""
    return bool(render_string("{{ " + expression + " }}", context))
