"""What the PKI tests share: an office whose devices hold certificates from a fake Vault PKI
over TLS (started as the sandbox starts it, its inventory in a journal of the test's own),
and actions called the way the engine calls them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tocsin.action_registry import ActionRegistry
from tocsin.actions import ActionContext
from tocsin.integration import SandboxSeed
from tocsin.integrations.pki import VAULT_TOKEN
from tocsin.integrations.pki.fake import FakeVaultPKI
from tocsin.integrations.pki.sandbox import start
from tocsin.sandbox.tls import LoopbackCA
from tocsin.settings import Settings, StaticSecrets, load_settings, with_values

OFFICE = "OF-1042"
DEVICES = ("PC-1", "PC-2")


@dataclass(frozen=True)
class Office:
    """The fake CA, settings pointing at it (inventory in ``journal_url``), the token."""

    fake: FakeVaultPKI
    settings: Settings
    token: str
    keys: Path
    """The key channel's folder (0700)."""

    def run(
        self, name: str, params: Mapping[str, Any], *, token: str | None = None, **pki: Any
    ) -> dict[str, Any]:
        """Call the action ``name`` as a step would (``pki`` settings laid over these)."""
        settings = with_values(self.settings, {"pki": pki}) if pki else self.settings
        definition = ActionRegistry.discover().get(name)
        context = ActionContext(
            incident="INC-14",
            step_id="step",
            secrets=StaticSecrets({VAULT_TOKEN: self.token if token is None else token}),
            settings=settings,
        )
        return definition.invoke(context, dict(params))


@contextmanager
def seeded_office(
    folder: Path, *, journal_url: str | None = None, devices: tuple[str, ...] = DEVICES
) -> Iterator[Office]:
    """Office OF-1042 with a certificate per device, issued by a fake Vault PKI over TLS."""
    ca = LoopbackCA.create(folder / "tls")
    url = journal_url or f"sqlite:///{folder / 'journal.db'}"
    service = start(
        SandboxSeed(
            inputs={"office_id": OFFICE, "devices": ",".join(devices)},
            server_tls=ca.server_context(),
            ca_bundle=ca.ca_bundle,
            journal_url=url,
            ticket="INC-14",
        )
    )
    assert isinstance(service.fake, FakeVaultPKI)
    keys = folder / "keys"
    keys.mkdir(mode=0o700)
    settings = with_values(
        load_settings(journal_url=url, data_dir=str(folder / "data")),
        service.settings,
        {"pki": {"key_channel": f"folder:{keys}", "max_retry_wait_seconds": 0.05}},
    )
    try:
        yield Office(service.fake, settings, service.secrets[VAULT_TOKEN], keys)
    finally:
        service.fake.stop()
