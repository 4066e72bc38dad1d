"""Outgoing HTTP requests that stay where they were sent.

Every integration that calls a service over HTTP builds its URLs and sends its
credentials through this module, so that the same guarantees hold for all of them:

1. **Values put into a URL are data.** Each is percent-encoded, so a ``/``, ``?``, ``#``,
   ``@``, ``\\``, ``..`` or ``%2e`` in an input fills one path segment or one query value
   and never moves the request elsewhere; a value that would be a whole segment of its
   own cannot be empty, ``.`` or ``..`` (``ServiceEndpoint.url`` for code,
   ``render_url_template`` for a runbook's ``url:``).
2. **The joined URL stays under the service's base URL.** Dot segments (``..``, ``%2e``,
   ``．``) are resolved the way a lenient server would, then the URL must keep the base
   URL's scheme, host and port and have its path as a prefix at a segment boundary
   (``/api/v1`` admits ``/api/v1/offices``, not ``/api/v1-admin``).
3. **A credential is bound to its endpoint.** ``ServiceEndpoint.send`` attaches it only to
   a URL that passed (2); redirects are never followed (a redirect outside the service
   is reported as such, naming the host), so a token never travels to another host.
4. **Responses are capped.** The body is read as a stream and the request is refused as
   soon as it passes ``max_response_bytes`` (10 MB by default), without reading the rest.

An integration whose settings name a ``ca_bundle`` (an internal CA, the sandbox's loopback
CA) trusts it besides the system's CAs: ``trusting(ca_bundle)`` is the TLS context its
client is given (``ServiceEndpoint(verify=...)``, httpx's ``verify=``, slack-sdk's ``ssl=``).

::

    platform = ServiceEndpoint("platform", "https://platform.example/api/v1",
                               action="http.request", credential=BearerToken(token))
    url = platform.url("/offices/{office}/disconnect", office=office_id)
    response = platform.send("POST", url, json_body={"reason": "..."}, timeout=30)
"""

from __future__ import annotations

import contextvars
import re
import ssl
import string
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote, urljoin, urlsplit

import httpx
from jinja2 import Environment, TemplateSyntaxError, Undefined, UndefinedError, pass_environment
from jinja2.exceptions import SecurityError

from tocsin import template_limits, templating
from tocsin.errors import ConfigurationError, InputError, IntegrationError, TemplateError

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "BearerToken",
    "BoundedResponse",
    "Credential",
    "ServiceEndpoint",
    "path_segment",
    "render_url_template",
    "trusting",
]

DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024
"""A response body larger than this is refused unless the caller allows more."""

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


# -- the endpoint ---------------------------------------------------------------------------------


def trusting(ca_bundle: Path | None) -> ssl.SSLContext | None:
    """A TLS context trusting the system's CAs and those in ``ca_bundle``; None without one
    (each client's own default)."""
    if ca_bundle is None:
        return None
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=str(ca_bundle))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"cannot read the CA bundle {ca_bundle}: {exc}",
            "ca_bundle must name a PEM file of CA certificates",
        ) from None
    return context


class Credential(Protocol):
    """Something that authenticates requests to one service."""

    @property
    def secret(self) -> str:
        """The secret value, so that it can be hidden from every message."""
        ...

    def headers(self) -> Mapping[str, str]: ...


@dataclass(frozen=True)
class BearerToken:
    """``Authorization: Bearer <token>``."""

    secret: str = field(repr=False)

    def headers(self) -> Mapping[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}


@dataclass(frozen=True)
class BoundedResponse:
    """A response whose whole body was read, within the endpoint's size limit."""

    status_code: int
    reason_phrase: str
    headers: httpx.Headers
    content: bytes
    url: str

    @property
    def text(self) -> str:
        return self.content.decode(self.encoding, errors="replace")

    @property
    def encoding(self) -> str:
        content_type = str(self.headers.get("content-type", ""))
        for parameter in content_type.split(";")[1:]:
            key, _, value = parameter.strip().partition("=")
            if key.lower() == "charset" and value:
                try:
                    "".encode(value.strip('"'))
                except LookupError:
                    break
                return value.strip('"')
        return "utf-8"


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


