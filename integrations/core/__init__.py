"""Actions that need no outside service (``log``)."""

from __future__ import annotations

from pydantic import BaseModel

from tocsin.integration import Integration

integration: Integration[BaseModel] = Integration(
    name="core",
    description="Actions that need no outside service",
    action_modules=("tocsin.integrations.core.actions",),
)
