"""Set-up shared by the tests that run the gateway against the fake Slack and Jira.

Runs read their settings from the environment (a run started by the gateway reads them
as `tocsin run` would), so a module sets ``TOCSIN_*`` variables for its lifetime and
puts them back afterwards.

The fixtures below are the same in every gateway module: a module imports the ones it uses
(``from tests.gateway_support import gateway, server  # noqa: F401``) and defines its own
``environment`` (its settings, from ``service_settings``) and, for ``slack_user``, its own
``slack``. Each fake and server is started once per module.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tocsin.gateway import Gateway, GatewayServer
from tocsin.integrations.jira.fake import (
    SANDBOX_JIRA_TOKEN,
    SANDBOX_JIRA_USER,
    SANDBOX_JIRA_WEBHOOK_SECRET,
    FakeJira,
)
from tocsin.integrations.slack.fake import SANDBOX_BOT_TOKEN, FakeSlack
from tocsin.integrations.slack.simulated_user import SimulatedSlack
from tocsin.journal import Journal
from tocsin.settings import load_settings

SIGNING_SECRET_VARIABLE = "TOCSIN_SECRET_SLACK_SIGNING_SECRET"
"""Where ``service_settings`` puts the Slack signing secret the gateway checks clicks with."""


def service_settings(
    folder: Path,
    *,
    signing_secret: str,
    slack: FakeSlack | None = None,
    jira: FakeJira | None = None,
) -> dict[str, str]:
    """The ``TOCSIN_*`` variables of a data folder in ``folder``, runbooks in
    ``folder/runbooks``, and the fakes given."""
    values = {
        "TOCSIN_DATA_DIR": str(folder / "data"),
        "TOCSIN_RUNBOOK_PATHS": json.dumps([str(folder / "runbooks")]),
        SIGNING_SECRET_VARIABLE: signing_secret,
    }
    if slack is not None:
        values.update(
            {
                "TOCSIN_SLACK__API_URL": f"{slack.url}/api/",
                "TOCSIN_ANNOUNCE__PROGRESS_EVERY_SECONDS": "0",
                "TOCSIN_SECRET_SLACK_BOT_TOKEN": SANDBOX_BOT_TOKEN,
            }
        )
    if jira is not None:
        values.update(
            {
                "TOCSIN_JIRA__URL": jira.url,
                "TOCSIN_JIRA__USER": SANDBOX_JIRA_USER,
                "TOCSIN_SECRET_JIRA_API_TOKEN": SANDBOX_JIRA_TOKEN,
                "TOCSIN_SECRET_JIRA_WEBHOOK_SECRET": SANDBOX_JIRA_WEBHOOK_SECRET,
            }
        )
    (folder / "runbooks").mkdir(exist_ok=True)
    return values


@contextmanager
def environment_variables(values: Mapping[str, str]) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` for the block, then restore what was there."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def settings_journal() -> Iterator[Journal]:
    """The journal the current settings name, closed afterwards."""
    from tocsin.running import journal_for

    opened = journal_for(load_settings())
    try:
        yield opened
    finally:
        opened.close()


@contextmanager
def gateway_from_settings() -> Iterator[Gateway]:
    """A gateway built from the current settings, with the Jira they name (closed afterwards)."""
    from tocsin.integration import ticket_system
    from tocsin.settings import EnvironmentSecrets

    settings = load_settings()
    tickets = ticket_system(settings, EnvironmentSecrets())
    gateway = Gateway(settings, tickets=tickets)
    try:
        yield gateway
    finally:
        gateway.close()


# -- fixtures (each module brings its own ``environment``, and ``slack`` for ``slack_user``) --


@pytest.fixture(scope="module")
def jira() -> Iterator[FakeJira]:
    with FakeJira() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(environment: Path) -> Iterator[Gateway]:
    """The gateway the module's settings describe (``environment`` has set them)."""
    with gateway_from_settings() as service:
        yield service


