"""Applying the decisions people sent to the steps waiting for them (``gates.apply_decisions``).

The flow and the gateway benchmark apply decisions with this one function; these tests
hand it decisions and waits directly, as the journal would, and read what it says changed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import count
from typing import Any

from tocsin.gates import Applied, Refused, WaitRequest, apply_decisions, gate_hash
from tocsin.journal import DecisionRecord

HASH = gate_hash("0" * 64, "gate", {})
_ids = count(1)


def decision(kind: str, actor: str, step_id: str = "gate", **extra: Any) -> DecisionRecord:
    values: dict[str, Any] = {
        "id": next(_ids),
        "run_id": 1,
        "step_id": step_id,
        "kind": kind,
        "actor": actor,
        "channel": "test",
        "comment": "",
        "checklist": None,
        "gate_hash": HASH,
        "status": "pending",
        "reason": None,
        "created_at": datetime.now(UTC),
    }
    return DecisionRecord(**{**values, **extra})


def gate(quorum: int = 2, **extra: Any) -> WaitRequest:
    return WaitRequest(
        kind="approval",
        prompt="Cut the office off?",
        deadline="2099-01-01T00:00:00+00:00",
        requester="U0REQUESTER",
        gate_hash=HASH,
        approvers=["U0LEAD1", "U0LEAD2", "U0LEAD3"],
        group="leads",
        quorum=quorum,
        **extra,
    )


def outcomes(changes: list[Applied | Refused]) -> list[str]:
    return [c.outcome if isinstance(c, Applied) else f"refused: {c.reason}" for c in changes]


def test_a_quorum_of_distinct_approvers_approves_and_a_later_click_comes_too_late() -> None:
    pending = [
        decision("approve", "U0LEAD1"),
        decision("approve", "U0LEAD1"),
        decision("approve", "U0LEAD2"),
        decision("approve", "U0LEAD3"),
    ]
    changes = apply_decisions(pending, {"gate": gate()}, {"gate": "waiting"}, {"gate": []})
    assert outcomes(changes) == [
        "counted",
        "refused: U0LEAD1 has already approved 'gate'; the quorum counts distinct people",
        "approved",
        "refused: step 'gate' is not waiting for a decision (it is approved): it was already "
        "decided, and this approve came too late to count",
    ]
    assert isinstance(changes[2], Applied) and changes[2].approvals == ("U0LEAD1", "U0LEAD2")


def test_approvals_applied_before_count_towards_the_quorum() -> None:
    changes = apply_decisions(
        [decision("approve", "U0LEAD2")],
        {"gate": gate()},
        {"gate": "waiting"},
        {"gate": ["U0LEAD1"]},
    )
    assert outcomes(changes) == ["approved"]


def test_a_rejection_closes_the_gate_whatever_the_quorum() -> None:
    pending = [decision("reject", "U0LEAD1"), decision("approve", "U0LEAD2")]
    changes = apply_decisions(pending, {"gate": gate(quorum=3)}, {"gate": "waiting"}, {})
    assert outcomes(changes)[0] == "rejected"
    assert "it is rejected" in outcomes(changes)[1]


def test_the_requester_and_strangers_are_refused_with_their_reason() -> None:
    pending = [decision("approve", "U0REQUESTER"), decision("approve", "U0STRANGER")]
    changes = apply_decisions(pending, {"gate": gate()}, {"gate": "waiting"}, {})
    assert outcomes(changes) == [
        "refused: U0REQUESTER started this run and cannot decide its own approval gate",
        "refused: U0STRANGER is not in approver group leads",
    ]


def test_a_decision_made_on_another_version_of_the_gate_is_refused() -> None:
    changes = apply_decisions(
        [decision("approve", "U0LEAD1", gate_hash="f" * 16)],
        {"gate": gate()},
        {"gate": "waiting"},
        {},
    )
    assert "made on another version of 'gate'" in outcomes(changes)[0]


def test_a_decision_for_a_step_that_does_not_wait_is_refused() -> None:
    changes = apply_decisions([decision("approve", "U0LEAD1", "later")], {}, {}, {})
    assert outcomes(changes) == [
        "refused: step 'later' is not waiting for a decision (it is not started)"
    ]


def test_a_manual_task_is_done_or_failed_by_the_person_deciding() -> None:
    task = WaitRequest(
        kind="manual",
        prompt="Call the office",
        deadline="2099-01-01T00:00:00+00:00",
        requester="U0REQUESTER",
        gate_hash=HASH,
        approvers=["U0SUPPORT"],
        checklist=["Manager reached"],
    )
    waits = {"call": task, "other": task}
    statuses = {"call": "waiting", "other": "waiting"}
    pending = [
        decision("approve", "U0SUPPORT", "call"),
        decision("done", "U0SUPPORT", "call", checklist=[1]),
        decision("reject", "U0SUPPORT", "other"),
    ]
    assert outcomes(apply_decisions(pending, waits, statuses, {})) == [
        "refused: step 'call' is a manual task: it takes done or reject, not approve",
        "done",
        "failed",
    ]


def test_an_in_doubt_step_approved_runs_again_once() -> None:
    doubt = WaitRequest(
        kind="in_doubt",
        prompt="Did it take effect?",
        deadline="2099-01-01T00:00:00+00:00",
        requester="U0REQUESTER",
        gate_hash=HASH,
        approvers=["U0LEAD1"],
    )
    pending = [decision("approve", "U0LEAD1", "act"), decision("done", "U0LEAD1", "act")]
    changes = apply_decisions(pending, {"act": doubt}, {"act": "waiting"}, {})
    assert outcomes(changes)[0] == "run_again"
    assert outcomes(changes)[1].startswith("refused: step 'act' is not waiting for a decision")


def test_what_it_is_given_is_left_as_it_was() -> None:
    waits = {"gate": gate(quorum=1)}
    statuses: dict[str, str | None] = {"gate": "waiting"}
    approvals: dict[str, list[str]] = {"gate": []}
    changes = apply_decisions([decision("approve", "U0LEAD1")], waits, statuses, approvals)
    assert outcomes(changes) == ["approved"]
    assert set(waits) == {"gate"} and statuses == {"gate": "waiting"} and approvals["gate"] == []
