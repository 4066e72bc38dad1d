"""A toy integration, defined in the test tree as a third-party package would be.

``tests/test_integrations.py`` installs it with nothing but an entry point (a dist-info
folder on ``sys.path``) and checks that its action runs in a runbook, that its settings
slot is read from ``TOCSIN_TOY__...``, and that the sandbox starts its fake and points it
there: adding an integration touches its own folder only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.toy_integration.settings import ToySettings
from tocsin.integration import DeclaredSecret, Integration

if TYPE_CHECKING:
    from tocsin.integration import SandboxSeed, SandboxService

TOKEN_SECRET = "toy_token"


def _sandbox(seed: SandboxSeed) -> SandboxService:
    from tests.toy_integration.fake import start

    return start(seed)


integration: Integration[ToySettings] = Integration(
    name="toy",
    description="A toy bell that answers when rung",
    settings=ToySettings,
    secrets=(DeclaredSecret(TOKEN_SECRET, "Bearer token the bell accepts"),),
    action_modules=("tests.toy_integration.actions",),
    sandbox=_sandbox,
)
