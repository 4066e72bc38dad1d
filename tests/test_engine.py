"""Runbooks run end to end through the real flow on a local Prefect server."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import count
from pathlib import Path

import pytest

from tests.engine_actions import calls
from tests.engine_support import HEAD, FlowInThread, settings_journal, start_flow, wait_until
from tocsin.decisions import DecisionRefused
from tocsin.journal import Journal

pytestmark = pytest.mark.slow
_tickets = count(1)


@pytest.fixture(scope="module")
def journal(prefect_server: str) -> Iterator[Journal]:
    opened = settings_journal()
    yield opened
    opened.close()


def ticket() -> str:
    return f"ENG-{next(_tickets)}"


def runbook(runbook_id: str, steps: str, handlers: str = "") -> str:
    return (
        HEAD.format(runbook_id=runbook_id)
        + "steps:\n"
        + steps
        + ("handlers:\n" + handlers if handlers else "")
    )


def run(journal: Journal, text: str, folder: Path, **kwargs: object) -> FlowInThread:
    return start_flow(journal, text, folder, ticket=ticket(), **kwargs)  # type: ignore[arg-type]


def test_steps_run_in_order_and_outputs_feed_later_steps(journal: Journal, tmp_path: Path) -> None:
    text = runbook(
        "sequence",
        """\
  - id: first
    title: First
    action: test.count
    with: {file: "{{ inputs.state }}/first"}
  - id: skipped
    title: Skipped
    when: steps.first.outputs.count > 5
    action: test.count
    with: {file: "{{ inputs.state }}/skipped"}
  - id: second
    title: Second
    action: log
    with: {message: "first counted {{ steps.first.outputs.count }}, skipped is {{ steps.skipped.status }}"}
""",
    )
    flow = run(journal, text, tmp_path)
    result = flow.finish()
    assert result["status"] == "succeeded"
    assert flow.state_type == "COMPLETED"
    assert result["steps"] == {"first": "succeeded", "skipped": "skipped", "second": "succeeded"}
    assert flow.step("second").outputs == {  # type: ignore[union-attr]
        "message": "first counted 1, skipped is skipped",
        "level": "info",
    }
    assert calls(tmp_path / "skipped") == []
    kinds = [event["kind"] for event in journal.events_of(flow.ticket)]
    assert kinds[0] == "run.started" and kinds[-1] == "run.finished"
    assert "step.skipped" in kinds


def test_parallel_branches_run_at_the_same_time(journal: Journal, tmp_path: Path) -> None:
    text = runbook(
        "parallel",
        """\
  - id: both
    title: Both
    parallel:
      - id: left
        title: Left
        action: test.sleep
        with: {seconds: 1, file: "{{ inputs.state }}/log"}
      - id: right
        title: Right
        action: test.sleep
        with: {seconds: 1, file: "{{ inputs.state }}/log"}
""",
    )
    assert run(journal, text, tmp_path).finish()["status"] == "succeeded"
    lines = calls(tmp_path / "log")
    assert [line.split()[0] for line in lines] == ["start", "start", "end", "end"]


def test_a_failed_attempt_is_retried_until_it_succeeds(journal: Journal, tmp_path: Path) -> None:
    text = runbook(
        "retry-ok",
        """\
  - id: flaky
    title: Flaky
    action: test.flaky
    with: {file: "{{ inputs.state }}/attempts", failures: 2}
    retry: {attempts: 3, backoff: 1s, backoff_factor: 1}
