"""The toy's settings slot: ``settings.toy``, ``TOCSIN_TOY__URL``, ``TOCSIN_TOY__GREETING``..."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict


class ToySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = "https://bell.invalid"
    greeting: str = "hello"
    ca_bundle: Path | None = None
    ticket_desk: str = ""
    """The toy desk's URL: set, the toy is the ticket system (keys like INC0010001)."""
