"""A run killed with kill -9 continues where it stopped when started again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import fault_support
from tests.cli_runner import ROOT, start_tocsin_run
from tests.engine_actions import calls
from tests.engine_support import wait_until
from tests.fault_support import SLOW_STEP, finished, kill_during_slow_step
from tocsin.decisions import submit
from tocsin.journal import Journal

pytestmark = pytest.mark.slow

RUNBOOK = SLOW_STEP
journal = fault_support.journal  # the fault modules' shared fixture, once per module


def start(runbook: Path, ticket: str, state: Path) -> subprocess.Popen[str]:
    return start_tocsin_run(runbook, ticket, state)


def test_an_in_flight_step_that_is_not_idempotent_waits_for_a_person(
    journal: Journal, tmp_path: Path
) -> None:
    runbook = tmp_path / "killed-not-idempotent.yaml"
    runbook.write_text(
        RUNBOOK.format(runbook_id=runbook.stem, kind="not idempotent", action="test.sleep")
    )
    ticket = "KILL-1"
    kill_during_slow_step(journal, runbook, ticket, tmp_path)

    again = start(runbook, ticket, tmp_path)
    try:
        run = journal.find_run(ticket, runbook.stem)
        assert run is not None
        wait_until(
            lambda: journal.step(run.id, "slow").status == "waiting",  # type: ignore[union-attr]
            timeout=90,
            what="the in-doubt step to wait",
        )
        outcome = submit(
            journal,
            incident=ticket,
            step_id="slow",
            kind="done",
            actor="U0ONCALL",
            channel="test",
            comment="checked: it took effect",
        )
        assert outcome.decision.kind == "done"
        output, _ = again.communicate(timeout=90)
    finally:
        if again.poll() is None:
            again.kill()
            again.communicate()
    assert again.returncode == 0, output
    assert "resuming the earlier run" in output
    assert len(calls(tmp_path / "first")) == 1  # completed before the crash: never again
    assert [line.split()[0] for line in calls(tmp_path / "slow")] == ["start"]  # not re-run
    assert len(calls(tmp_path / "last")) == 1


def test_an_in_flight_idempotent_step_is_simply_run_again(journal: Journal, tmp_path: Path) -> None:
    runbook = tmp_path / "killed-idempotent.yaml"
    runbook.write_text(
        RUNBOOK.format(
            runbook_id=runbook.stem, kind="idempotent", action="test.sleep_idempotent"
        ).replace("seconds: 20", "seconds: '{{ 20 if steps.first.outputs.count == 1 else 1 }}'")
    )
    ticket = "KILL-2"
    kill_during_slow_step(journal, runbook, ticket, tmp_path)
    again = start(runbook, ticket, tmp_path)
    output = finished(again, timeout=120)
    assert again.returncode == 0, output
    assert len(calls(tmp_path / "first")) == 1
    assert [line.split()[0] for line in calls(tmp_path / "slow")] == ["start", "start", "end"]
    assert len(calls(tmp_path / "last")) == 1
    events = [e["kind"] for e in journal.events_of(ticket)]
    assert "step.resumed_in_flight" in events and "run.resumed" in events


def test_a_second_run_while_the_first_is_alive_is_refused(journal: Journal, tmp_path: Path) -> None:
    runbook = tmp_path / "busy.yaml"
    runbook.write_text(RUNBOOK.format(runbook_id=runbook.stem, kind="busy", action="test.sleep"))
    first = start(runbook, "BUSY-1", tmp_path)
    try:
        wait_until(lambda: calls(tmp_path / "slow"), timeout=90, what="the first run")
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "tocsin",
                "run",
                str(runbook),
                "--ticket",
                "BUSY-1",
                "--set",
                f"state={tmp_path}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "TOCSIN_ACTION_MODULES": '["tests.engine_actions"]',
            },
        )
        assert second.returncode == 2
        assert "busy is already running for BUSY-1" in second.stderr
    finally:
        first.kill()
        first.communicate()
