"""A step found in flight after a crash, settled by reading back what its action did."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine_actions import calls
from tests.engine_support import HEAD, FlowInThread, settings_journal, start_flow
from tocsin.journal import Journal, now

pytestmark = pytest.mark.slow

STEPS = """\
steps:
  - id: act
    title: Act once
    action: test.count_reconciled
    with: {file: "{{ inputs.state }}/act"}
  - id: last
    title: Read what it did
    action: test.count
    with: {file: "{{ inputs.state }}/last-{{ steps.act.outputs.count }}"}
"""


@pytest.fixture(scope="module")
def journal(prefect_server: str) -> Iterator[Journal]:
    opened = settings_journal()
    yield opened
    opened.close()


def interrupted_run(journal: Journal, folder: Path, readback: str | None) -> FlowInThread:
    """A run whose `act` step was RUNNING when its process died, started again."""
    runbook_id = f"reconcile-{uuid.uuid4().hex[:8]}"
    ticket = f"REC-{uuid.uuid4().hex[:6]}"
    run, _ = journal.open_run(
        incident=ticket,
        runbook_id=runbook_id,
        runbook_version="1",
        runbook_digest="before-the-crash",
        inputs={"state": str(folder)},
        requested_by="U0REQUESTER",
        requested_via="test",
    )
    journal.set_step(run.id, "act", status="running", started_at=now())
    if readback is not None:
        (folder / "act.readback").write_text(readback)
    return start_flow(journal, HEAD.format(runbook_id=runbook_id) + STEPS, folder, ticket=ticket)


def kinds(journal: Journal, ticket: str) -> list[str]:
    return [event["kind"] for event in journal.events_of(ticket)]


def test_a_read_back_that_took_effect_finishes_the_step_with_its_outputs(
    journal: Journal, tmp_path: Path
) -> None:
    flow = interrupted_run(journal, tmp_path, "took 7")
    result = flow.finish()
    assert result["status"] == "succeeded", result
    assert calls(tmp_path / "act") == []  # never run again
    assert len(calls(tmp_path / "last-7")) == 1  # the later step read the outputs read back
    reconciled = [e for e in journal.events_of(flow.ticket) if e["kind"] == "step.reconciled"]
    assert reconciled[0]["data"]["effect"] == "took_effect"
    assert reconciled[0]["data"]["outputs"] == {"count": 7}
    assert "says took 7" in reconciled[0]["data"]["found"]
    from tocsin.running import audit_key_for
    from tocsin.settings import load_settings

    key = audit_key_for(load_settings())
    assert key is not None
    assert journal.verify(flow.ticket, key.public_key).ok


def test_a_read_back_that_did_not_take_effect_runs_the_step(
    journal: Journal, tmp_path: Path
) -> None:
    flow = interrupted_run(journal, tmp_path, "not")
    result = flow.finish()
    assert result["status"] == "succeeded", result
    assert len(calls(tmp_path / "act")) == 1  # run once, as if it never ran
    assert len(calls(tmp_path / "last-1")) == 1
    events = kinds(journal, flow.ticket)
    assert events.index("step.reconciled") < events.index("step.started")


@pytest.mark.parametrize("readback", ["unknown", "raise", "malformed"])
def test_a_read_back_that_cannot_tell_leaves_the_step_to_a_person(
    journal: Journal, tmp_path: Path, readback: str
) -> None:
    flow = interrupted_run(journal, tmp_path, readback)
    request = flow.request("act")
    assert request.kind == "in_doubt"
    events = kinds(journal, flow.ticket)
    expected = "step.reconciled" if readback == "unknown" else "step.reconcile_failed"
    assert expected in events
    flow.decide("act", "approve", "U0LEAD1")  # run it again
    result = flow.finish()
    assert result["status"] == "succeeded", result
    assert len(calls(tmp_path / "act")) == 1
