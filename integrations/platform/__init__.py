"""The broker-software provider's platform API: today its fake and its sandbox part.

Runbooks drive the platform with ``http.request`` (``service: platform``, the bearer token
in the secret ``platform_api_token``); this package starts the fake platform in the sandbox
and points ``http.services.platform`` at it. Issue 14 grows it into an integration with
actions of its own.

- ``fake``: ``FakePlatform``, the API the runbooks assume (offices, devices, accounts);
- ``sandbox``: the office seeded from the run's inputs, and the settings pointing at it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from tocsin.integration import DeclaredSecret, Integration

if TYPE_CHECKING:
    from tocsin.integration import SandboxSeed, SandboxService


def _sandbox(seed: SandboxSeed) -> SandboxService:
    from tocsin.integrations.platform.sandbox import start

    return start(seed)


integration: Integration[BaseModel] = Integration(
    name="platform",
    description="The provider's platform API (called with http.request)",
    secrets=(
        DeclaredSecret(
            "platform_api_token",
            "Bearer token of the platform API, named by runbooks' http.request steps "
            "(bearer_token_secret: platform_api_token)",
        ),
    ),
    sandbox=_sandbox,
)
