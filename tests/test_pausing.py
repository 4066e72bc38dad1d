"""A run at a gate on Prefect: its Paused state expires long after the run means to wake, and a
flow run Prefect ended meanwhile is taken back, the decision applied, nothing lost."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.engine_actions import calls
from tests.engine_support import HEAD, settings_journal, start_flow, wait_until
from tocsin.flows import waiting
from tocsin.journal import Journal

GATED = HEAD.format(runbook_id="paused") + (
    "steps:\n"
    "  - id: gate\n"
    "    title: Gate\n"
    '    approval: {approvers: leads, prompt: "Go on?", timeout: 1h}\n'
    "  - id: after\n"
    "    title: After\n"
    "    action: test.count_idempotent\n"
    '    with: {file: "{{ inputs.state }}/after"}\n'
)


@pytest.fixture(scope="module")
def journal(prefect_server: str) -> Iterator[Journal]:
    opened = settings_journal()
    yield opened
    opened.close()


def _flow_run(prefect_server: str, flow_run_id: str) -> dict[str, object]:
    answer = httpx.get(f"{prefect_server}/flow_runs/{flow_run_id}", timeout=10)
    answer.raise_for_status()
    run = answer.json()
    assert isinstance(run, dict)
    return run


def _state(prefect_server: str, flow_run_id: str) -> dict[str, object]:
    state = _flow_run(prefect_server, flow_run_id)["state"]
    assert isinstance(state, dict)
    return state


def test_prefect_would_fail_a_waiting_run_only_long_after_it_means_to_wake(
    journal: Journal, prefect_server: str, tmp_path: Path
) -> None:
    flow = start_flow(journal, GATED, tmp_path, ticket="PAUSE-1")
    flow.request("gate")
    run = flow.run()
    assert run.flow_run_id is not None
    state = wait_until(
        lambda: (s := _state(prefect_server, str(run.flow_run_id)))["type"] == "PAUSED" and s,
        what="the flow run Paused",
    )
    details = state["state_details"]
    assert isinstance(details, dict)
    expires = datetime.fromisoformat(str(details["pause_timeout"]))
    ahead = (expires - datetime.now(UTC)).total_seconds()
    # The run wakes itself within PENDING_RECHECK_SECONDS; Prefect's expiry is 10 min later.
    assert ahead > waiting.PENDING_RECHECK_SECONDS + waiting.PAUSE_EXPIRY_MARGIN_SECONDS - 30
    assert details["run_input_keyset"]  # a resume carries the decision, the UI shows a form
    flow.decide("gate", "approve", "U0LEAD1")
    assert flow.finish()["status"] == "succeeded"
    assert len(calls(tmp_path / "after")) == 1


def test_a_flow_run_prefect_ended_while_paused_is_taken_back_and_the_decision_applied(
    journal: Journal, prefect_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(waiting, "PENDING_RECHECK_SECONDS", 2)  # wakes every 2 s, not 60
    flow = start_flow(journal, GATED, tmp_path, ticket="PAUSE-2")
    flow.request("gate")
    run = flow.run()
    flow_run_id = str(run.flow_run_id)
    wait_until(lambda: _state(prefect_server, flow_run_id)["type"] == "PAUSED", what="Paused")
    # What Prefect's pause-expiration service (or an operator) does: the flow run Failed.
    ended = httpx.post(
        f"{prefect_server}/flow_runs/{flow_run_id}/set_state",
        json={
            "state": {"type": "FAILED", "message": "The flow was paused and never resumed."},
            "force": True,
        },
        timeout=10,
    )
    assert ended.status_code in (200, 201), ended.text
    # Decided meanwhile: Prefect cannot resume a Failed run, the journal keeps the decision.
    flow.decide("gate", "approve", "U0LEAD1")
    assert flow.finish(timeout=90)["status"] == "succeeded"
    assert len(calls(tmp_path / "after")) == 1
    kinds = [event["kind"] for event in journal.events_of("PAUSE-2")]
    assert "prefect.state_restored" in kinds
    assert kinds.count("decision.applied") == 1
    assert _state(prefect_server, flow_run_id)["type"] == "COMPLETED"
