"""What a runbook template may build: every way of making a large value is checked first.

A template cannot allocate more than a few times ``MAX_BUILT_CHARS`` at once:

* each operation that can grow a value beyond a constant multiple of its operands (a width,
  a repeat count, a replacement, a join, a product, a power, a ``%`` or ``format`` field) is
  estimated *before* it runs and refused when the estimate is over the limit;
* every other filter and method result is checked after it runs, so chaining bounded ones
  (``|forceescape|forceescape...``) cannot compound;
* only the string methods that runbooks use are callable; the others (``encode``,
  ``translate``, ``maketrans``, ``int.to_bytes``...) are refused;
* loops share one iteration budget per rendered string, so nested loops cannot spin for hours.

A refusal is a ``SecurityError`` naming the limit; ``templating.render_string`` turns it into
a ``TemplateError``. Values a template only passes on (``{{ steps.x.outputs.body }}``) are
data and are not capped here.
"""

from __future__ import annotations

import contextvars
import functools
import math
import re
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from string import Formatter
from typing import Any

from jinja2.exceptions import SecurityError
from jinja2.filters import make_attrgetter
from jinja2.runtime import markup_join, str_join
from jinja2.sandbox import SandboxedEscapeFormatter, SandboxedFormatter

MAX_BUILT_CHARS = 100_000
MAX_INT_BITS = 4096
MAX_LOOP_ITERATIONS = 100_000
MAX_JSON_INDENT = 16

_SEQUENCES = (str, bytes, list, tuple)

# String methods a runbook template may call; none of them grows a value past a small factor.
_PLAIN_STR_METHODS = frozenset(
    """capitalize casefold count endswith find index isalnum isalpha isascii isdecimal
    isdigit isidentifier islower isnumeric isprintable isspace istitle isupper lower lstrip
    partition removeprefix removesuffix rfind rindex rpartition rsplit rstrip split
    splitlines startswith strip swapcase title upper escape unescape striptags""".split()
)
_PLAIN_NUMBER_METHODS = frozenset(
    "bit_length bit_count conjugate as_integer_ratio is_integer hex".split()
)
_PLAIN_CONTAINER_METHODS = frozenset("copy count index keys values items get".split())


def refuse(what: str, size: int, unit: str = "characters") -> SecurityError:
    """The error for an operation that would build ``size`` units, over the limit."""
    if unit == "bits":
        return SecurityError(
            f"{what} would build an integer of {size:,} bits; "
            f"a template may build integers of at most {MAX_INT_BITS:,} bits"
        )
    # `size` may be an estimate that stopped counting at the limit: the limit is what is certain
    return SecurityError(
        f"{what} would build more than the {MAX_BUILT_CHARS:,} {unit} a template may build"
    )


def check_size(what: str, size: int, unit: str = "characters") -> None:
    """Refuse an operation whose result is estimated at ``size`` units."""
    if size > MAX_BUILT_CHARS:
        raise refuse(what, size, unit)


def check_built(what: str, value: Any) -> Any:
    """Refuse a value (already built by a bounded operation) that is over a limit."""
    if isinstance(value, str | bytes):
        check_size(what, len(value))
    elif isinstance(value, list | tuple):
        check_size(what, len(value), "items")
    elif isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > MAX_INT_BITS:
            raise refuse(what, value.bit_length(), "bits")
    return value


def _width(value: Any) -> int:
    return value if isinstance(value, int) else 0


def text_size(value: Any, limit: int = MAX_BUILT_CHARS) -> int:
    """About how long ``str(value)`` is, without building it (stops counting past ``limit``).

    A list of one large string repeated a thousand times is a few kilobytes of references
    but megabytes of text: this is what turning it into text would cost.
    """
    size = 0
    pending = [value]
    while pending and size <= limit:
        item = pending.pop()
        if isinstance(item, str | bytes):
            size += len(item) + 2
        elif isinstance(item, bool) or item is None:
            size += 5
        elif isinstance(item, int):
            size += item.bit_length() // 3 + 2
        elif isinstance(item, float):
            size += 24
        elif isinstance(item, Mapping):
            size += 2 + 4 * len(item)
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            size += 2 + 2 * len(item)
            pending.extend(item)
        else:
            size += 64  # a date, an object of an action's result: short when shown
    return size


def _as_text_size(value: Any) -> int:
    return len(value) if isinstance(value, str | bytes) else text_size(value)


# --- operators ------------------------------------------------------------------------------


