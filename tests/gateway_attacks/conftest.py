"""A real gateway on loopback for each attack module: its settings in the environment (a
run reads them there), a fake Jira, the server; each started once per module (the fixtures
other than ``environment`` are the gateway modules' shared ones, ``tests.gateway_support``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import gateway_support
from tests.gateway_attacks.support import FAILING, PLAIN, SIGNING_SECRET
from tests.gateway_support import environment_variables, service_settings
from tocsin.integrations.jira.fake import FakeJira

# The gateway modules' shared fixtures (tests.gateway_support), each started once per module.
gateway = gateway_support.gateway
jira = gateway_support.jira
journal = gateway_support.journal
server = gateway_support.server


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
