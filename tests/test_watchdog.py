"""The watchdog: `tocsin status --stuck` and the ``watchdog`` flow find a gate past its
deadline, a run whose process was killed, a regulatory clock about to expire, and leave a
healthy waiting run alone; the flow posts each finding once, to the incident's thread and
the on-call channel, and the audit chain still verifies. (What it finds from the journal
alone, with no run: tests/test_watchdog_findings.py.)"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.cli_runner import ROOT, TOCSIN, run_tocsin
from tests.engine_support import wait_until
from tests.gateway_support import environment_variables
from tests.test_watchdog_findings import open_cli_run
from tocsin.audit import AuditKey
from tocsin.gates import WaitRequest
from tocsin.integrations.slack.fake import SANDBOX_BOT_TOKEN, FakeSlack, SlackChannel
from tocsin.journal import Journal, RunRecord
from tocsin.running import journal_for
from tocsin.settings import StaticSecrets, load_settings, with_values
from tocsin.watchdog import (
    FOUND_KIND,
)

pytestmark = pytest.mark.slow

RUNBOOK = """\
runbook: {runbook_id}
version: 1
title: Watchdog test
summary: A runbook the watchdog tests run
severity: high
sources: [{{title: Test, document: test.txt}}]
inputs:
  office: {{type: string, description: The office}}
approver_groups:
  leads: {{users: [U0LEAD1, U0LEAD2]}}
{clocks}
steps:
  - {{id: first, title: First, action: log, with: {{message: "hello {{{{ inputs.office }}}}"}}}}
{waiting}
  - {{id: last, title: Last, action: log, with: {{message: bye}}}}
"""
GATE = """\
  - id: gate
    title: Go ahead?
    approval: {{approvers: leads, prompt: "Isolate {{{{ inputs.office }}}}?", timeout: {timeout}}}
"""
CLOCK = """\
clocks:
  authority:
    title: Notify the data-protection authority
    deadline: 72h
    starts: detected
    stopped_by: notify
    source: GDPR art. 33(1)
"""
MANUAL = """\
  - id: notify
    title: Notify the authority
    manual: {assignee: leads, instructions: Send the notification form.}
    timeout: 1h
"""


@pytest.fixture(scope="module")
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(
        channels=(
            SlackChannel("C0INCIDENTS", "support-incidents"),
            SlackChannel("C0ONCALL", "support-oncall"),
        )
    ) as fake:
        yield fake


@pytest.fixture(scope="module")
def environment(
    prefect_server: str, slack: FakeSlack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """Live settings: a journal of this module's own, Slack's incident channel and the
    on-call channel on the fake Slack; the session's Prefect server and data folder."""
    folder = tmp_path_factory.mktemp("watchdog")
    (folder / "runbooks").mkdir()
    values = {
        "TOCSIN_MODE": "live",
        "TOCSIN_JOURNAL_URL": f"sqlite:///{folder / 'journal.db'}",
        "TOCSIN_RUNBOOK_PATHS": json.dumps([str(folder / "runbooks")]),
        "TOCSIN_SLACK__API_URL": f"{slack.url}/api/",
        "TOCSIN_SLACK__INCIDENT_CHANNEL": "#support-incidents",
        "TOCSIN_SECRET_SLACK_BOT_TOKEN": SANDBOX_BOT_TOKEN,
        "TOCSIN_ANNOUNCE__PROGRESS_EVERY_SECONDS": "0",
        "TOCSIN_WATCHDOG__ONCALL_CHANNEL": "#support-oncall",
        "TOCSIN_WATCHDOG__GATE_GRACE_SECONDS": "1",
    }
    with environment_variables(values):
        key_path = load_settings().audit_key_path
        if not key_path.exists():
            AuditKey.generate(key_path)  # live runs sign their trail
        yield folder


@pytest.fixture(scope="module")
def journal(environment: Path) -> Iterator[Journal]:
    opened = journal_for(load_settings())
    yield opened
    opened.close()


def write_runbook(environment: Path, runbook_id: str, *, waiting: str, clocks: str = "") -> Path:
    path = environment / "runbooks" / f"{runbook_id}.yaml"
    path.write_text(RUNBOOK.format(runbook_id=runbook_id, waiting=waiting, clocks=clocks))
    return path


