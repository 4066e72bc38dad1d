"""Settings of ``http.request``: the named services it calls, and a CA to trust for them."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class HttpSettings(BaseModel):
    """The services ``http.request`` calls by name (``service: platform``)."""

    model_config = ConfigDict(extra="forbid")

    services: dict[str, str] = Field(
        default_factory=dict,
        description="Base URL of each named service http.request calls with `service:` "
        "(TOCSIN_HTTP__SERVICES__PLATFORM=https://platform.example/api/v1)",
    )
    ca_bundle: Path | None = Field(
        None,
        description="PEM file of CA certificates trusted besides the system's, for services "
        "behind an internal CA (the sandbox sets its own)",
    )