def multiply(left: Any, right: Any) -> Any:
    """``*``: repeating a sequence and multiplying integers are capped."""
    for sequence, count in ((left, right), (right, left)):
        if isinstance(sequence, _SEQUENCES) and isinstance(count, int):
            # a list is measured as the text its items stand for: `[body] * 10000` is
            # ten thousand references, but a copy of each once a filter maps over them
            size = len(sequence) if isinstance(sequence, str | bytes) else text_size(sequence)
            check_size("repeating a value (`*`)", size * max(count, 0))
    if _is_int(left) and _is_int(right):
        bits = left.bit_length() + right.bit_length()
        if bits > MAX_INT_BITS:
            raise refuse("this product (`*`)", bits, "bits")
    return left * right


def power(left: Any, right: Any) -> Any:
    """``**``: the result's size is estimated from the operands' magnitudes."""
    if isinstance(left, int | float) and isinstance(right, int | float):
        magnitude = math.log2(abs(left)) if abs(left) > 1 else 0.0
        if right > 0 and magnitude * right > MAX_INT_BITS:
            raise refuse("this power (`**`)", int(magnitude * right) + 1, "bits")
    return left**right


def add(left: Any, right: Any) -> Any:
    """``+``: concatenating sequences is capped."""
    if isinstance(left, str | bytes) and isinstance(right, str | bytes):
        check_size("concatenating values (`+`)", len(left) + len(right))
    elif isinstance(left, list | tuple) and isinstance(right, list | tuple):
        check_size("concatenating values (`+`)", text_size(left) + text_size(right))
    return left + right


def modulo(left: Any, right: Any) -> Any:
    """``%``: printf-style formatting is estimated field by field."""
    if isinstance(left, bytes):
        raise SecurityError("`%` formatting of bytes is not available in runbook templates")
    if isinstance(left, str):
        check_size("this `%` format", percent_format_size(left, right))
        return check_built("this `%` format", left % right)
    return left % right


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_PERCENT_FIELD = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?[#0\- +]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d*))?"
    r"[hlL]?(?P<kind>.)",
    re.DOTALL,
)


def percent_format_size(template: str, values: Any) -> int:
    """An upper bound of the length of ``template % values``, without building it."""
    positional = list(values) if isinstance(values, tuple) else [values]
    mapping = values if isinstance(values, Mapping) else None
    position = 0

    def take() -> Any:
        nonlocal position
        if position >= len(positional):
            raise TypeError("not enough arguments for format string")
        position += 1
        return positional[position - 1]

    def number(text: str | None) -> int | None:
        if text is None or text == "":
            return 0 if text == "" else None
        if text == "*":
            given = take()
            return abs(given) if isinstance(given, int) else 0
        return int(text[:12]) if len(text) <= 12 else MAX_BUILT_CHARS + 1

    size = len(template)
    for field in _PERCENT_FIELD.finditer(template):
        width = number(field.group("width")) or 0
        precision = number(field.group("precision"))
        kind = field.group("kind")
        if kind == "%":
            continue
        if field.group("key") is not None:
            if mapping is None:
                raise TypeError("format requires a mapping")
            value = mapping[field.group("key")]
        else:
            value = take()
        size += max(width, _converted_size(kind, value, precision))
        if size > MAX_BUILT_CHARS:
            break
    return size


def _converted_size(kind: str, value: Any, precision: int | None) -> int:
    if kind in "sra":
        length = text_size(value) * (4 if kind in "ra" else 1)  # repr escapes grow the text
        return length if precision is None else min(length, precision)
    if kind in "eEfFgG":
        digits = text_size(value) if isinstance(value, int) else 310
        return digits + (6 if precision is None else precision) + 8
    if kind in "diuoxX":
        # octal and hex are never longer than twice the decimal; a float is at most 309 digits
        digits = text_size(value) * 2 + 4 if isinstance(value, int) else 320
        return max(digits, precision or 0) + 2
    return 8


# --- str.format ------------------------------------------------------------------------------

_FORMAT_SPEC = re.compile(
    r"(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>\d*)[,_]?(?:\.(?P<precision>\d+))?[a-zA-Z%]?",
    re.DOTALL,
)


class _CappedFields(Formatter):
    """A ``Formatter`` whose fields are estimated before each is formatted."""

    built = 0

    def format_field(self, value: Any, format_spec: str) -> Any:
        match = _FORMAT_SPEC.fullmatch(format_spec)
        estimate = _as_text_size(value)
        if match:
            width = int(match.group("width")[:12] or 0)
            precision = int((match.group("precision") or "")[:12] or 0)
            estimate = max(width, estimate) + precision
        else:
            estimate += len(format_spec) * 4  # a date's strftime codes and the like
        self.built += estimate
        check_size("this `format` call", self.built)
        return super().format_field(value, format_spec)