@pytest.fixture(scope="module")
def server(gateway: Gateway) -> Iterator[GatewayServer]:
    """The gateway serving HTTP on loopback, with the module's gateway settings."""
    with GatewayServer(gateway.app, settings=gateway.settings.gateway) as running:
        yield running


@pytest.fixture(scope="module")
def slack_user(server: GatewayServer, slack: FakeSlack) -> Iterator[SimulatedSlack]:
    """Slack's people clicking in the fake Slack, their requests signed with the module's
    signing secret and sent to ``server``."""
    secret = os.environ[SIGNING_SECRET_VARIABLE]
    with SimulatedSlack(server.url, secret, fake_slack=slack) as simulated:
        yield simulated


@pytest.fixture
def journal(environment: Path) -> Iterator[Journal]:
    """The journal the module's settings name, closed after the test."""
    with settings_journal() as opened:
        yield opened


def open_journal_gate(
    journal: Journal, ticket: str, runbook_id: str, approvers: list[str]
) -> tuple[int, str]:
    """A run waiting at gate ``approve`` in the journal alone (no flow, so nothing applies
    the decisions and every approval stays pending; the quorum is all of ``approvers``):
    its run id and the gate's hash."""
    from tocsin.gates import WaitRequest, gate_hash
    from tocsin.journal import now

    run, _ = journal.open_run(
        incident=ticket,
        runbook_id=runbook_id,
        runbook_version="1",
        runbook_digest="0" * 64,
        inputs={},
        requested_by="U0REQUESTER",
        requested_via="test",
    )
    request = WaitRequest(
        kind="approval",
        prompt="Go?",
        deadline=now().replace(year=now().year + 1).isoformat(),
        requester="U0REQUESTER",
        gate_hash=gate_hash("0" * 64, "approve", {}),
        approvers=approvers,
        group="leads",
        quorum=len(approvers),
    )
    journal.set_step(
        run.id, "approve", status="waiting", request=request.as_data(), waiting_since=now()
    )
    journal.set_run(run.id, status="waiting")
    journal.record(ticket, "approval.requested", run_id=run.id, step_id="approve")
    return run.id, request.gate_hash


# -- `tocsin gateway` as a subprocess ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RunningGateway:
    """A ``tocsin gateway`` subprocess (``running_gateway``); ``output``: what it printed,
    once it has ended."""

    process: subprocess.Popen[str]
    url: str
    output: str = ""

    def health(self) -> dict[str, object] | None:
        try:
            answer = httpx.get(f"{self.url}/healthz", timeout=5)
        except httpx.TransportError:
            return None
        return dict(answer.json()) if answer.status_code == 200 else None

    def judge_pid(self) -> int:
        """Its judging process (``tocsin.gateway.judging_process``): its one spawned child."""
        children: list[int] = []
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            children.extend(int(pid) for pid in (task / "children").read_text().split())
        judges = [pid for pid in children if "spawn_main" in command_line(pid)]
        assert len(judges) == 1, f"the gateway's children: {children}"
        return judges[0]


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


@contextmanager
def running_gateway(prefect_server: str) -> Iterator[RunningGateway]:
    """``tocsin gateway`` in live mode on this process's settings (the test's fakes and
    journal) and the session's Prefect server, once it answers and its judge is ready; at
    the end, its process group (the gateway and its judge) is killed if still there."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tocsin", "gateway", "--port", str(port)],
        # live: the gateway uses the test's fake Slack and journal, not a sandbox of its own
        env={**os.environ, "TOCSIN_PREFECT_API_URL": prefect_server, "TOCSIN_MODE": "live"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the gateway and its judging process
    )
    gateway = RunningGateway(process, f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while process.poll() is None and not (gateway.health() or {}).get("judging"):
            assert time.monotonic() < deadline, "the gateway and its judge did not start in 60 s"
            time.sleep(0.2)
        assert process.poll() is None, f"the gateway ended: {process.communicate()[0]}"
        yield gateway
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if process.stdout is not None and not process.stdout.closed:  # not read by the test
            gateway.output += process.communicate(timeout=10)[0]
        process.wait(10)
