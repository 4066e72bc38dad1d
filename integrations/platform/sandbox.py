"""The platform in the sandbox: one office seeded from the run's inputs, at the fake's URL."""

from __future__ import annotations

from tocsin.integration import SandboxSeed, SandboxService
from tocsin.integrations.platform.fake import (
    SANDBOX_PLATFORM_TOKEN,
    TOKEN_SECRET,
    Account,
    Device,
    FakePlatform,
    Office,
)


def seeded_office(seed: SandboxSeed) -> Office:
    """The office a sandbox run works on: the one its inputs name (``OF-1042`` by default)."""
    values = seed.inputs
    devices = values.get("devices") or ["PC-1", "PC-2"]
    return Office(
        id=str(values.get("office_id") or "OF-1042"),
        name=str(values.get("office_name") or "Sandbox office"),
        devices=[Device(str(d), f"CERT-{i:04d}") for i, d in enumerate(devices, start=1)],
        accounts=[Account("A-1", "manager"), Account("A-2", "assistant")],
        open_sessions=3,
    )


def start(seed: SandboxSeed) -> SandboxService:
    """Start the fake platform; runbooks reach it as ``http.request`` with ``service: platform``
    and through the declared ``platform.*`` actions."""
    fake = FakePlatform(offices=[seeded_office(seed)]).start(tls=seed.server_tls)
    base_url = f"{fake.url}/api/v1"
    # The same fake serves http.request's `service: platform` and the declared platform.*.
    http: dict[str, object] = {"services": {"platform": base_url}}
    declared: dict[str, object] = {"base_urls": {"platform": base_url}}
    if seed.ca_bundle is not None:
        http["ca_bundle"] = declared["ca_bundle"] = str(seed.ca_bundle)
    return SandboxService(
        fake,
        settings={"http": http, "declared": declared},
        secrets={TOKEN_SECRET: SANDBOX_PLATFORM_TOKEN},
    )