""",
    )
    flow = run(journal, text, tmp_path)
    assert flow.finish()["status"] == "succeeded"
    record = flow.step("flaky")
    assert record is not None and record.attempts == 3 and record.outputs == {"count": 3}
    retried = [e for e in journal.events_of(flow.ticket) if e["kind"] == "step.retried"]
    assert [e["data"]["attempt"] for e in retried] == [2, 3]


@pytest.mark.parametrize(
    ("action", "starts", "status"),
    [("test.sleep_destructive", 1, "failed"), ("test.sleep_idempotent", 2, "failed")],
)
def test_a_call_cut_off_by_its_timeout_is_retried_only_if_it_may_run_twice(
    journal: Journal, tmp_path: Path, action: str, starts: int, status: str
) -> None:
    text = runbook(
        f"cut-off-{action.rsplit('.', 1)[1].replace('_', '-')}",
        f"""\
  - id: slow
    title: Slow
    action: {action}
    with: {{file: "{{{{ inputs.state }}}}/calls", seconds: 4}}
    timeout: 1s
    retry: {{attempts: 2, backoff: 1s, backoff_factor: 1}}
""",
    )
    flow = run(journal, text, tmp_path)
    assert flow.finish()["status"] == status
    started = [line for line in calls(tmp_path / "calls") if line.startswith("start")]
    assert len(started) == starts
    failed = [
        e["data"] for e in journal.events_of(flow.ticket) if e["kind"] == "step.attempt_failed"
    ]
    if starts == 1:  # destructive and not idempotent: the cut-off call may have acted
        assert failed and failed[-1]["not_retried"] == "the call may have taken effect"
    else:
        assert all("not_retried" not in data for data in failed)


def test_exhausted_retries_run_the_failure_handler_then_stop(
    journal: Journal, tmp_path: Path
) -> None:
    text = runbook(
        "retry-exhausted",
        """\
  - id: flaky
    title: Flaky
    action: test.flaky
    with: {file: "{{ inputs.state }}/attempts", failures: 5}
    retry: {attempts: 2, backoff: 1s}
    on_failure: {run: [page_lead]}
  - id: never
    title: Never reached
    action: test.count
    with: {file: "{{ inputs.state }}/never"}
""",
        handlers="""\
  - id: page_lead
    title: Page the lead
    action: test.count
    with: {file: "{{ inputs.state }}/paged"}
""",
    )
    flow = run(journal, text, tmp_path)
    result = flow.finish()
    assert result["status"] == "failed"
    assert "flaky failed" in result["reason"]
    assert flow.state_type == "FAILED"  # the Prefect UI shows it failed, not completed
    assert len(calls(tmp_path / "attempts")) == 2
    assert len(calls(tmp_path / "paged")) == 1
    assert calls(tmp_path / "never") == []
    assert result["steps"]["flaky"] == "failed"


def test_a_non_retryable_failure_is_not_retried_and_continue_goes_on(
    journal: Journal, tmp_path: Path
) -> None:
    text = runbook(
        "continue",
        """\
  - id: refused
    title: Refused
    action: test.fail
    with: {message: forbidden}
    retry: {attempts: 3, backoff: 1s}
    on_failure: continue
  - id: after
    title: After
    action: test.count
    with: {file: "{{ inputs.state }}/after"}
""",
    )
    flow = run(journal, text, tmp_path)
    assert flow.finish()["status"] == "succeeded"
    assert flow.step("refused").attempts == 1  # type: ignore[union-attr]
    assert len(calls(tmp_path / "after")) == 1


def test_undo_reverses_completed_steps_when_a_later_step_fails(
    journal: Journal, tmp_path: Path
) -> None:
    text = runbook(
        "undo",
        """\
  - id: isolate
    title: Isolate
    action: test.count
    with: {file: "{{ inputs.state }}/isolated"}
    undo:
      action: test.count
      with: {file: "{{ inputs.state }}/released-{{ steps.isolate.outputs.count }}"}
  - id: broken
    title: Broken
    action: test.fail
    with: {message: down}
""",
    )
    flow = run(journal, text, tmp_path)
    assert flow.finish()["status"] == "failed"
    assert len(calls(tmp_path / "released-1")) == 1
    assert flow.step("isolate").status == "undone"  # type: ignore[union-attr]
    assert "step.undone" in [e["kind"] for e in journal.events_of(flow.ticket)]


GATE = """\
  - id: gate
    title: Approve
    approval: {{approvers: leads, quorum: {quorum}, prompt: "Go for {{{{ inputs.state }}}}?", timeout: {timeout}, on_timeout: {on_timeout}{extra}}}
  - id: act
    title: Act
    action: test.count
    with: {{file: "{{{{ inputs.state }}}}/acted"}}
