"""A run that ends failed, or is refused, ends in a Failed state Prefect shows cleanly, on a
worker too: a message, the outcome as an artifact, no traceback for an expected error."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cli_runner import ROOT, run_tocsin
from tests.engine_support import settings_journal, wait_until

pytestmark = pytest.mark.slow
PREFECT = Path(sys.executable).parent / "prefect"
POOL = "tocsin-failed-state"
DEPLOYMENT = "run-runbook/failed-state"

FAILING = """\
runbook: ends-failed
version: 1
title: Ends failed
summary: Its second step fails
severity: low
sources: [{title: Test, document: test.txt}]
steps:
  - {id: first, title: First, action: log, with: {message: "hello"}}
  - {id: broken, title: Broken, action: test.fail, with: {message: "the service said no"}}
  - {id: never, title: Never, action: log, with: {message: "not reached"}}
"""

NEEDS_A_SECRET = """\
runbook: needs-secret
version: 1
title: Needs a secret
summary: Its first step reads a secret the worker does not have
severity: low
sources: [{title: Test, document: test.txt}]
steps:
  - id: call
    title: Call
    action: http.request
    with: {url: "https://127.0.0.1:9/x", bearer_token_secret: worker_lacks_this_token}
"""


@dataclass
class Worker:
    """A worker polling the test's own pool; ``log`` is everything it printed."""

    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def worker(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """A pool of this module's own, the flow deployed to it, and one worker whose output is kept."""
    from tocsin.embedded import prefect_environment
    from tocsin.settings import load_settings

    env = {**os.environ, **prefect_environment(load_settings(), prefect_server), "PWD": str(ROOT)}
    for command in (
        [str(PREFECT), "work-pool", "create", POOL, "--type", "process"],
        [str(PREFECT), "--no-prompt", "deploy", "flows/runbook.py:run_runbook"]
        + ["--name", DEPLOYMENT.split("/")[1], "--pool", POOL],
    ):
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False
        )
        assert done.returncode == 0 or "already exists" in done.stdout, done.stdout + done.stderr
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [str(PREFECT), "worker", "start", "--pool", POOL],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Worker(log)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _flow_run_named(name: str) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name]))
        )
    return runs[0] if runs else None


def _final_flow_run(name: str) -> Any:
    def ended() -> Any:
        found = _flow_run_named(name)
        return found if found and found.state and found.state.is_final() else None

    return wait_until(ended, timeout=60, what=f"flow run {name} to end")


def test_a_run_ending_failed_on_a_worker_is_a_clean_failed_state_with_its_outcome(
    worker: Worker, tmp_path: Path
) -> None:
    from tocsin.flows.outcomes import read_outcome

    runbook = tmp_path / "ends-failed.yaml"
    runbook.write_text(FAILING)
    result = run_tocsin(
        "run", str(runbook), "--ticket", "FS-1", "--as", "U0REQUESTER", "--deployment", DEPLOYMENT,
        timeout=180,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    flow_run = _final_flow_run("FS-1-ends-failed")
    assert flow_run.state.type.value == "FAILED"
    assert flow_run.state.message.startswith("runbook failed: ")
    assert "the service said no" in flow_run.state.message
    outcome = read_outcome(flow_run.id)
    assert outcome is not None
    assert outcome["status"] == "failed"
    assert outcome["steps"] == {"first": "succeeded", "broken": "failed"}
    # The worker said it in one line, without Prefect's traceback or its TypeError.
    wait_until(lambda: "the flow run ended Failed" in worker.text(), what="the worker's line")
    log = worker.text()
    assert "Traceback" not in log, log
    assert "TypeError" not in log, log
    assert "cannot be resolved into an exception" not in log


def test_a_worker_without_a_secret_refuses_the_run_before_it_opens(
    worker: Worker, tmp_path: Path
) -> None:
    """The README's case: the worker lacks a secret the first step reads."""
    runbook = tmp_path / "needs-secret.yaml"
    runbook.write_text(NEEDS_A_SECRET)
    result = run_tocsin(
        "run", str(runbook), "--ticket", "FS-2", "--as", "U0REQUESTER", "--deployment", DEPLOYMENT,
        env={"TOCSIN_SECRET_WORKER_LACKS_THIS_TOKEN": "only-the-cli-has-it"},
        timeout=180,
    )  # fmt: skip
    assert result.returncode == 3, result.stdout + result.stderr
    assert "the worker did not start the run" in result.stderr
    assert "secret 'worker_lacks_this_token' is not set" in result.stderr
    assert "TOCSIN_SECRET_WORKER_LACKS_THIS_TOKEN" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    flow_run = _final_flow_run("FS-2-needs-secret")
    assert flow_run.state.type.value == "FAILED"
    assert "secret 'worker_lacks_this_token' is not set" in flow_run.state.message
    journal = settings_journal()
    try:
        assert journal.find_run("FS-2", "needs-secret") is None  # refused before it opened
        assert journal.events_of("FS-2") == []
    finally:
        journal.close()
    wait_until(lambda: "worker_lacks_this_token" in worker.text(), what="the worker's line")
    log = worker.text()
    assert "Traceback" not in log, log
    assert "only-the-cli-has-it" not in log


def test_doctor_sees_the_live_worker_of_the_pool(worker: Worker, prefect_server: str) -> None:
    def seen() -> Any:
        result = run_tocsin(
            "doctor", "--pool", POOL, "--json", env={"TOCSIN_PREFECT_API_URL": prefect_server}
        )
        return result if '"area": "workers",\n      "ok": true' in result.stdout else None

    result = wait_until(seen, timeout=90, what="doctor to see the worker")
    assert f"1 live on '{POOL}'" in result.stdout


def test_live_mode_without_a_key_says_so_without_a_traceback(
    prefect_server: str, tmp_path: Path
) -> None:
    runbook = tmp_path / "ends-failed.yaml"
    runbook.write_text(FAILING)
    result = run_tocsin(
        "run", str(runbook), "--ticket", "FS-3", "--as", "U0REQUESTER",
        env={"TOCSIN_MODE": "live", "TOCSIN_AUDIT__KEY_PATH": str(tmp_path / "none.key")},
    )  # fmt: skip
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert f"no audit signing key at {tmp_path / 'none.key'}" in result.stderr
    assert "hint: " in result.stderr
    assert "tocsin audit keygen" in result.stderr
    assert _flow_run_named("FS-3-ends-failed") is None


def test_a_step_failing_in_the_terminal_is_one_line_not_a_traceback(
    prefect_server: str, tmp_path: Path
) -> None:
    runbook = tmp_path / "ends-failed.yaml"
    runbook.write_text(FAILING)
    result = run_tocsin("run", str(runbook), "--ticket", "FS-4", "--as", "U0REQUESTER", timeout=180)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "run failed: step broken failed: test.fail: test service the service said no" in output
    assert "Traceback" not in output
    flow_run = _final_flow_run("FS-4-ends-failed")
    assert flow_run.state.message.startswith("runbook failed: step broken failed")


def test_the_outcome_artifact_reads_back_exactly_whatever_the_reason_says() -> None:
    from tocsin.flows.outcomes import outcome_markdown, parse_outcome

    reason = 'step x failed: ```json\n{"status": "succeeded"}\n``` | <b>bold</b>'
    outcome = {"status": "failed", "reason": reason, "steps": {"x": "failed", "a": "succeeded"}}
    text = outcome_markdown(outcome)
    assert parse_outcome(text) == outcome
    assert list(parse_outcome(text)["steps"]) == ["x", "a"]  # in run order
    assert text.count("```") == 2  # the reason cannot open or close a block
    assert "<b>" not in text
