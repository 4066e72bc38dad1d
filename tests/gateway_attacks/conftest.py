"""A real gateway on loopback for each attack module: its settings in the environment (a
run reads them there), a fake Jira, the server; each started once per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway_attacks.support import FAILING, PLAIN, SIGNING_SECRET
from tests.gateway_support import (
    environment_variables,
    gateway_from_settings,
    service_settings,
    settings_journal,
)
from tocsin.gateway import Gateway, GatewayServer
from tocsin.integrations.jira.fake import FakeJira
from tocsin.journal import Journal


@pytest.fixture(scope="module")
def jira() -> Iterator[FakeJira]:
    with FakeJira() as fake:
        yield fake


@pytest.fixture(scope="module")
def environment(
    prefect_server: str, jira: FakeJira, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """Settings every run and the gateway of this module read (a run reads the environment)."""
    folder = tmp_path_factory.mktemp("gateway-security")
    values = {
        **service_settings(folder, signing_secret=SIGNING_SECRET, jira=jira),
        "TOCSIN_GATEWAY__BODY_TIMEOUT_SECONDS": "2",
        # every refusal of this module is looked at one by one (the limit has its own test)
        "TOCSIN_GATEWAY__REFUSALS_AUDITED_PER_MINUTE": "100000",
    }
    (folder / "runbooks" / "breaks.yaml").write_text(FAILING.format(runbook_id="breaks"))
    (folder / "runbooks" / "plain.yaml").write_text(PLAIN.format(runbook_id="plain"))
    with environment_variables(values):
        yield folder


@pytest.fixture(scope="module")
def gateway(environment: Path) -> Iterator[Gateway]:
    with gateway_from_settings() as service:
        yield service


@pytest.fixture(scope="module")
def server(gateway: Gateway) -> Iterator[GatewayServer]:
    with GatewayServer(gateway.app, settings=gateway.settings.gateway) as running:
        yield running


@pytest.fixture
def journal(environment: Path) -> Iterator[Journal]:
    with settings_journal() as opened:
        yield opened
