"""The Prefect server restarted while runs are paused at gates: a decision made during the
outage is journalled and applied when the server is back, one made after the restart too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cli_runner import ROOT, run_tocsin, start_tocsin_run
from tests.engine_actions import calls
from tests.engine_support import settings_journal, wait_until
from tests.fault_support import finished, three_steps
from tests.gateway_support import free_port
from tocsin.decisions import Delivery, deliver_decision, submit
from tocsin.embedded import prefect_pointed_at
from tocsin.journal import Journal
from tocsin.running import audit_key_for
from tocsin.settings import load_settings
from tocsin.statuses import DecisionStatus, StepStatus

pytestmark = pytest.mark.slow

RUNBOOK = three_steps(
    """\
  - id: gate
    title: Approve
    approval: {{approvers: leads, quorum: 1, prompt: "Go?", timeout: 30m, on_timeout: abort}}
"""
)


class PrefectServer:
    """A Prefect server of this test's own, stopped and started again on one port and database."""

    def __init__(self, home: Path, database_url: str, port: int | None = None) -> None:
        self.home = home
        self.database_url = database_url
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.process: subprocess.Popen[bytes] | None = None

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PREFECT_HOME": str(self.home),
            "PREFECT_API_URL": self.url,
            "PREFECT_API_DATABASE_CONNECTION_URL": self.database_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_DATABASE_TIMEOUT": "30",
        }
        with (self.home / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
                + ["--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        wait_until(self.healthy, timeout=180, what=f"the Prefect server on port {self.port}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        wait_until(lambda: not self.healthy(), timeout=10, what="the server to be down")


def runs_talk_to(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """Runs (in this process, and `tocsin` subprocesses) use the Prefect server at ``url``,
    with the tests' actions."""
    monkeypatch.setenv("TOCSIN_ACTION_MODULES", '["tests.engine_actions"]')
    monkeypatch.setenv("TOCSIN_PREFECT_API_URL", url)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    )


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[PrefectServer]:
    home = tmp_path / "prefect"
    started = PrefectServer(home, f"sqlite+aiosqlite:///{home / 'prefect.db'}")
    started.start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture()
def journal(monkeypatch: pytest.MonkeyPatch, server: PrefectServer) -> Iterator[Journal]:
    runs_talk_to(monkeypatch, server.url)
    opened = settings_journal()
    yield opened
    opened.close()


def paused_run(
    journal: Journal, tmp_path: Path, name: str, number: int
) -> tuple[str, Path, subprocess.Popen[str]]:
    """A `tocsin run` of the gated runbook, waiting at its gate."""
    state = tmp_path / name
    state.mkdir()
    runbook = state / f"{name}.yaml"
    runbook.write_text(RUNBOOK.format(runbook_id=name))
    ticket = f"RESTART-{number}"
    process = start_tocsin_run(runbook, ticket, state)

    def waiting() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"{name} ended early: {finished(process, 10)}")
        run = journal.find_run(ticket, name)
        step = journal.step(run.id, "gate") if run else None
        return step is not None and step.status == StepStatus.WAITING

    wait_until(waiting, timeout=90, what=f"{name} to wait at its gate")
    return ticket, state, process


def noticed(journal: Journal, ticket: str) -> None:
    """Wait until the paused run has seen that its server is gone (within seconds)."""
    wait_until(
        lambda: any(e["kind"] == "prefect.unreachable" for e in journal.events_of(ticket)),
        timeout=60,
        what=f"the run of {ticket} to notice that the Prefect server is gone",
    )


def test_decisions_made_during_and_after_a_server_restart_resume_the_paused_runs(
    journal: Journal, server: PrefectServer, tmp_path: Path
) -> None:
    during, during_state, during_process = paused_run(journal, tmp_path, "during", 1)
    after, after_state, after_process = paused_run(journal, tmp_path, "after", 2)
    click, click_state, click_process = paused_run(journal, tmp_path, "click", 4)
    try:
        server.stop()
        # A Slack click, as the gateway handles it: journalled and answered, then delivered.
        with prefect_pointed_at(load_settings(), server.url):
            clicked = submit(
                journal, incident=click, step_id="gate", kind="approve", actor="U0LEAD3",
                channel="slack", deliver=False,
            )  # fmt: skip
            assert clicked.run is not None
            delivery = deliver_decision(journal, clicked.run, clicked.decision, wait=False)
        assert delivery == Delivery.UNREACHABLE
        approved = run_tocsin("approve", during, "gate", "--as", "U0LEAD1", timeout=90)
        assert approved.returncode == 0, approved.stderr
        assert "when the Prefect server is back" in approved.stdout, approved.stdout
        assert "Traceback" not in approved.stderr
        run = journal.find_run(during, "during")
        assert run is not None
        [decision] = journal.decisions_of(run.id, "gate")
        assert (decision.actor, decision.status) == ("U0LEAD1", DecisionStatus.PENDING)  # queued
        assert calls(during_state / "last") == []  # nothing goes on without the server
        for ticket in (during, after, click):
            noticed(journal, ticket)

        server.start()
        output = finished(during_process, timeout=180)
        assert during_process.returncode == 0, output
        assert journal.decision(decision.id).status == DecisionStatus.APPLIED  # type: ignore[union-attr]
        assert "does not answer" in output and "the Prefect server is back" in output, output
        output_click = finished(click_process, timeout=180)
        assert click_process.returncode == 0, output_click
        assert journal.decision(clicked.decision.id).status == DecisionStatus.APPLIED  # type: ignore[union-attr]

        approved_after = run_tocsin("approve", after, "gate", "--as", "U0LEAD2", timeout=90)
        assert approved_after.returncode == 0, approved_after.stderr
        output_after = finished(after_process, timeout=180)
        assert after_process.returncode == 0, output_after
    finally:
        for process in (during_process, after_process, click_process):
            if process.poll() is None:
                process.kill()
                process.communicate()
    for ticket, state in ((during, during_state), (after, after_state), (click, click_state)):
        assert len(calls(state / "first")) == 1
        assert len(calls(state / "last")) == 1  # once, never twice
        key = audit_key_for(load_settings())
        assert key is not None
        assert journal.verify(ticket, key.public_key).ok
        kinds = [event["kind"] for event in journal.events_of(ticket)]
        assert kinds.count("prefect.unreachable") == kinds.count("prefect.reachable") == 1, kinds
        assert kinds.count("decision.applied") == 1


@pytest.fixture()
def prefect_database() -> Iterator[str]:
    """A throwaway database on the local PostgreSQL for two Prefect servers, dropped after."""
    from sqlalchemy import create_engine, text

    name = f"tocsin_prefect_{uuid.uuid4().hex[:12]}"
    admin = create_engine(
        "postgresql+psycopg://root@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT"
    )
    try:
        with admin.connect() as db:
            db.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001
        admin.dispose()
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is needed for this test: {exc}")
    try:
        yield f"postgresql+asyncpg://root@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as db:
            db.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.postgres
def test_one_of_two_servers_stopped_a_decision_through_the_other_is_applied(
    prefect_database: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    first = PrefectServer(tmp_path / "prefect-a", prefect_database)
    second = PrefectServer(tmp_path / "prefect-b", prefect_database)
    try:
        first.start()  # brings the database's tables up to date, then the other joins
        second.start()
        runs_talk_to(monkeypatch, first.url)
        journal = settings_journal()
        try:
            ticket, state, process = paused_run(journal, tmp_path, "two", 3)
            try:
                first.stop()  # the server this run talks to
                approved = run_tocsin(
                    "approve", ticket, "gate", "--as", "U0LEAD3",
                    env={"TOCSIN_PREFECT_API_URL": second.url}, timeout=90,
                )  # fmt: skip
                assert approved.returncode == 0, approved.stderr
                assert "recorded" in approved.stdout, approved.stdout
                run = journal.find_run(ticket, "two")
                assert run is not None
                [decision] = journal.decisions_of(run.id, "gate")
                assert calls(state / "last") == []  # its run waits for its own server
                noticed(journal, ticket)

                first.start()
                output = finished(process, timeout=180)
                assert process.returncode == 0, output
            finally:
                if process.poll() is None:
                    process.kill()
                    process.communicate()
            assert journal.decision(decision.id).status == DecisionStatus.APPLIED  # type: ignore[union-attr]
            assert len(calls(state / "first")) == 1 and len(calls(state / "last")) == 1
            kinds = [event["kind"] for event in journal.events_of(ticket)]
            assert "prefect.unreachable" in kinds and kinds.count("decision.applied") == 1
            key = audit_key_for(load_settings())
            assert key is not None
            assert journal.verify(ticket, key.public_key).ok
        finally:
            journal.close()
    finally:
        second.stop()
        first.stop()
