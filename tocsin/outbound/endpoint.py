"""Sending requests bound to one service (guarantees 3 and 4 of ``tocsin.outbound``).

A ``ServiceEndpoint`` joins paths to its base URL (with ``tocsin.outbound.urls``), attaches
its credential only under that base, never follows a redirect, and caps every response.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import httpx

from tocsin.errors import ConfigurationError, IntegrationError
from tocsin.outbound.urls import _assemble, _Base, _parse, _Refused, _template_pieces

DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024
"""A response body larger than this is refused unless the caller allows more."""


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


class SigningCredential(Credential, Protocol):
    """A credential whose headers depend on the request itself (an HMAC signature)."""

    def signed_headers(self, method: str, url: httpx.URL, body: bytes) -> Mapping[str, str]:
        """Headers authenticating this exact request (``url`` as sent, ``body`` as sent)."""
        ...


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
        content: bytes | None = None
        if self.credential is not None:
            sent.update(self.credential.headers())
            signed_headers = getattr(self.credential, "signed_headers", None)
            if signed_headers is not None:
                # What is signed must be the very bytes sent, so the body is encoded here.
                if json_body is not None:
                    content = json.dumps(
                        json_body, ensure_ascii=False, separators=(",", ":"), allow_nan=False
                    ).encode("utf-8")
                    sent["Content-Type"] = "application/json"
                sent.update(signed_headers(method, target, content or b""))
        shown = f"{method} {target}"
        try:
            verify: ssl.SSLContext | bool = self.verify if self.verify is not None else True
            with httpx.Client(timeout=timeout, follow_redirects=False, verify=verify) as client:
                with client.stream(
                    method,
                    target,
                    headers=sent,
                    content=content,
                    json=json_body if content is None else None,
                ) as response:
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
                # Not connected: nothing was sent. Dropped after sending: it may have acted.
                unapplied=isinstance(exc, httpx.ConnectError),
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


def _size(count: int) -> str:
    for unit, size in (("MB", 1024 * 1024), ("KB", 1024)):
        if count >= size:
            return f"{count / size:g} {unit}"
    return f"{count} bytes"
