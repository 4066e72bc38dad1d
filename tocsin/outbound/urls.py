"""Building URLs that stay where they were meant to go (guarantees 1 and 2 of ``tocsin.outbound``).

Each value put into a URL is percent-encoded for the part it fills (``path_segment``,
``render_url_template``); ``_parse`` reads an absolute http(s) URL with its dot segments
resolved, which ``ServiceEndpoint`` compares with its base URL.
"""

from __future__ import annotations

import contextvars
import re
import string
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from jinja2 import Environment, TemplateSyntaxError, Undefined, UndefinedError, pass_environment
from jinja2.exceptions import SecurityError

from tocsin import template_limits, templating
from tocsin.errors import InputError, TemplateError

_HOLE = "\x00"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_SCHEME_AND_HOST = ("http", "https")


class _Refused(ValueError):
    """A URL or a value that cannot be used; callers turn it into their own TocsinError."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


# -- values into URLs ---------------------------------------------------------------------------


def _text_of(value: Any, label: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise _Refused(
        f"{label} gives {type(value).__name__} {value!r}, but a URL takes text or a number",
        "template one value (an id, a key) into the URL, not a list, a mapping or nothing",
    )


def _is_dot_segment(segment: str) -> bool:
    """True for ``.`` and ``..`` however written: raw, percent-encoded or in look-alike dots."""
    decoded = unquote(segment)
    return unicodedata.normalize("NFKC", decoded) in (".", "..")


def _encoded(value: Any, label: str) -> str:
    return quote(_text_of(value, label), safe="")


def path_segment(value: Any, *, what: str = "the value") -> str:
    """``value`` percent-encoded as exactly one URL path segment; empty, ``.`` and ``..`` are refused."""
    try:
        return _whole_segment(value, what)
    except _Refused as exc:
        raise InputError(exc.message, exc.hint) from None


def _whole_segment(value: Any, label: str) -> str:
    return _assemble(["/", _Hole(value, label)])[1:]


@dataclass(frozen=True)
class _Hole:
    """A value to encode where it stands in a URL; ``label`` names it in errors."""

    value: Any
    label: str


def _assemble(pieces: Iterable[str | _Hole]) -> str:
    """Join literal URL text and values, each value encoded for the part of the URL it fills."""
    parts = list(pieces)
    if any(_HOLE in piece for piece in parts if isinstance(piece, str)):
        raise _Refused("the URL contains a NUL character")
    holes: list[_Hole] = []
    skeleton = ""
    for piece in parts:
        if isinstance(piece, str):
            skeleton += piece
        else:
            skeleton += f"{_HOLE}{len(holes)}{_HOLE}"
            holes.append(piece)
    if not holes:
        return skeleton
    # Values are not substituted yet, so the URL's structure is read from the literal
    # text alone: a value can never add a delimiter.
    scheme = _SCHEME.match(skeleton)
    if scheme is not None:
        authority_end = _first_of(skeleton, "/?#", scheme.end())
    elif skeleton.startswith("//"):
        authority_end = _first_of(skeleton, "/?#", 2)
    else:
        authority_end = 0
    if _HOLE in skeleton[:authority_end] or skeleton.startswith(_HOLE):
        raise _Refused(
            f"{holes[_first_hole(skeleton)].label} would choose the scheme or the host of the URL",
            "a template value can fill path segments and query values only: write the "
            "host (or `service:` and a path starting with /) in the runbook itself",
        )
    query_start = _first_of(skeleton, "?#", authority_end)
    path, tail = skeleton[authority_end:query_start], skeleton[query_start:]
    segments = []
    for segment in path.split("/"):
        filled = _fill(segment, holes)
        if _HOLE in segment and (not filled or _is_dot_segment(filled) or _climbs(segment, holes)):
            raise _Refused(
                f"{holes[_first_hole(segment)].label} makes the URL path segment "
                f"{unquote(filled)!r}, which would move the request to another path of the service",
                "give the real identifier; a value in a URL path cannot be empty, '.' or '..'",
            )
        segments.append(filled)
    return skeleton[:authority_end] + "/".join(segments) + _fill(tail, holes)


def _climbs(segment: str, holes: list[_Hole]) -> bool:
    """True when a value of ``segment`` holds a dot segment even once decoded and split at
    ``/`` or ``\\``: a lenient server that decodes ``%2F`` (or decodes twice) would climb."""
    for position, piece in enumerate(segment.split(_HOLE)):
        if position % 2 == 0:
            continue
        text = _text_of(holes[int(piece)].value, holes[int(piece)].label)
        for _ in range(3):
            text = unquote(text)
        if any(_is_dot_segment(part) for part in text.replace("\\", "/").split("/")):
            return True
    return False


def _first_of(text: str, characters: str, start: int) -> int:
    found = [index for index in (text.find(c, start) for c in characters) if index >= 0]
    return min(found) if found else len(text)


def _first_hole(text: str) -> int:
    start = text.index(_HOLE) + 1
    return int(text[start : text.index(_HOLE, start)])


def _fill(text: str, holes: list[_Hole]) -> str:
    pieces = text.split(_HOLE)
    # split gives literal, index, literal, index, ...: odd positions are hole numbers
    return "".join(
        piece if position % 2 == 0 else _encoded(holes[int(piece)].value, holes[int(piece)].label)
        for position, piece in enumerate(pieces)
    )


def _template_pieces(path_template: str, values: Mapping[str, Any]) -> list[str | _Hole]:
    pieces: list[str | _Hole] = []
    for literal, name, spec, conversion in string.Formatter().parse(path_template):
        pieces.append(literal)
        if name is None:
            continue
        if spec or conversion or name not in values:
            missing = "" if name in values else f"; values given: {', '.join(sorted(values))}"
            raise _Refused(
                f"the URL template {path_template!r} has no value for {{{name}}}{missing}"
            )
        pieces.append(_Hole(values[name], f"the value of {{{name}}}"))
    return pieces


# -- runbook templates --------------------------------------------------------------------------

_collected: contextvars.ContextVar[list[Any]] = contextvars.ContextVar("tocsin_url_values")


@pass_environment  # never called at compile time: Jinja folds constants only for plain finalizers
def _hold_value(environment: Environment, value: Any) -> str:
    """Jinja ``finalize``: keep each ``{{ }}`` value aside and leave a numbered hole."""
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined raises the UndefinedError that names what is missing
    if _BASE_FINALIZE is not None:
        value = _BASE_FINALIZE(value)  # the sandbox's own checks (a value's size) come first
    held = _collected.get()
    held.append(value)
    return f"{_HOLE}{len(held) - 1}{_HOLE}"


_BASE_FINALIZE = templating.ENVIRONMENT.finalize
# Same sandbox, filters and limits as every other template; only finalize differs.
_URL_ENVIRONMENT = templating.ENVIRONMENT.overlay(finalize=_hold_value)


def render_url_template(template: str, context: Mapping[str, Any]) -> str:
    """Render a runbook ``url:``: its literal text as written, each ``{{ }}`` value percent-encoded."""
    if "{{" not in template and "{%" not in template and "{#" not in template:
        return template
    token = _collected.set([])
    budget = template_limits.CURRENT_LOOP_BUDGET.set(template_limits.LoopBudget())
    try:
        for issue in templating.parse_template(template).issues:
            raise SecurityError(issue.message)
        pieces_rendered: list[str] = []
        size = 0
        for rendered in _URL_ENVIRONMENT.from_string(template).generate(**context):
            size += len(rendered)
            if size > templating.MAX_OUTPUT_CHARS:
                raise SecurityError(
                    f"it renders to more than {templating.MAX_OUTPUT_CHARS:,} characters"
                )
            pieces_rendered.append(rendered)
        skeleton = "".join(pieces_rendered)
        values = _collected.get()
    except UndefinedError as exc:
        raise TemplateError(
            f"template {template.strip()!r} reads a value that does not exist: {exc.message}",
            "check the name against the runbook's inputs and the outputs of earlier steps",
        ) from None
    except SecurityError as exc:
        raise TemplateError(f"template {template.strip()!r} was refused: {exc}") from None
    except TemplateSyntaxError as exc:
        raise TemplateError(
            f"template {template.strip()!r} has a syntax error: {exc.message}"
        ) from None
    except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as exc:
        raise TemplateError(f"template {template.strip()!r} failed: {exc}") from None
    except RecursionError:
        raise TemplateError(f"template {template.strip()!r} failed: it nests too deeply") from None
    finally:
        template_limits.CURRENT_LOOP_BUDGET.reset(budget)
        _collected.reset(token)
    pieces: list[str | _Hole] = []
    for position, piece in enumerate(skeleton.split(_HOLE)):
        if position % 2 == 0:
            pieces.append(piece)
        else:
            pieces.append(_Hole(values[int(piece)], f"a value of url {template.strip()!r}"))
    try:
        url = _assemble(pieces)
    except _Refused as exc:
        raise TemplateError(exc.message, exc.hint) from None
    if len(url) > templating.MAX_OUTPUT_CHARS:
        raise TemplateError(
            f"url {template.strip()[:60]!r}... renders to {len(url)} characters, "
            f"more than the {templating.MAX_OUTPUT_CHARS} allowed"
        )
    return url


# -- absolute URLs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Base:
    scheme: str
    host: str
    port: int
    path: str  # without a trailing slash; "" for the root

    def origin(self) -> str:
        default = 443 if self.scheme == "https" else 80
        netloc = self.host if ":" not in self.host else f"[{self.host}]"
        return f"{self.scheme}://{netloc}" + ("" if self.port == default else f":{self.port}")


def _parse(url: str) -> _Base:
    """Scheme, host, port and normalised path of an absolute http(s) URL."""
    if "\\" in url or any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise _Refused(
            "it contains a backslash, a space or a control character",
            "percent-encode such characters, or template the value so that Tocsin encodes it",
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _Refused(f"it is not a valid URL ({exc})") from None
    if parts.scheme.lower() not in _SCHEME_AND_HOST or not parts.hostname:
        raise _Refused("it is not an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise _Refused("it carries user:password@ before the host")
    if parts.fragment or url.endswith("#"):
        raise _Refused("it has a #fragment, which would never be sent: remove it")
    scheme = parts.scheme.lower()
    return _Base(
        scheme,
        parts.hostname.lower(),
        port if port is not None else (443 if scheme == "https" else 80),
        _resolve_dot_segments(parts.path),
    )


def _resolve_dot_segments(path: str) -> str:
    """RFC 3986 remove_dot_segments, counting ``%2e`` and look-alike dots as dots too."""
    kept: list[str] = []
    segments = path.split("/")[1:] if path.startswith("/") else path.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if _is_dot_segment(segment):
            if unicodedata.normalize("NFKC", unquote(segment)) == ".." and kept:
                kept.pop()
            if last:
                kept.append("")
            continue
        kept.append(segment)
    return "/" + "/".join(kept) if kept or path else ""