@dataclass(frozen=True)
class ServiceEndpoint:
    """A service's base URL, the credential bound to it, and the limits of every call to it."""

    service: str
    """Named in every error (``platform``, ``jira``)."""
    base_url: str
    action: str
    """The action the calls serve, named in every error."""
    credential: Credential | None = field(default=None, repr=False)
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    limit_hint: str = "ask the service for less (a filter, a smaller page)"
    """How to raise ``max_response_bytes``, said when a response is too large."""
    also_under: tuple[str, ...] = ()
    """Other base URLs of the same service (its sign-in host...): absolute URLs under them
    are accepted too, with the credential; paths always join ``base_url``."""
    verify: ssl.SSLContext | None = field(default=None, repr=False)
    """The TLS context checking the service's certificate (``trusting``); None: httpx's default."""

    def __post_init__(self) -> None:
        for base_url in (self.base_url, *self.also_under):
            self._base(base_url)  # refuse a wrong base URL when the endpoint is made

    def url(self, path_template: str = "", /, **values: Any) -> str:
        """The absolute URL of ``path_template`` under the base URL, each ``{name}`` an encoded value."""
        try:
            relative = _assemble(_template_pieces(path_template, values))
        except _Refused as exc:
            raise self._error(f"refuses a URL: {exc.message}", exc.hint) from None
        return self.resolve(relative)

    def resolve(self, url: str) -> str:
        """``url`` (a path under the base URL, or an absolute URL) normalised; refused unless under the base."""
        base = self._base()
        if url == "" or (url.startswith("/") and not url.startswith("//")):
            joined = base.origin() + base.path + url
        else:
            joined = url
        try:
            candidate = _parse(joined)
        except _Refused as exc:
            raise self._error(f"refuses the URL {joined!r}: {exc.message}", exc.hint) from None
        bases = [base, *(self._base(other) for other in self.also_under)]
        same_origin = [
            known
            for known in bases
            if (candidate.scheme, candidate.host, candidate.port)
            == (known.scheme, known.host, known.port)
        ]
        if not same_origin:
            where = ", ".join(f"{known.origin()}{known.path}" for known in bases)
            raise self._error(
                f"is at {where}; refusing to send a request to "
                f"{candidate.origin()}, another host"
                + (
                    ": the service's credentials are bound to its own host"
                    if self.credential
                    else ""
                ),
                "call that host without this service's credentials, or configure it as a service "
                "of its own",
            )
        if not any(
            not known.path
            or candidate.path == known.path
            or candidate.path.startswith(known.path + "/")
            for known in same_origin
        ):
            where = ", ".join(f"{known.origin()}{known.path}" for known in same_origin)
            raise self._error(
                f"refuses {candidate.origin()}{candidate.path}: it is outside the service's base "
                f"URL {where} (after resolving dot segments)",
                "check the URL and the values in it; a value cannot climb out of the base path",
            )
        query = urlsplit(joined).query
        return candidate.origin() + (candidate.path or "/") + (f"?{query}" if query else "")

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str | int] | None = None,
        json_body: Any = None,
        timeout: float = 30.0,
    ) -> BoundedResponse:
        """Send one request under the base URL, with the credential; redirects are not followed."""
        target = httpx.URL(self.resolve(url))
        if query:
            # httpx's params= would replace a query already in the URL; merge instead.
            target = target.copy_merge_params(dict(query))
        # Uncompressed, so that Content-Length announces the size and no small gzip body
        # inflates past the limit within one chunk.
        sent = {"Accept-Encoding": "identity", **(headers or {})}
        if self.credential is not None:
            sent.update(self.credential.headers())
        shown = f"{method} {target}"
        try:
            verify: ssl.SSLContext | bool = self.verify if self.verify is not None else True
            with httpx.Client(timeout=timeout, follow_redirects=False, verify=verify) as client:
                with client.stream(method, target, headers=sent, json=json_body) as response:
                    content = self._read_capped(response, shown)
                    answer = BoundedResponse(
                        response.status_code,
                        response.reason_phrase,
                        response.headers,
                        content,
                        str(response.url),
                    )
        except httpx.TimeoutException:
            raise IntegrationError(
                self.action,
                self.service,
                f"did not answer {shown} within {timeout:g} s",
                "retry the step; raise timeout_seconds if the service is known to be slow",
                retryable=True,
            ) from None
        except httpx.TransportError as exc:
            raise IntegrationError(
                self.action,
                self.service,
                f"cannot be reached for {shown}: {self.hidden(str(exc) or type(exc).__name__)}",
                "check the URL and that the service is up; the step can be retried",
                retryable=True,
            ) from None
        except httpx.HTTPError as exc:
            raise IntegrationError(
                self.action,
                self.service,
                f"failed on {shown}: {self.hidden(str(exc) or type(exc).__name__)}",
            ) from None
        return answer

    def redirect_leaves(self, response: BoundedResponse) -> str | None:
        """The host a redirect points to when it is outside the service, else None."""
        location = str(response.headers.get("location", ""))
        if not location or not 300 <= response.status_code < 400:
            return None
        try:
            self.resolve(urljoin(response.url, location))
        except IntegrationError:
            target = urlsplit(urljoin(response.url, location))
            return str(target.netloc or location)
        return None

    def hidden(self, text: str) -> str:
        """``text`` with the credential's secret replaced by ``<hidden>``."""
        secret = self.credential.secret if self.credential is not None else ""
        return text.replace(secret, "<hidden>") if secret else text

    def _read_capped(self, response: httpx.Response, shown: str) -> bytes:
        limit = self.max_response_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise self._too_large(shown, f"announced {_size(int(declared))}")
        chunks: list[bytes] = []
        received = 0
        for chunk in response.iter_bytes():
            received += len(chunk)
            if received > limit:
                raise self._too_large(shown, f"sent more than {_size(limit)}")
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, shown: str, what: str) -> IntegrationError:
        return IntegrationError(
            self.action,
            self.service,
            f"answered {shown} with a body that {what}, over the limit of "
            f"{_size(self.max_response_bytes)} ({self.max_response_bytes} bytes); "
            "Tocsin stopped reading it",
            f"raise the limit ({self.limit_hint}) if the service really answers that much",
        )

    def _error(self, message: str, hint: str = "") -> IntegrationError:
        return IntegrationError(self.action, self.service, message, hint)

    def _base(self, base_url: str | None = None) -> _Base:
        base_url = self.base_url if base_url is None else base_url
        try:
            base = _parse(base_url)
        except _Refused as exc:
            raise IntegrationError(
                self.action,
                self.service,
                f"has a base URL that cannot be used ({base_url!r}): {exc.message}",
                "set the service's base URL to http(s)://host[:port][/path], without "
                "user:password@, ?query or #fragment",
            ) from None
        if urlsplit(base_url).query or "#" in base_url:
            raise IntegrationError(
                self.action,
                self.service,
                f"has a base URL with a query or a fragment ({base_url!r})",
                "set the service's base URL to http(s)://host[:port][/path] only",
            )
        return _Base(base.scheme, base.host, base.port, base.path.rstrip("/"))


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


def _size(count: int) -> str:
    for unit, size in (("MB", 1024 * 1024), ("KB", 1024)):
        if count >= size:
            return f"{count / size:g} {unit}"
    return f"{count} bytes"