class CappedFormatter(_CappedFields, SandboxedFormatter):
    """The sandbox's formatter for ``str.format``, with field widths capped."""


class CappedEscapeFormatter(_CappedFields, SandboxedEscapeFormatter):
    """The same for ``Markup.format``."""


# --- method calls ----------------------------------------------------------------------------


def check_call(function: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Refuse a method call on a string, number or container that could build too much."""
    owner = getattr(function, "__self__", None)
    name = getattr(function, "__name__", "")
    if not isinstance(function, types.BuiltinMethodType | types.MethodType):
        return
    if isinstance(owner, str | bytes):
        _check_str_method(owner, name, list(args), dict(kwargs))
    elif isinstance(owner, int | float):
        if name not in _PLAIN_NUMBER_METHODS:
            raise _not_available(owner, name)
    elif isinstance(owner, list | tuple | dict):
        if name not in _PLAIN_CONTAINER_METHODS:
            raise _not_available(owner, name)


def _not_available(owner: Any, name: str) -> SecurityError:
    return SecurityError(
        f"`.{name}()` of {type(owner).__name__} is not available in runbook templates"
    )


def _check_str_method(text: Any, name: str, args: list[Any], kwargs: dict[str, Any]) -> None:
    what = f"`.{name}()`"
    if name in _PLAIN_STR_METHODS:
        return
    if name in ("center", "ljust", "rjust", "zfill"):
        width = args[0] if args else kwargs.get("width", 0)
        check_size(what, max(len(text), _width(width)))
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        tabs = text.count("\t" if isinstance(text, str) else b"\t")
        check_size(what, len(text) + tabs * max(_width(size), 0))
    elif name == "replace":
        padded = [*args, None, None, None][:3]
        old = kwargs.get("old", padded[0])
        new = kwargs.get("new", padded[1])
        count = kwargs.get("count", padded[2])
        check_size(what, replace_size(text, old, new, count))
    elif name == "join":
        items = args[0] if args else ()
        if isinstance(items, list | tuple):
            check_size(what, join_size(items, text))
        else:
            raise SecurityError(f"{what} joins a list in a runbook template; add `| list`")
    else:
        raise _not_available(text, name)


def replace_size(text: Any, old: Any, new: Any, count: Any) -> int:
    """The length of ``text.replace(old, new, count)``, computed without building it."""
    if not isinstance(text, str | bytes) or not isinstance(old, type(text)):
        return 0
    if not isinstance(new, type(text)):
        return 0
    haystack: Any = text  # str or bytes, with `old` of the same type
    found: int = len(haystack) + 1 if not old else haystack.count(old)
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * max(len(new) - len(old), 0)


def join_size(items: Sequence[Any], separator: Any) -> int:
    """An upper bound of the length of ``separator.join(items)``."""
    size = len(separator) * max(len(items) - 1, 0) if isinstance(separator, str | bytes) else 0
    for item in items:
        size += _as_text_size(item)
        if size > MAX_BUILT_CHARS:
            break
    return size


def collect_text(what: str, items: Iterable[Any], separator: Any = "") -> list[Any]:
    """The items of a join, read one by one and refused as soon as their text is too long.

    Reading a lazy ``map`` to the end first would build every item before counting them.
    """
    step = len(separator) if isinstance(separator, str | bytes) else 0
    held: list[Any] = []
    size = 0
    for item in items:
        size += _as_text_size(item) + (step if held else 0)
        check_size(what, size)
        held.append(item)
    return held


# --- `~` -------------------------------------------------------------------------------------


def join_pieces(pieces: Iterable[Any], markup: bool) -> str:
    """``a ~ b ~ c``: concatenation, capped like every other way of building text."""
    held = collect_text("concatenating values (`~`)", pieces)
    return markup_join(held) if markup else str_join(held)


def check_output(value: Any) -> Any:
    """Jinja's ``finalize``: a value written into a template's text is measured first."""
    if not isinstance(value, str):
        check_size("writing this value into text", text_size(value))
    return value


# --- loops -----------------------------------------------------------------------------------


class LoopBudget:
    """Iterations left to the loops of one rendering."""

    def __init__(self, iterations: int = MAX_LOOP_ITERATIONS) -> None:
        self.left = iterations


CURRENT_LOOP_BUDGET: contextvars.ContextVar[LoopBudget | None] = contextvars.ContextVar(
    "tocsin_loop_budget", default=None
)


def counted_loop(iterable: Any) -> Iterator[Any]:
    """Iterate ``iterable`` against the current rendering's budget (or a fresh one)."""
    budget = CURRENT_LOOP_BUDGET.get() or LoopBudget()
    for item in iterable:
        budget.left -= 1
        if budget.left < 0:
            raise SecurityError(
                f"the loops of this template ran more than {MAX_LOOP_ITERATIONS:,} times; "
                "a template may loop at most that often"
            )
        yield item


# --- filters ---------------------------------------------------------------------------------

Estimate = Callable[..., int]


def _center(value: Any, width: Any = 80) -> int:
    return max(_as_text_size(value), _width(width))


def _indent(value: Any, width: Any = 4, *_: Any, **__: Any) -> int:
    check_size("the `indent` filter", _as_text_size(value))
    text = str(value)
    per_line = len(width) if isinstance(width, str) else _width(width)
    return len(text) + (text.count("\n") + 1) * per_line


def _wordwrap(
    environment: Any,
    value: Any,
    width: Any = 79,
    break_long_words: Any = True,
    wrapstring: Any = None,
    *_: Any,
    **__: Any,
) -> int:
    del environment, break_long_words
    check_size("the `wordwrap` filter", _as_text_size(value))
    text = str(value)
    separator = wrapstring if isinstance(wrapstring, str) else "\n"
    breaks = len(text) // max(_width(width), 1) + len(text.split()) + text.count("\n") + 1
    return len(text) + breaks * len(separator)


def _format(value: Any, *args: Any, **kwargs: Any) -> int:
    return percent_format_size(str(value), kwargs or args)


def _replace(eval_ctx: Any, text: Any, old: Any = "", new: Any = "", count: Any = None) -> int:
    check_size("the `replace` filter", _as_text_size(text))
    return replace_size(str(text), str(old), str(new), count)


def _batch(value: Any, linecount: Any, fill_with: Any = None) -> int:
    return _width(linecount) if fill_with is not None else 0


def _slice(eval_ctx: Any, value: Any, slices: Any, fill_with: Any = None) -> int:
    return _width(slices)


def _tojson(eval_ctx: Any, value: Any, indent: Any = None) -> int:
    size = len(indent) if isinstance(indent, str) else _width(indent)
    if size > MAX_JSON_INDENT:
        raise SecurityError(
            f"`tojson` indents by at most {MAX_JSON_INDENT} characters in a runbook template"
        )
    return 0


_ESTIMATES: dict[str, tuple[Estimate, str]] = {
    "center": (_center, "characters"),
    "indent": (_indent, "characters"),
    "wordwrap": (_wordwrap, "characters"),
    "format": (_format, "characters"),
    "replace": (_replace, "characters"),
    "batch": (_batch, "items"),
    "slice": (_slice, "items"),
    "tojson": (_tojson, "characters"),
}


def _join_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> Any:
        if attribute is not None:
            value = map(make_attrgetter(eval_ctx.environment, attribute), value)
        items = collect_text("the `join` filter", value, d)
        return check_built("the `join` filter", function(eval_ctx, items, d))

    return join


def _sum_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def total(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
        items = list(iterable)
        if attribute is not None:
            items = list(map(make_attrgetter(environment, attribute), items))
        size = len(start) if isinstance(start, _SEQUENCES) else 0
        for item in items:
            size += len(item) if isinstance(item, _SEQUENCES) else 0
        check_size("the `sum` filter", size, "items")
        return check_built("the `sum` filter", function(environment, items, start=start))

    return total


# Filters that turn their value into text: a list or mapping given to them is measured first.
_TEXT_FILTERS = frozenset(
    """string pprint tojson urlencode xmlattr center indent wordwrap truncate format replace
    title upper lower capitalize trim striptags e escape forceescape urlize wordcount safe
    filesizeformat""".split()
)


def _checked_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    estimate = _ESTIMATES.get(name)
    offset = 1 if hasattr(function, "jinja_pass_arg") else 0  # the context Jinja passes first

    @functools.wraps(function)
    def checked(*args: Any, **kwargs: Any) -> Any:
        what = f"the `{name}` filter"
        if name in _TEXT_FILTERS and len(args) > offset:
            check_size(what, _as_text_size(args[offset]))
        if estimate is not None:
            count, unit = estimate
            check_size(what, count(*args, **kwargs), unit)
        return check_built(what, function(*args, **kwargs))

    return checked


def capped_filters(filters: Mapping[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """Jinja's filters, each estimated before or checked after it runs."""
    capped: dict[str, Callable[..., Any]] = {}
    for name, function in filters.items():
        if name == "join":
            capped[name] = _join_filter(function)
        elif name == "sum":
            capped[name] = _sum_filter(function)
        else:
            capped[name] = _checked_filter(name, function)
    capped["tocsin_counted_loop"] = counted_loop
    return capped
