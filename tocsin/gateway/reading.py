"""Reading what comes to the gateway: bounded bodies, forms and JSON, and what a refused
request claims, made harmless to record.

Every route reads its body through ``read_body`` (at most ``gateway.max_body_bytes``,
within ``gateway.body_timeout_seconds``), and every refusal is a ``RequestRefused`` with
the HTTP status to answer.
"""

from __future__ import annotations

import asyncio
import json
import re
import string
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect, Request

from tocsin.errors import TocsinError
from tocsin.settings import GatewaySettings

MAX_CLAIM_CHARS = 64
"""What an unauthenticated request claims (user, ticket, step) is cut to this many characters."""
CLAIM_CHARACTERS = frozenset(string.ascii_letters + string.digits + " -_.:/=#@+,")
MAX_FORM_FIELDS = 64


class RequestRefused(TocsinError):
    """A request the gateway answers with ``status`` and ``message`` (and audits)."""

    def __init__(self, status: int, message: str, hint: str = "") -> None:
        super().__init__(message, hint)
        self.status = status


def parse_json(text: str | bytes, what: str) -> Any:
    """``text`` as JSON; ``RequestRefused`` (400) when it is not, or nests too deep to read."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: thousands of [ or {
        problem = "nested too deep" if isinstance(exc, RecursionError) else "not JSON"
        raise RequestRefused(400, f"malformed request: {what} is {problem}") from None


def parse_form(body: bytes) -> dict[str, str]:
    """A form-encoded body's fields (the last value of a repeated one); 400 when it is not
    UTF-8 or has too many fields."""
    try:
        pairs = parse_qsl(body.decode("utf-8"), errors="strict", max_num_fields=MAX_FORM_FIELDS)
    except ValueError as exc:  # UnicodeDecodeError is one
        problem = "is not UTF-8" if isinstance(exc, UnicodeDecodeError) else "has too many fields"
        raise RequestRefused(400, f"malformed request: the form {problem}") from None
    return dict(pairs)


def claim_text(value: object) -> str:
    """What an unauthenticated request says, made harmless to record and to show: at most
    ``MAX_CLAIM_CHARS`` characters, each outside a small printable set replaced by ``?``
    (no markup, no control characters), and ``...`` when it was cut."""
    if isinstance(value, bool) or value is None:
        text = str(value).lower()
    elif isinstance(value, str):
        text = value
    elif isinstance(value, (int, float)):
        text = f"{value:.6g}" if isinstance(value, float) or abs(value) > 10**18 else str(value)
    else:
        text = f"<{type(value).__name__}>"
    shown = "".join(c if c in CLAIM_CHARACTERS else "?" for c in text[:MAX_CLAIM_CHARS])
    return shown + ("..." if len(text) > MAX_CLAIM_CHARS else "")


def lowered_headers(request: Request) -> dict[str, str]:
    return {name.lower(): value for name, value in request.headers.items()}


async def read_body(request: Request, settings: GatewaySettings) -> bytes:
    """The request's body, read only up to ``gateway.max_body_bytes`` (413 past it, before
    reading when Content-Length says so) and within ``gateway.body_timeout_seconds``.

    It is kept on ``request.state.body``, for the audit record if the request is refused.
    """
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        if not re.fullmatch(r"[0-9]{1,19}", declared.strip()):
            raise RequestRefused(400, "malformed request: Content-Length is not a number")
        if int(declared) > limit:
            raise RequestRefused(
                413,
                f"request body too large: {int(declared)} bytes, the gateway reads at most "
                f"{limit} (setting gateway.max_body_bytes); not read",
            )
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(settings.body_timeout_seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestRefused(
                        413,
                        f"request body too large: over {limit} bytes (setting "
                        "gateway.max_body_bytes); reading stopped there",
                    )
                chunks.append(chunk)
    except TimeoutError:
        raise RequestRefused(
            408, f"request body not received within {settings.body_timeout_seconds:g} s"
        ) from None
    except ClientDisconnect:
        raise RequestRefused(400, "the client went away before sending its whole body") from None
    body = b"".join(chunks)
    request.state.body = body
    return body


__all__ = [
    "CLAIM_CHARACTERS",
    "MAX_CLAIM_CHARS",
    "RequestRefused",
    "claim_text",
    "lowered_headers",
    "parse_form",
    "parse_json",
    "read_body",
]
