"""The firewall in the sandbox: the fake, with the declared service pointed at it."""

from __future__ import annotations

from tocsin.integration import SandboxSeed, SandboxService
from tocsin.integrations.firewall.fake import KEY_SECRET, SANDBOX_FIREWALL_KEY, FakeFirewall


def start(seed: SandboxSeed) -> SandboxService:
    """Start the fake firewall; ``firewall.*`` actions reach it through ``declared.base_urls``."""
    fake = FakeFirewall().start(tls=seed.server_tls)
    declared: dict[str, object] = {"base_urls": {"firewall": f"{fake.url}/api/v2"}}
    if seed.ca_bundle is not None:
        declared["ca_bundle"] = str(seed.ca_bundle)
    return SandboxService(
        fake, settings={"declared": declared}, secrets={KEY_SECRET: SANDBOX_FIREWALL_KEY}
    )