"""


def gate_runbook(
    runbook_id: str,
    quorum: int = 1,
    timeout: str = "10m",
    on_timeout: str = "abort",
    extra: str = "",
) -> str:
    return runbook(
        runbook_id, GATE.format(quorum=quorum, timeout=timeout, on_timeout=on_timeout, extra=extra)
    )


def test_a_quorum_counts_distinct_approvers_and_refuses_a_duplicate(
    journal: Journal, tmp_path: Path
) -> None:
    flow = run(journal, gate_runbook("quorum", quorum=2), tmp_path)
    request = flow.request("gate")
    assert request.approvers == ["U0LEAD1", "U0LEAD2", "U0LEAD3"] and request.quorum == 2
    assert flow.decide("gate", "approve", "U0LEAD1").decision.status == "applied"
    with pytest.raises(DecisionRefused, match="U0LEAD1 has already approved 'gate'"):
        flow.decide("gate", "approve", "U0LEAD1")
    assert calls(tmp_path / "acted") == []
    flow.decide("gate", "approve", "U0LEAD2", comment="checked the office id")
    result = flow.finish()
    assert result["status"] == "succeeded"
    assert flow.step("gate").outputs["approved_by"] == ["U0LEAD1", "U0LEAD2"]  # type: ignore[union-attr]
    refused = [e for e in journal.events_of(flow.ticket) if e["kind"] == "decision.refused"]
    assert [e["actor"] for e in refused] == ["U0LEAD1"]


def test_the_requester_cannot_approve_their_own_gate(journal: Journal, tmp_path: Path) -> None:
    flow = run(journal, gate_runbook("self-approval"), tmp_path, requested_by="U0LEAD1")
    flow.request("gate")
    with pytest.raises(DecisionRefused, match="U0LEAD1 started this run and cannot decide"):
        flow.decide("gate", "approve", "U0LEAD1")
    flow.decide("gate", "approve", "U0LEAD2")
    assert flow.finish()["status"] == "succeeded"


def test_someone_outside_the_group_is_refused_and_audited(journal: Journal, tmp_path: Path) -> None:
    flow = run(journal, gate_runbook("unauthorised"), tmp_path)
    flow.request("gate")
    with pytest.raises(DecisionRefused, match="U0INTRUDER is not in approver group leads"):
        flow.decide("gate", "approve", "U0INTRUDER")
    run_record = flow.run()
    [refused] = journal.decisions_of(run_record.id, "gate")
    assert refused.status == "refused" and refused.actor == "U0INTRUDER"
    flow.decide("gate", "reject", "U0LEAD3", comment="wrong office")
    result = flow.finish()
    assert result["status"] == "rejected"
    assert calls(tmp_path / "acted") == []
    assert flow.step("gate").outputs["comment"] == "wrong office"  # type: ignore[union-attr]


def test_stale_and_mismatched_decisions_are_refused_and_recorded(
    journal: Journal, tmp_path: Path
) -> None:
    flow = run(journal, gate_runbook("stale"), tmp_path)
    request = flow.request("gate")
    with pytest.raises(DecisionRefused, match="made on another version of 'gate'"):
        flow.decide("gate", "approve", "U0LEAD1", gate_hash="0" * 64)
    flow.decide("gate", "approve", "U0LEAD1", gate_hash=request.gate_hash[:12])
    assert flow.finish()["status"] == "succeeded"
    with pytest.raises(
        DecisionRefused, match="'gate' is not waiting for a decision \\(it is approved\\)"
    ):
        flow.decide("gate", "approve", "U0LEAD2")
    statuses = [d.status for d in journal.decisions_of(flow.run().id, "gate")]
    assert statuses == ["refused", "applied", "refused"]


@pytest.mark.parametrize(
    "on_timeout,extra,status,acted",
    [("abort", "", "timed_out", 0), ("continue", "", "succeeded", 1)],
)
def test_a_gate_that_times_out_follows_on_timeout(
    journal: Journal, tmp_path: Path, on_timeout: str, extra: str, status: str, acted: int
) -> None:
    flow = run(
        journal,
        gate_runbook(f"timeout-{on_timeout}", timeout="2s", on_timeout=on_timeout),
        tmp_path,
    )
    result = flow.finish()
    assert result["status"] == status
    assert result["steps"]["gate"] == "timed_out"
    assert len(calls(tmp_path / "acted")) == acted


def test_a_gate_that_times_out_escalates_and_the_escalation_group_decides(
    journal: Journal, tmp_path: Path
) -> None:
    flow = run(
        journal,
        gate_runbook(
            "timeout-escalate", timeout="2s", on_timeout="escalate", extra=", escalate_to: managers"
        ),
        tmp_path,
    )
    wait_until(
        lambda: "approval.escalated" in [e["kind"] for e in journal.events_of(flow.ticket)],
        what="the escalation",
    )
    assert "U0BOSS1" in flow.request("gate").approvers
    flow.decide("gate", "approve", "U0BOSS1")
    assert flow.finish()["status"] == "succeeded"


def test_a_manual_task_waits_for_done_with_the_checklist(journal: Journal, tmp_path: Path) -> None:
    text = runbook(
        "manual",
        """\
  - id: call_office
    title: Call the office
    manual:
      instructions: Call the office manager about {{ inputs.state }}
      checklist: [Manager reached, Staff told]
  - id: after
    title: After
    action: log
    with: {message: "done by {{ steps.call_office.outputs.completed_by }}"}
