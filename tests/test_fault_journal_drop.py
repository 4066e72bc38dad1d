"""The journal's PostgreSQL stopped while a step runs: the step's record cannot be written,
so nothing goes on without it; the run stops with a Tocsin message, and `tocsin run` again
resumes it once the database is back, every step done once, the chain intact."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_runner import run_tocsin, start_tocsin_run
from tests.engine_actions import calls
from tests.engine_support import wait_until
from tests.fault_support import finished, three_steps
from tests.gateway_support import free_port
from tocsin.journal import Journal
from tocsin.running import audit_key_for
from tocsin.settings import load_settings

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

BIN = Path("/usr/lib/postgresql/15/bin")
RUNBOOK = three_steps(
    """\
  - id: slow
    title: Slow, during which the database goes away
    action: test.sleep_reconciled
    with: {{seconds: 4, file: "{{{{ inputs.state }}}}/slow"}}
""",
    last_title="Last, destructive",
)


class ThrowawayPostgres:
    """A PostgreSQL cluster of this test's own, in a temporary folder, on a free port."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="tocsin-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self.dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        # PostgreSQL refuses to run as root: then as its own user, which owns the folder.
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.folder, "postgres", "postgres")

    def _pg(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.as_user, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
            cwd=self.folder,
        )

    def initdb(self) -> None:
        self._pg(str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-N")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg(
            str(BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.folder / "log"),
            "-o",
            options,
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._pg(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def remove(self) -> None:
        if self.running():
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture()
def postgres() -> Iterator[ThrowawayPostgres]:
    if not (BIN / "initdb").exists():
        pytest.fail(f"PostgreSQL 15 is needed for this test ({BIN} has no initdb)")
    cluster = ThrowawayPostgres()
    try:
        cluster.initdb()
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture()
def journal(
    prefect_server: str, postgres: ThrowawayPostgres, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Journal]:
    monkeypatch.setenv("TOCSIN_JOURNAL_URL", postgres.url)
    from tests.engine_support import settings_journal

    opened = settings_journal()
    yield opened
    opened.close()


def drop_in_the_middle_of_the_write(postgres: ThrowawayPostgres) -> None:
    """Hold the steps table so that the step's record waits, then stop the server under it."""
    import psycopg

    holder = psycopg.connect(postgres.dsn)
    watcher = psycopg.connect(postgres.dsn, autocommit=True)
    try:
        holder.execute("LOCK TABLE steps IN EXCLUSIVE MODE")  # reads go on, writes wait

        def waiting_writes() -> int:
            found = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            ).fetchone()
            return int(found[0]) if found else 0

        wait_until(waiting_writes, timeout=30, what="the step's record to be written")
        postgres.stop("immediate")
    finally:
        holder.close()
        watcher.close()


@pytest.mark.parametrize("when", ["between two writes", "in the middle of the write"])
def test_a_step_whose_record_cannot_be_written_stops_the_run_until_the_database_is_back(
    journal: Journal, postgres: ThrowawayPostgres, tmp_path: Path, when: str
) -> None:
    runbook = tmp_path / "journal-drop.yaml"
    runbook.write_text(RUNBOOK.format(runbook_id=runbook.stem))
    ticket = f"DROP-{uuid.uuid4().int % 10**9}"
    process = start_tocsin_run(runbook, ticket, tmp_path)
    try:
        wait_until(
            lambda: any(line.startswith("start") for line in calls(tmp_path / "slow")),
            timeout=90,
            what="the slow step to start",
        )
        journal.close()  # the test's own connections go with the database
        if when == "between two writes":
            postgres.stop("immediate")  # the connection drops; `slow` ends and cannot say so
        else:
            drop_in_the_middle_of_the_write(postgres)
        output, _ = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode != 0, output
    assert "Traceback" not in output, output
    assert "cannot be reached" in output and "tocsin run" in output, output
    assert [line.split()[0] for line in calls(tmp_path / "slow")] == ["start", "end"]
    assert calls(tmp_path / "last") == []  # nothing went on without the record

    postgres.start()
    # The record being written when the connection dropped was not kept, nor half of it.
    run = journal.find_run(ticket, runbook.stem)
    assert run is not None
    assert journal.step(run.id, "slow").status == "running"  # type: ignore[union-attr]
    assert journal.step(run.id, "last") is None
    kinds = [(e["kind"], e["step_id"]) for e in journal.events_of(ticket)]
    assert ("step.started", "slow") in kinds and ("step.succeeded", "slow") not in kinds
    # What the service did, as the step's read-back finds it: the call ended once.
    (tmp_path / "slow.readback").write_text("took 1")
    again = start_tocsin_run(runbook, ticket, tmp_path)
    output = finished(again, timeout=120)
    assert again.returncode == 0, output
    assert "resuming the earlier run" in output
    assert len(calls(tmp_path / "first")) == 1
    assert [line.split()[0] for line in calls(tmp_path / "slow")] == ["start", "end"]  # once
    assert len(calls(tmp_path / "last")) == 1
    verified = run_tocsin("audit", "verify", ticket)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    key = audit_key_for(load_settings())
    assert key is not None
    assert journal.verify(ticket, key.public_key).ok
