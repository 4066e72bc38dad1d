"""Running and deciding runbooks from the command line, as a support engineer does."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.cli_runner import ROOT, run_tocsin, start_tocsin_run
from tests.engine_support import HEAD, settings_journal, wait_until

pytestmark = pytest.mark.slow

ENGINE_ENV = {"PYTHONPATH": str(ROOT), "TOCSIN_ACTION_MODULES": '["tests.engine_actions"]'}

GATED = (
    HEAD
    + """\
steps:
  - id: gate
    title: Approve
    approval: {{approvers: leads, prompt: "Disconnect the office?", timeout: 10m}}
  - id: call_office
    title: Call the office
    manual: {{instructions: Call them, checklist: [Manager reached, Staff told]}}
  - id: act
    title: Act
    action: test.count
    with: {{file: "{{{{ inputs.state }}}}/acted"}}
"""
)


def start_run(runbook: Path, ticket: str, state: Path) -> subprocess.Popen[str]:
    return start_tocsin_run(runbook, ticket, state)


def waiting_on(ticket: str, step: str) -> bool:
    journal = settings_journal()
    try:
        for run in journal.runs_of(ticket):
            record = journal.step(run.id, step)
            if record is not None and record.status == "waiting":
                return True
        return False
    finally:
        journal.close()


def test_a_run_waits_at_its_gate_and_is_decided_from_another_terminal(
    prefect_server: str, tmp_path: Path
) -> None:
    runbook = tmp_path / "cli-gated.yaml"
    runbook.write_text(GATED.format(runbook_id=runbook.stem))
    process = start_run(runbook, "CLI-1", tmp_path)
    try:
        wait_until(lambda: waiting_on("CLI-1", "gate"), timeout=90, what="the gate")
        status = run_tocsin("status", "CLI-1", env=ENGINE_ENV)
        assert status.returncode == 0
        assert "waiting: gate — approval by leads (0 of 1)" in status.stdout
        assert "may decide: U0LEAD1, U0LEAD2, U0LEAD3" in status.stdout

        intruder = run_tocsin("approve", "CLI-1", "gate", "--as", "U0INTRUDER", env=ENGINE_ENV)
        assert intruder.returncode == 1
        assert "error: U0INTRUDER is not in approver group leads" in intruder.stderr

        approved = run_tocsin(
            "approve", "CLI-1", "gate", "--as", "U0LEAD1", "--comment", "ok", env=ENGINE_ENV
        )
        assert approved.returncode == 0, approved.stderr
        assert "approve from U0LEAD1 applied to gate" in approved.stdout

        wait_until(lambda: waiting_on("CLI-1", "call_office"), timeout=60, what="the manual task")
        status = run_tocsin("status", "CLI-1", env=ENGINE_ENV)
        assert "[1] Manager reached" in status.stdout
        done = run_tocsin(
            "done", "CLI-1", "call_office", "--as", "U0SUPPORT", "--all", env=ENGINE_ENV
        )
        assert done.returncode == 0, done.stderr
        output, _ = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output
    assert "gate: approved by U0LEAD1" in output
    assert "call_office: done by U0SUPPORT (2 of 2 items ticked)" in output
    assert "run succeeded" in output
    assert "SANDBOX mode" in output

    late = run_tocsin("reject", "CLI-1", "gate", "--as", "U0LEAD2", env=ENGINE_ENV)
    assert late.returncode == 1
    assert "'gate' is not waiting for a decision (it is approved)" in late.stderr


def test_a_rejection_from_the_cli_stops_the_run(prefect_server: str, tmp_path: Path) -> None:
    runbook = tmp_path / "cli-rejected.yaml"
    runbook.write_text(GATED.format(runbook_id=runbook.stem))
    process = start_run(runbook, "CLI-2", tmp_path)
    try:
        wait_until(lambda: waiting_on("CLI-2", "gate"), timeout=90, what="the gate")
        rejected = run_tocsin(
            "reject",
            "CLI-2",
            "gate",
            "--as",
            "U0LEAD2",
            "--comment",
            "wrong office",
            env=ENGINE_ENV,
        )
        assert rejected.returncode == 0, rejected.stderr
        output, _ = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 1
    assert "run rejected: gate rejected" in output
    assert not (tmp_path / "acted").exists()


def test_run_with_wrong_inputs_starts_nothing(prefect_server: str) -> None:
    result = run_tocsin("run", "office-compromise", "--ticket", "CLI-3", "--set", "office_idd=1")
    assert result.returncode == 2
    assert "unknown input 'office_idd' (did you mean 'office_id'?)" in result.stderr
    assert "Traceback" not in result.stderr


def test_deciding_an_unknown_incident_says_so(prefect_server: str) -> None:
    result = run_tocsin("approve", "NOPE-1", "gate", "--as", "U0LEAD1")
    assert result.returncode == 1
    assert "no run of NOPE-1 has a step 'gate'" in result.stderr


def test_the_demo_runs_a_shipped_runbook_end_to_end(prefect_server: str) -> None:
    result = run_tocsin("demo", "--ticket", "DEMO-42", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SANDBOX mode" in result.stdout
    assert "[scripted approver]" in result.stdout
    assert "approve_disconnect: approved by" in result.stdout
    assert "run succeeded: every step finished" in result.stdout
    assert re.search(r"audit trail: \d+ records, intact, head sha256:[0-9a-f]{16}", result.stdout)
    report = re.search(r"post-incident report: (\S+DEMO-42\.html)", result.stdout)
    assert report is not None, result.stdout
    html = Path(report.group(1)).read_text(encoding="utf-8")
    assert "DEMO-42" in html and "approve_disconnect" in html
    status = run_tocsin("status", "DEMO-42")
    assert "DEMO-42  office-compromise v1  succeeded" in status.stdout