""",
    )
    flow = run(journal, text, tmp_path)
    request = flow.request("call_office")
    assert request.checklist == ["Manager reached", "Staff told"]
    with pytest.raises(DecisionRefused, match="tick the checklist items you did"):
        flow.decide("call_office", "done", "U0SUPPORT")
    flow.decide("call_office", "done", "U0SUPPORT", checklist=[1])
    assert flow.finish()["status"] == "succeeded"
    outputs = flow.step("call_office").outputs  # type: ignore[union-attr]
    assert outputs["completed_by"] == "U0SUPPORT" and outputs["checklist"] == ["Manager reached"]
    assert flow.step("after").outputs["message"] == "done by U0SUPPORT"  # type: ignore[union-attr]


def test_runs_are_tagged_and_tasks_named_like_the_runbook(journal: Journal, tmp_path: Path) -> None:
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    text = runbook(
        "names",
        """\
  - id: revoke_sessions
    title: Revoke
    action: test.count
    with: {file: "{{ inputs.state }}/revoked"}
""",
    )
    flow = run(journal, text, tmp_path)
    flow.finish()
    flow_run_id = UUID(flow.run().flow_run_id or "")
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    assert [task_run.name for task_run in task_runs] == ["revoke-sessions"]


def test_simultaneous_decisions_are_each_applied_once_and_none_is_lost(
    journal: Journal, tmp_path: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    flow = run(journal, gate_runbook("simultaneous", quorum=2), tmp_path)
    flow.request("gate")
    attempts = ["U0LEAD1"] * 5 + ["U0LEAD2"]

    def decide(actor: str) -> str:
        try:
            return flow.decide("gate", "approve", actor).decision.status
        except DecisionRefused:
            return "refused"

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(decide, attempts))
    assert flow.finish()["status"] == "succeeded"
    decisions = journal.decisions_of(flow.run().id, "gate")
    assert len(decisions) == len(attempts)  # every click recorded
    applied = sorted(d.actor for d in decisions if d.status == "applied")
    assert applied == ["U0LEAD1", "U0LEAD2"]  # each person counted once
    assert all(d.status in ("applied", "refused") for d in decisions)  # none left pending
    assert len(calls(tmp_path / "acted")) == 1
