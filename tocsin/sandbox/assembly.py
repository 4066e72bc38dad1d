"""The sandbox: the fakes of every installed integration on loopback, and the settings that
point runs at them.

Nothing here names a service. Each integration with a ``sandbox`` part starts its fake
with the seed (the run's inputs, its user groups, its ticket) and says which settings
values and secrets reach it; ``Sandbox`` lays those over the settings it is given and
returns them, with the secrets, for the caller to pass on::

    with Sandbox(settings, SandboxSeed(inputs, ticket="INC-7")) as sandbox:
        start_the_run(sandbox.settings, sandbox.secrets)

The fakes serve https with a CA made for the occasion (``tocsin.sandbox.tls``), which
each integration's client trusts through its own ``ca_bundle`` setting. This process's
environment is never changed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Self, TypeVar

from tocsin.integration import SandboxSeed, SandboxService, installed_integrations
from tocsin.journal.database import default_url
from tocsin.private_paths import private_folder
from tocsin.sandbox.fake_service import FakeService
from tocsin.sandbox.tls import LoopbackCA
from tocsin.settings import (
    EnvironmentSecrets,
    LayeredSecrets,
    SecretStore,
    Settings,
    StaticSecrets,
    with_values,
)

F = TypeVar("F", bound=FakeService)


class Sandbox:
    """Starts the fakes of the installed integrations; ``settings`` and ``secrets`` point at them."""

    def __init__(self, settings: Settings, seed: SandboxSeed | None = None) -> None:
        self.base = settings
        self.seed = seed or SandboxSeed()
        self.services: dict[str, SandboxService] = {}
        self.settings = settings
        self.secrets: SecretStore = EnvironmentSecrets()
        self._fake_secrets: dict[str, str] = {}
        self._folder: Path | None = None

    def __enter__(self) -> Self:
        secrets: dict[str, str] = {}
        try:
            self._folder = _private_folder(self.base)
            ca = LoopbackCA.create(self._folder / "tls")
            seed = replace(
                self.seed,
                server_tls=ca.server_context(),
                ca_bundle=ca.ca_bundle,
                journal_url=self.base.journal_url or default_url(self.base.data_dir),
            )
            for integration in installed_integrations():
                if integration.sandbox is None:
                    continue
                service = integration.sandbox(seed)
                self.services[integration.name] = service
                for name in service.secrets:
                    integration.secret(name)  # a fake's secret must be a declared one
                secrets.update(service.secrets)
            self.settings = with_values(
                self.base, *(service.settings for service in self.services.values())
            )
        except BaseException:
            self.__exit__(None, None, None)
            raise
        # The fakes' secrets first; the environment's still serve the rest (a runbook's own).
        self.secrets = LayeredSecrets(StaticSecrets(secrets), EnvironmentSecrets())
        self._fake_secrets = secrets
        return self

    def environment(self) -> dict[str, str]:
        """The ``TOCSIN_*`` variables that point other processes (workers, gateways, `tocsin
        run --deployment`) at these fakes: their settings, their secrets, and
        ``sandbox_shared`` so that those processes do not start fakes of their own."""
        values: dict[str, str] = {"TOCSIN_MODE": "sandbox", "TOCSIN_SANDBOX_SHARED": "true"}
        for service in self.services.values():
            for slot, slot_values in service.settings.items():
                values.update(_variables(f"TOCSIN_{slot.upper()}", slot_values))
        for name, value in self._fake_secrets.items():
            values[f"TOCSIN_SECRET_{name.upper()}"] = value
        return values

    def __exit__(self, *exc: object) -> None:
        for service in reversed(list(self.services.values())):
            service.fake.stop()
        self.services.clear()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    @property
    def fakes(self) -> dict[str, FakeService]:
        """The running fakes, by integration name."""
        return {name: service.fake for name, service in self.services.items()}

    def fake(self, name: str, kind: type[F]) -> F:
        """The fake of integration ``name``, of the type the caller expects."""
        found = self.services[name].fake
        if not isinstance(found, kind):
            raise TypeError(f"the {name} fake is a {type(found).__name__}, not a {kind.__name__}")
        return found

    @property
    def notes(self) -> list[str]:
        """What the fakes want whoever started the sandbox to know (user groups, secrets)."""
        return [note for service in self.services.values() for note in service.notes]


def _variables(prefix: str, value: object) -> dict[str, str]:
    """``value`` as the environment variables the settings read it from: one per key of a
    slot, ``__`` between levels; lists and mappings below a slot's keys as JSON, which is how
    the settings read complex values from the environment."""
    if isinstance(value, Mapping) and prefix.count("__") == 0:
        found: dict[str, str] = {}
        for key, inner in value.items():
            found.update(_variables(f"{prefix}__{str(key).upper()}", inner))
        return found
    if value is None:
        return {}
    if isinstance(value, bool):
        return {prefix: "true" if value else "false"}
    if isinstance(value, Mapping | list | tuple):
        return {prefix: json.dumps(value, default=str)}
    return {prefix: str(value)}


def _private_folder(settings: Settings) -> Path:
    """A folder of this sandbox's own under ``data_dir/sandbox`` (its CA). Those left by a
    process of this machine that is gone (killed before it could clean up) are removed."""
    base = private_folder(settings.data_dir / "sandbox")
    host = socket.gethostname()
    for left in base.iterdir():
        owner, _, pid = left.name.rpartition(".")[0].rpartition(".")
        if owner == host and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(left, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{host}.{os.getpid()}.", dir=base))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
