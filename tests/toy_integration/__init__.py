"""A toy integration, defined in the test tree as a third-party package would be.

``tests/test_integrations.py`` installs it with nothing but an entry point (a dist-info
folder on ``sys.path``) and checks that its action runs in a runbook, that its settings
slot is read from ``TOCSIN_TOY__...``, that the sandbox starts its fake and points it
there, and that ``tocsin gateway`` serves its route: adding an integration touches its own
folder only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.toy_integration.settings import ToySettings
from tocsin.integration import DeclaredSecret, Integration

if TYPE_CHECKING:
    from tocsin.gateway import Gateway
    from tocsin.integration import GatewayPart, SandboxSeed, SandboxService

TOKEN_SECRET = "toy_token"


def _sandbox(seed: SandboxSeed) -> SandboxService:
    from tests.toy_integration.fake import start

    return start(seed)


def _gateway(gateway: Gateway) -> GatewayPart:
    from tests.toy_integration.gateway import gateway_part

    return gateway_part(gateway)


integration: Integration[ToySettings] = Integration(
    name="toy",
    description="A toy bell that answers when rung",
    settings=ToySettings,
    secrets=(DeclaredSecret(TOKEN_SECRET, "Bearer token the bell accepts"),),
    action_modules=("tests.toy_integration.actions",),
    sandbox=_sandbox,
    gateway=_gateway,
)
