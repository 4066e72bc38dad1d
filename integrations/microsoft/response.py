"""One answer of Microsoft's APIs (Graph, Defender for Endpoint, Exchange Online): its
status, its JSON body and its headers, as every other module reads it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tocsin.outbound import BoundedResponse


@dataclass(frozen=True)
class GraphResponse:
    """One Graph answer: its status, its JSON body (None when empty) and headers."""

    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def error_code(self) -> str:
        error = self.body.get("error") if isinstance(self.body, dict) else None
        return str(error.get("code", "")) if isinstance(error, dict) else ""

    @property
    def error_message(self) -> str:
        error = self.body.get("error") if isinstance(self.body, dict) else None
        return str(error.get("message", "")) if isinstance(error, dict) else ""


def parsed(raw: BoundedResponse) -> GraphResponse:
    """The answer with its body read as JSON (a body that is not JSON kept as an error)."""
    body: Any = None
    if raw.content:
        try:
            body = json.loads(raw.content)
        except ValueError:
            body = {"error": {"code": "notJson", "message": raw.text[:200]}}
    return GraphResponse(raw.status_code, body, {k.lower(): v for k, v in raw.headers.items()})
