"""The perimeter firewall: its actions are declared in ``integrations/firewall.yaml``
(``tocsin.declared``); this package is its secret, its fake and its sandbox part.

- ``fake``: ``FakeFirewall``, the rule API the declaration drives (HMAC-signed requests);
- ``sandbox``: starts the fake and points ``declared.base_urls.firewall`` at it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from tocsin.integration import DeclaredSecret, Integration

if TYPE_CHECKING:
    from tocsin.integration import SandboxSeed, SandboxService

KEY_SECRET = "firewall_hmac_key"


def _sandbox(seed: SandboxSeed) -> SandboxService:
    from tocsin.integrations.firewall.sandbox import start

    return start(seed)


integration: Integration[BaseModel] = Integration(
    name="firewall",
    description="The perimeter firewall's rule API (actions declared in integrations/firewall.yaml)",
    secrets=(
        DeclaredSecret(KEY_SECRET, "Key signing each request to the firewall API (HMAC-SHA256)"),
    ),
    sandbox=_sandbox,
)
