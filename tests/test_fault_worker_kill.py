"""kill -9 of the process running a destructive step, mid-step: the step is settled by
reading back what it did (never run twice), the interruption is in the trail, the run ends."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import fault_support
from tests.cli_runner import start_tocsin_run
from tests.engine_actions import calls
from tests.fault_support import SLOW_STEP, finished, kill_during_slow_step
from tocsin.journal import Journal
from tocsin.running import audit_key_for
from tocsin.settings import load_settings

pytestmark = pytest.mark.slow


journal = fault_support.journal  # the fault modules' shared fixture, once per module


def test_a_killed_destructive_step_that_reads_back_is_settled_by_itself_exactly_once(
    journal: Journal, tmp_path: Path
) -> None:
    runbook = tmp_path / "killed-reconciled.yaml"
    runbook.write_text(
        SLOW_STEP.format(
            runbook_id=runbook.stem, kind="read back", action="test.sleep_reconciled"
        ).replace(
            '"{{ inputs.state }}/last"', '"{{ inputs.state }}/last-{{ steps.slow.outputs.count }}"'
        )
    )
    ticket = "KILL-31"
    kill_during_slow_step(journal, runbook, ticket, tmp_path)
    # The service's state as the read-back finds it: the call reached it once.
    (tmp_path / "slow.readback").write_text("took 1")

    again = start_tocsin_run(runbook, ticket, tmp_path)
    output = finished(again, timeout=120)
    assert again.returncode == 0, output
    assert "slow: interrupted, read back: it took effect" in output
    assert [line.split()[0] for line in calls(tmp_path / "slow")] == ["start"]  # exactly once
    assert len(calls(tmp_path / "first")) == 1
    assert len(calls(tmp_path / "last-1")) == 1  # the later step read the outputs read back
    events = [(e["kind"], e["step_id"]) for e in journal.events_of(ticket)]
    assert events.index(("run.resumed", None)) < events.index(("step.reconciled", "slow"))
    assert ("step.started", "slow") in events  # the interrupted start stays in the trail
    key = audit_key_for(load_settings())
    assert key is not None
    assert journal.verify(ticket, key.public_key).ok
