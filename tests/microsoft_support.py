"""What the Microsoft 365 tests share: the fake tenant over TLS, and actions called the way
the engine calls them (``ActionDefinition.invoke`` with an ``ActionContext``).

A module starts its own ``tenant`` fixture once (``fake_tenant`` with the apps and seed it
needs) and binds the shared per-test fixtures by name: ``fake = microsoft_support.fake``
(the tenant reset for each test), ``settings = microsoft_support.settings``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tocsin.action_registry import ActionRegistry
from tocsin.actions import ActionContext
from tocsin.integrations.microsoft import CLIENT_SECRET, integration
from tocsin.integrations.microsoft.client import Graph, MicrosoftCredentials
from tocsin.integrations.microsoft.fake import (
    ALL_ROLES,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_TENANT_ID,
    SANDBOX_USER,
    FakeApp,
    FakeMicrosoft,
    compromised_tenant,
)
from tocsin.integrations.microsoft.fake_leaver import add_leaver
from tocsin.sandbox.tls import LoopbackCA
from tocsin.settings import Settings, StaticSecrets, load_settings

LIMITED_CLIENT_ID = "11111111-2222-4333-8444-limitedapp00"
LIMITED_SECRET = "limited~secret"
LIMITED_ROLES = ALL_ROLES - {"UserAuthenticationMethod.ReadWrite.All", "AuditLog.Read.All"} | {
    "UserAuthenticationMethod.Read.All"
}
"""An app whose admin granted reading sign-in methods but not removing them, and forgot the
sign-in logs."""
INVOKE = f"/adminapi/beta/{SANDBOX_TENANT_ID}/InvokeCommand"
"""Where Exchange Online's cmdlets are called (``CmdletInput.CmdletName``)."""


@contextmanager
def fake_tenant(
    folder: Path, *, leaver: bool = False, **fake_options: Any
) -> Iterator[tuple[FakeMicrosoft, LoopbackCA]]:
    """The compromised tenant's (or ``tenant=``'s) identity platform and Graph over TLS,
    stopped afterwards; with ``leaver``, also the colleague who left the office and the one
    taking over (``fake_leaver``), as the sandbox seeds them."""
    ca = LoopbackCA.create(folder / "tls")
    apps = (
        FakeApp(),
        FakeApp(client_id=LIMITED_CLIENT_ID, secret=LIMITED_SECRET, roles=LIMITED_ROLES),
        *fake_options.pop("apps", ()),
    )
    tenant = fake_options.pop("tenant", None) or compromised_tenant()
    if leaver:
        tenant = add_leaver(tenant, SANDBOX_USER.split("@")[-1])
    fake = FakeMicrosoft(tenant, apps=apps, **fake_options)
    fake.start(tls=ca.server_context())
    try:
        yield fake, ca
    finally:
        fake.stop()


def signed_in(client: Any, fake: FakeMicrosoft) -> int:
    """Make ``client`` hold a token the fake knows (a reset forgets them); the number of
    requests the fake has received by then, to look at the later ones only."""
    client.call("GET", "/users/{user}", user=SANDBOX_USER)
    return len(fake.requests)


def settings_for(fake: FakeMicrosoft, ca: LoopbackCA, **microsoft: Any) -> Settings:
    values: dict[str, Any] = {
        "tenant_id": SANDBOX_TENANT_ID,
        "client_id": SANDBOX_CLIENT_ID,
        "authority_host": fake.url,
        "graph_url": fake.url,
        "exchange_url": fake.url,
        "defender_url": fake.url,
        "ca_bundle": str(ca.ca_bundle),
        "max_retry_wait_seconds": 2.0,
        **microsoft,
    }
    return load_settings(microsoft=values)


def run_action(
    name: str,
    params: Mapping[str, Any],
    settings: Settings,
    secrets: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Call the action ``name`` as a step would."""
    definition = ActionRegistry.discover().get(name)
    context = ActionContext(
        incident="INC-13",
        step_id="step",
        secrets=StaticSecrets(
            {CLIENT_SECRET: SANDBOX_CLIENT_SECRET} if secrets is None else secrets
        ),
        settings=settings,
    )
    return definition.invoke(context, dict(params))


@pytest.fixture
def fake(tenant: tuple[FakeMicrosoft, LoopbackCA]) -> FakeMicrosoft:
    """The module's tenant, reset to what it was seeded with, for one test."""
    tenant[0].reset()
    return tenant[0]


@pytest.fixture
def settings(tenant: tuple[FakeMicrosoft, LoopbackCA], fake: FakeMicrosoft) -> Settings:
    """Settings that point Microsoft 365 at the module's fake tenant."""
    return settings_for(fake, tenant[1])


def graph(settings: Settings, secret: str = SANDBOX_CLIENT_SECRET, **values: str) -> Graph:
    """A Graph client as an action gets one, signing in with ``secret`` (and ``values``)."""
    credentials = MicrosoftCredentials.from_secrets(
        settings, StaticSecrets({CLIENT_SECRET: secret, **values})
    )
    return Graph(credentials, integration.settings_of(settings), "test.action")


def cmdlets(fake: FakeMicrosoft) -> list[str]:
    """The Exchange cmdlets the fake was asked to run, in order."""
    return [str(r.json()["CmdletInput"]["CmdletName"]) for r in fake.requests if r.path == INVOKE]