def start_run(runbook: Path, ticket: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(TOCSIN), "run", str(runbook), "--ticket", ticket, "--as", "U0REQUESTER"]
        + ["--set", "office=OF-1042", *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> None:
    """End ``process`` if it still runs (woken first, if it was frozen)."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGCONT)
        process.kill()
        process.wait(timeout=30)
    if process.stdout is not None and not process.stdout.closed:
        process.stdout.close()


def waiting_at(journal: Journal, slack: FakeSlack, ticket: str, runbook_id: str, step: str) -> Any:
    """Wait until the run waits at ``step`` and its message is in the incident thread."""

    def shown() -> WaitRequest | None:
        run = journal.find_run(ticket, runbook_id)
        record = journal.step(run.id, step) if run else None
        if record is None or record.status != "waiting" or record.request is None:
            return None
        posted = [m for m in slack.messages if m.thread_ts and ticket in (m.text or "")]
        return WaitRequest.from_data(record.request) if posted else None

    return wait_until(shown, timeout=120, what=f"{ticket} to wait at {step}")


@dataclass(frozen=True)
class WaitingRun:
    runbook: Path
    process: subprocess.Popen[str]
    request: WaitRequest


@contextmanager
def waiting_run(
    environment: Path,
    journal: Journal,
    slack: FakeSlack,
    ticket: str,
    runbook_id: str,
    step: str,
    *extra: str,
    waiting: str,
    clocks: str = "",
) -> Iterator[WaitingRun]:
    """The runbook written, `tocsin run` started and waiting at ``step`` (its message in the
    incident thread); the process ended afterwards."""
    runbook = write_runbook(environment, runbook_id, waiting=waiting, clocks=clocks)
    process = start_run(runbook, ticket, *extra)
    try:
        yield WaitingRun(runbook, process, waiting_at(journal, slack, ticket, runbook_id, step))
    finally:
        stop(process)


def stale_heartbeat(journal: Journal, ticket: str, runbook_id: str, seconds: float) -> RunRecord:
    """The run, once its last heartbeat is more than ``seconds`` old."""
    run = journal.find_run(ticket, runbook_id)
    assert run is not None and run.heartbeat_at is not None
    beat = run.heartbeat_at
    wait_until(
        lambda: datetime.now(UTC) - beat > timedelta(seconds=seconds),
        what="the heartbeat to go stale",
    )
    return run


def freeze(process: subprocess.Popen[str], database: Path) -> None:
    """SIGSTOP ``process`` outside any write of its to the journal (a frozen writer would hold
    SQLite's lock): stopped, then the lock is tried; if it is held, woken and tried again."""

    def lock_free() -> bool:
        probe = sqlite3.connect(database, timeout=0.2)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.rollback()
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            probe.close()

    for _ in range(20):
        os.kill(process.pid, signal.SIGSTOP)
        if lock_free():
            return
        os.kill(process.pid, signal.SIGCONT)
        wait_until(lock_free, timeout=10, what="the run to finish its write")
    raise AssertionError("the run's process always held the journal's write lock")


def stuck(ticket: str, **env: str) -> tuple[int, list[dict[str, Any]]]:
    """`tocsin status TICKET --stuck --json`: its exit code and findings."""
    result = run_tocsin("status", ticket, "--stuck", "--json", env=env)
    assert result.returncode in (0, 1), result.stderr
    data = json.loads(result.stdout)
    assert data["stuck"] == len(data["findings"])
    return result.returncode, data["findings"]


def run_watchdog(**env: str) -> dict[str, Any]:
    """One pass of the ``watchdog`` flow, in this process, on the session's Prefect server."""
    from tocsin.flows.watchdog import watchdog

    with environment_variables(env):
        result = watchdog()
    assert isinstance(result, dict)
    return result


def posted_about(slack: FakeSlack, ticket: str) -> tuple[list[Any], list[Any]]:
    """The watchdog's messages about ``ticket``: in its incident thread, in the on-call channel."""
    thread = [
        m
        for m in slack.messages
        if m.channel == "C0INCIDENTS" and m.thread_ts and "Watchdog" in (m.text or "")
    ]
    thread = [m for m in thread if ticket in json.dumps(m.blocks)]
    oncall = [m for m in slack.messages if m.channel == "C0ONCALL" and ticket in (m.text or "")]
    return thread, oncall


def found_records(journal: Journal, ticket: str) -> list[dict[str, Any]]:
    return [e for e in journal.events_of(ticket) if e["kind"] == FOUND_KIND]


def verify(ticket: str) -> None:
    verified = run_tocsin("audit", "verify", ticket)
    assert verified.returncode == 0, verified.stdout + verified.stderr


# -- a gate past its deadline ------------------------------------------------------------------


def test_a_gate_past_its_deadline_is_found_and_posted_once_to_the_thread_and_on_call(
    environment: Path, journal: Journal, slack: FakeSlack
) -> None:
    ticket, runbook_id = "WD-1", "wd-gate"
    gate = GATE.format(timeout="12s")
    with waiting_run(
        environment, journal, slack, ticket, runbook_id, "gate", waiting=gate
    ) as started:
        # A hung process: alive, but it does not close the gate at its deadline.
        freeze(started.process, environment / "journal.db")
        overdue = started.request.deadline_at + timedelta(seconds=1.5)
        wait_until(lambda: datetime.now(UTC) > overdue, timeout=30, what="the deadline to pass")

        code, findings = stuck(ticket)
        assert code == 1
        assert [(f["kind"], f["step"]) for f in findings] == [("gate_overdue", "gate")]
        (finding,) = findings
        assert finding["incident"] == ticket and finding["runbook"] == runbook_id
        assert finding["command"] == f"tocsin status {ticket}"
        assert finding["deadline"] == started.request.deadline_at.isoformat()
        assert f"`tocsin run {runbook_id} --ticket {ticket}" in finding["what_to_do"]
        shown = run_tocsin("status", ticket, "--stuck")
        assert shown.returncode == 1
        assert f"gate_overdue  {ticket}  {runbook_id} gate" in shown.stdout
        assert "to do: Check the process running it" in shown.stdout

        first = run_watchdog()
        assert finding["key"] in [p["key"] for p in first["posted"]]
        thread, oncall = posted_about(slack, ticket)
        assert len(thread) == 1 and len(oncall) == 1
        (header,) = [m for m in slack.messages if m.ts == thread[0].thread_ts]
        assert ticket in (header.text or "")  # the incident's own thread
        assert f"tocsin status {ticket}" in json.dumps(thread[0].blocks)
        assert "gate" in (oncall[0].text or "")
        assert (oncall[0].text or "").endswith(f"Fix:\n`tocsin status {ticket}`")

        second = run_watchdog()
        assert finding["key"] not in [p["key"] for p in second["posted"]]
        assert posted_about(slack, ticket) == (thread, oncall)  # nothing said twice
        (record,) = found_records(journal, ticket)
        assert record["step_id"] == "gate" and record["actor"] == "watchdog"
        assert record["data"]["key"] == finding["key"]
        assert len(record["data"]["posted"]) == 2
        verify(ticket)

        # Woken, the run applies the gate's timeout itself; the trail still verifies.
        os.kill(started.process.pid, signal.SIGCONT)
        output, _ = started.process.communicate(timeout=90)
        assert started.process.returncode == 1, output
    run = journal.find_run(ticket, runbook_id)
    assert run is not None and run.status == "timed_out"
    assert stuck(ticket) == (0, [])
    verify(ticket)


# -- a run whose process was killed -----------------------------------------------------------


def test_a_killed_run_is_found_dead_once_its_heartbeat_is_stale_and_its_command_resumes_it(
    environment: Path, journal: Journal, slack: FakeSlack
) -> None:
    ticket, runbook_id = "WD-2", "wd-dead"
    gate = GATE.format(timeout="1h")
    with waiting_run(
        environment, journal, slack, ticket, runbook_id, "gate", waiting=gate
    ) as started:
        os.kill(started.process.pid, signal.SIGKILL)
        started.process.wait(timeout=10)
    # Its last heartbeat is a few seconds old: not dead yet by the default 30 s.
    assert stuck(ticket) == (0, [])

    stale = {"TOCSIN_WATCHDOG__STALE_AFTER_SECONDS": "2"}
    run = stale_heartbeat(journal, ticket, runbook_id, 2.5)
    beat = run.heartbeat_at
    assert beat is not None
    code, findings = stuck(ticket, **stale)
    assert code == 1
    assert [(f["kind"], f["step"]) for f in findings] == [("run_dead", "gate")]
    (finding,) = findings
    command = f"tocsin run {runbook_id} --ticket {ticket} --set office=OF-1042 --as YOUR_SLACK_ID"
    assert finding["command"] == command
    assert run.owner is not None and run.owner in finding["summary"]
    assert finding["since"] == beat.isoformat()

    posted = run_watchdog(**stale)
    assert finding["key"] in [p["key"] for p in posted["posted"]]
    thread, oncall = posted_about(slack, ticket)
    assert len(thread) == 1 and len(oncall) == 1
    assert (oncall[0].text or "").endswith(f"Fix:\n`{command}`")  # as written: copied from there
    assert finding["key"] not in [p["key"] for p in run_watchdog(**stale)["posted"]]
    assert len(found_records(journal, ticket)) == 1

    # The command given, with a real Slack id, continues the run; approved, it ends.
    again = start_run(started.runbook, ticket)
    try:
        wait_until(
            lambda: (
                (found := journal.find_run(ticket, runbook_id)) is not None
                and found.owner != run.owner
                and (step := journal.step(found.id, "gate")) is not None
                and step.status == "waiting"
            ),
            timeout=120,
            what="the resumed run to wait at its gate",
        )
        assert stuck(ticket, **stale) == (0, [])  # alive again
        approved = run_tocsin("approve", ticket, "gate", "--as", "U0LEAD1")
        assert approved.returncode == 0, approved.stderr
        output, _ = again.communicate(timeout=90)
        assert again.returncode == 0, output
        assert "resuming the earlier run" in output
    finally:
        stop(again)
    verify(ticket)


# -- a regulatory clock, and a healthy run -----------------------------------------------------


def test_a_clock_about_to_expire_is_found_with_the_command_that_stops_it(
    environment: Path, journal: Journal, slack: FakeSlack
) -> None:
    ticket, runbook_id = "WD-3", "wd-clock"
    detected = datetime.now(UTC) - timedelta(hours=71, minutes=50)  # 10 minutes left
    with waiting_run(
        environment, journal, slack, ticket, runbook_id, "notify",
        "--detected-at", detected.isoformat(), waiting=MANUAL, clocks=CLOCK,
    ) as started:  # fmt: skip
        code, findings = stuck(ticket)
        assert code == 1
        assert [(f["kind"], f["clock"], f["step"]) for f in findings] == [
            ("clock_expiring", "authority", "notify")
        ]
        (finding,) = findings
        assert finding["deadline"] == (detected + timedelta(hours=72)).isoformat()
        assert "expires in 9 min" in finding["summary"] or "expires in 10 min" in finding["summary"]
        assert finding["command"] == f"tocsin done {ticket} notify --as YOUR_SLACK_ID"
        assert finding["what_to_do"].startswith("Notify the data-protection authority before")
        # Not reported while it is far: the warning window is shorter than the time left.
        assert stuck(ticket, TOCSIN_WATCHDOG__CLOCK_WARNING_SECONDS="300") == (0, [])

        done = run_tocsin("done", ticket, "notify", "--as", "U0LEAD1")
        assert done.returncode == 0, done.stderr
        output, _ = started.process.communicate(timeout=90)
        assert started.process.returncode == 0, output
    assert stuck(ticket) == (0, [])  # the clock is stopped (met)


def test_a_healthy_waiting_run_is_not_reported(
    environment: Path, journal: Journal, slack: FakeSlack
) -> None:
    ticket, runbook_id = "WD-4", "wd-healthy"
    gate = GATE.format(timeout="1h")
    with waiting_run(environment, journal, slack, ticket, runbook_id, "gate", waiting=gate):
        stale = {"TOCSIN_WATCHDOG__STALE_AFTER_SECONDS": "1"}
        # Even past a very short stale threshold: its process is alive on this machine.
        stale_heartbeat(journal, ticket, runbook_id, 1.5)
        assert stuck(ticket, **stale) == (0, [])
        shown = run_tocsin("status", ticket, "--stuck", env=stale)
        assert shown.returncode == 0 and shown.stdout.strip() == f"nothing stuck for {ticket}"
        assert posted_about(slack, ticket) == ([], [])


# -- its deployment ----------------------------------------------------------------------------


def test_prefect_yaml_deploys_the_watchdog_every_minute_one_pass_at_a_time(
    prefect_server: str,
) -> None:
    from prefect.client.orchestration import get_client

    from tocsin.embedded import prefect_environment

    prefect = TOCSIN.parent / "prefect"
    env = {**os.environ, **prefect_environment(load_settings(), prefect_server), "PWD": str(ROOT)}
    for command in (
        ["work-pool", "create", "tocsin", "--type", "process"],  # refused if it exists: fine
        ["--no-prompt", "deploy", "--name", "tocsin-watchdog"],
    ):
        done = subprocess.run(
            [str(prefect), *command],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("watchdog/tocsin-watchdog")
        try:
            assert deployment.entrypoint == "flows/watchdog.py:watchdog"
            assert deployment.work_pool_name == "tocsin"
            (schedule,) = deployment.schedules
            assert schedule.active
            assert getattr(schedule.schedule, "interval", None) == timedelta(seconds=60)
            limit = deployment.global_concurrency_limit
            assert limit is not None and limit.limit == 1
        finally:
            # Nothing else in this session should find a schedule running the watchdog.
            client.delete_deployment(deployment.id)


def test_a_finding_told_nowhere_is_tried_again_and_one_told_somewhere_is_kept_once(
    slack: FakeSlack, tmp_path: Path
) -> None:
    import logging
    import socket

    from tocsin.flows.watchdog import watch

    key = AuditKey.generate(tmp_path / "audit" / "signing.key")
    journal = Journal(f"sqlite:///{tmp_path / 'journal.db'}", audit_key=key)
    try:
        run = open_cli_run(journal, "WD-6", "remote")
        journal.record("WD-6", "run.started", run_id=run.id, title="Remote runbook")
        journal.set_run(
            run.id,
            owner="worker-7.example:4242",
            heartbeat_at=datetime.now(UTC) - timedelta(minutes=5),
        )
        with socket.socket() as closed:  # a port nothing listens on: Slack is down
            closed.bind(("127.0.0.1", 0))
            down = f"http://127.0.0.1:{closed.getsockname()[1]}/api/"
        secrets = StaticSecrets({"slack_bot_token": SANDBOX_BOT_TOKEN})
        log = logging.getLogger("test_watchdog")

        def settings(api_url: str, oncall: str) -> Any:
            return with_values(
                load_settings(),
                {
                    "slack": {"api_url": api_url, "incident_channel": "#support-incidents"},
                    "watchdog": {"oncall_channel": oncall},
                },
            )

        failed = watch(settings(down, "#support-oncall"), secrets, journal, None, log)
        assert [f["key"] for f in failed.failed] and failed.posted == []
        assert found_records(journal, "WD-6") == []  # not remembered: tried again

        posted = watch(
            settings(f"{slack.url}/api/", "#no-such-channel"), secrets, journal, None, log
        )
        assert [p["places"] for p in posted.posted] == [["slack:thread"]]
        (record,) = found_records(journal, "WD-6")
        assert record["data"]["kind"] == "run_dead"
        assert "#no-such-channel" in " ".join(record["data"]["errors"])
        thread, _ = posted_about(slack, "WD-6")
        assert len(thread) == 1

        again = watch(settings(f"{slack.url}/api/", "#support-oncall"), secrets, journal, None, log)
        assert again.found == 1 and again.posted == [] and again.failed == []
        assert posted_about(slack, "WD-6") == (thread, [])
        assert journal.verify("WD-6", key.public_key).ok
    finally:
        journal.close()
