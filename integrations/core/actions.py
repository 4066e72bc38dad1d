"""Actions that need no outside service."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from tocsin.actions import ActionContext, action

_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class Logged(BaseModel):
    message: str
    level: str


@action(
    "log",
    destructive=False,
    idempotent=True,
    describe=lambda message, level: f"write a {level} line to the run log: {message}",
)
def log(
    context: ActionContext,
    *,
    message: Annotated[str, Field(min_length=1, description="Text to write")],
    level: Annotated[Literal["info", "warning", "error"], Field(description="Log level")] = "info",
) -> Logged:
    """Write a line to the run log (and so to the audit trail)."""
    context.logger.log(_LEVELS[level], "[%s %s] %s", context.incident, context.step_id, message)
    return Logged(message=message, level=level)
