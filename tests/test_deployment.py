"""prefect deploy + prefect worker start, and `tocsin run --deployment` triggering through them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli_runner import ROOT, TOCSIN, run_tocsin
from tests.engine_support import settings_journal, wait_until
from tocsin.journal import RunRecord

pytestmark = pytest.mark.slow
PREFECT = Path(sys.executable).parent / "prefect"

RUNBOOK = """\
runbook: deployed
version: 1
title: Deployed
summary: Runs on a Prefect worker
severity: low
sources: [{title: Test, document: test.txt}]
approver_groups:
  leads: {users: [U0LEAD1]}
steps:
  - {id: first, title: First, action: log, with: {message: "hello {{ incident.ticket }}"}}
  - id: gate
    title: Gate
    approval: {approvers: leads, prompt: "Go?", timeout: 10m}
  - {id: last, title: Last, action: log, with: {message: bye}}
"""


@pytest.fixture(scope="module")
def worker(prefect_server: str) -> Iterator[None]:
    """The tocsin work pool, the deployment from prefect.yaml, and one worker polling it."""
    from tocsin.embedded import prefect_environment
    from tocsin.settings import load_settings

    # The prefect commands and the worker are pointed at the session's server explicitly.
    env = {**os.environ, **prefect_environment(load_settings(), prefect_server), "PWD": str(ROOT)}
    subprocess.run(
        [str(PREFECT), "work-pool", "create", "tocsin", "--type", "process"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    deployed = subprocess.run(
        [str(PREFECT), "--no-prompt", "deploy", "--all"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    process = subprocess.Popen(
        [str(PREFECT), "worker", "start", "--pool", "tocsin"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield
    process.terminate()
    process.wait(timeout=30)


@dataclass
class DeployedRun:
    """A ``tocsin run --deployment`` that reached its gate, was approved, and ended."""

    output: str
    returncode: int
    pid: int
    run: RunRecord | None


def run_approved_through_the_deployment(runbook: Path, ticket: str, *extra: str) -> DeployedRun:
    """Start ``runbook`` with ``tocsin run --deployment``, approve its gate from the CLI once
    the worker's run waits there, and wait for the command to end."""
    process = subprocess.Popen(
        [str(TOCSIN), "run", str(runbook), "--ticket", ticket, "--as", "U0REQUESTER", *extra]
        + ["--deployment"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    journal = settings_journal()
    runbook_id = runbook.stem
    try:

        def gate_waiting() -> bool:
            run = journal.find_run(ticket, runbook_id)
            record = journal.step(run.id, "gate") if run else None
            return record is not None and record.status == "waiting"

        wait_until(gate_waiting, timeout=120, what="the deployed run to reach its gate")
        approved = run_tocsin("approve", ticket, "gate", "--as", "U0LEAD1")
        assert approved.returncode == 0, approved.stderr
        output, _ = process.communicate(timeout=120)
        return DeployedRun(
            output, process.returncode, process.pid, journal.find_run(ticket, runbook_id)
        )
    finally:
        journal.close()
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_a_run_triggered_through_the_deployment_runs_on_the_worker(
    worker: None, tmp_path: Path
) -> None:
    runbook = tmp_path / "deployed.yaml"
    runbook.write_text(RUNBOOK)
    deployed = run_approved_through_the_deployment(runbook, "DEP-1")
    output, run = deployed.output, deployed.run
    assert run is not None and run.owner is not None
    assert deployed.returncode == 0, output
    assert "triggered flow run DEP-1-deployed on deployment run-runbook/tocsin" in output
    assert "gate: step.approved" in output
    assert "run.finished" in output
    # the flow ran in the worker's process, not in the `tocsin run` process
    assert not run.owner.endswith(f":{deployed.pid}")


def test_an_unknown_deployment_is_a_clear_error(prefect_server: str, tmp_path: Path) -> None:
    runbook = tmp_path / "deployed.yaml"
    runbook.write_text(RUNBOOK)
    result = run_tocsin("run", str(runbook), "--ticket", "DEP-2", "--deployment", "nope/missing")
    assert result.returncode == 2
    assert "no Prefect deployment named 'nope/missing'" in result.stderr


def test_a_secret_input_sent_through_the_deployment_never_reaches_prefect(
    worker: None, tmp_path: Path
) -> None:
    from tests.test_security_secrets import everything_written, files_containing

    secret = "Zq7-deployment-SECRET-51c3"
    runbook = tmp_path / "deployed-secret.yaml"
    runbook.write_text(
        RUNBOOK.replace("runbook: deployed", "runbook: deployed-secret")
        .replace(
            "approver_groups:",
            "inputs:\n  code: {type: string, secret: true, description: A one-time code}\n"
            "approver_groups:",
        )
        .replace('prompt: "Go?"', 'prompt: "Go with {{ inputs.code }}?"')
        .replace("message: bye", 'message: "bye {{ inputs.code }}"')
    )
    deployed = run_approved_through_the_deployment(runbook, "DEP-3", "--set", f"code={secret}")
    output, run = deployed.output, deployed.run
    assert deployed.returncode == 0, output
    assert run is not None and run.status == "succeeded"
    assert secret not in output
    assert files_containing(secret, *everything_written(tmp_path)) == []
