"""What the watchdog finds, read from the journal alone (`tocsin.watchdog.find_stuck`, no
run, no Slack): a run of another machine is dead only when Prefect does not show it alive,
clocks and gates are read from SQLite and PostgreSQL alike, and the command a finding gives
resumes the run with its inputs. The watchdog end to end is in tests/test_watchdog.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.test_audit import postgres_url  # noqa: F401  (the fixture)
from tocsin.gates import WaitRequest
from tocsin.journal import Journal, RunRecord
from tocsin.settings import WatchdogSettings
from tocsin.statuses import RunStatus
from tocsin.watchdog import (
    FOUND_KIND,
    FindingKind,
    already_posted,
    find_stuck,
    resume_command,
    secret_inputs,
)

pytestmark = pytest.mark.slow  # as in tests/test_watchdog.py, where these tests were


def open_cli_run(journal: Journal, incident: str, runbook_id: str, **inputs: Any) -> RunRecord:
    """A run of ``runbook_id`` opened in ``journal`` as `tocsin run` opens one (no flow)."""
    run, _ = journal.open_run(
        incident=incident,
        runbook_id=runbook_id,
        runbook_version="1",
        runbook_digest="0" * 64,
        inputs=inputs,
        requested_by="U0REQUESTER",
        requested_via="cli",
    )
    return run


# -- a run owned by another machine: Prefect's state decides -----------------------------------


def test_a_run_of_another_machine_is_dead_only_when_prefect_does_not_show_it_alive(
    tmp_path: Path,
) -> None:
    journal = Journal(f"sqlite:///{tmp_path / 'journal.db'}")
    try:
        run = open_cli_run(journal, "WD-5", "remote", office="OF-1")
        flow_run = "8a3c2f4e-1111-4222-8333-944455556666"
        journal.set_run(run.id, owner="worker-7.example:4242", flow_run_id=flow_run)
        fresh = journal.find_run("WD-5", "remote")
        assert fresh is not None and fresh.heartbeat_at is not None
        rules = WatchdogSettings(stale_after_seconds=30)
        soon = fresh.heartbeat_at + timedelta(seconds=10)
        later = fresh.heartbeat_at + timedelta(seconds=31)

        def kinds(at: datetime, states: dict[str, str] | None) -> list[FindingKind]:
            return [f.kind for f in find_stuck(journal, at, states, rules=rules)]

        assert kinds(soon, None) == []  # a recent heartbeat
        assert kinds(later, {flow_run: "RUNNING"}) == []
        assert kinds(later, {flow_run: "PAUSED"}) == []
        assert kinds(later, {flow_run: "CRASHED"}) == [FindingKind.RUN_DEAD]
        assert kinds(later, {}) == [FindingKind.RUN_DEAD]  # Prefect does not know it
        assert kinds(later, None) == [FindingKind.RUN_DEAD]  # Prefect not read: the heartbeat
        (dead,) = find_stuck(journal, later, None, rules=rules, live=True)
        assert (
            dead.command == "tocsin run remote --ticket WD-5 --set office=OF-1 --as YOUR_SLACK_ID"
        )
        assert "worker-7.example:4242" in dead.summary
    finally:
        journal.close()


# -- the command that resumes a run, and either database -------------------------------------


def test_the_resume_command_repeats_the_inputs_quoted_and_asks_for_secrets_again() -> None:
    moment = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    run = RunRecord(
        id=1,
        incident="INC-7",
        runbook_id="office-compromise",
        runbook_version="1",
        runbook_digest="0" * 64,
        inputs={
            "office_id": "OF-1042",
            "devices": ["PC-1", "PC 2; rm -rf /"],
            "password": "hmac-sha256:" + "ab" * 32,
            "notify": True,
            "note": None,
        },
        requested_by="U0REQUESTER",
        requested_via="cli",
        flow_run_id=None,
        status=RunStatus.RUNNING,
        owner="vm:1",
        heartbeat_at=moment,
        created_at=moment,
        updated_at=moment,
    )
    assert resume_command(run, live=False) == (
        "tocsin run office-compromise --ticket INC-7 --set office_id=OF-1042 "
        "--set devices=PC-1 --set 'devices=PC 2; rm -rf /' --set notify=true"
    )
    assert secret_inputs(run) == ["password"]
    assert resume_command(run, live=True).endswith(" --as YOUR_SLACK_ID")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Journal]:
    url = (
        f"sqlite:///{tmp_path / 'journal.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    opened = Journal(url)
    yield opened
    opened.close()


def test_clocks_gates_and_the_watchdogs_memory_are_read_from_either_database(
    any_journal: Journal,
) -> None:
    journal = any_journal
    run = open_cli_run(journal, "INC-8", "clocked")  # owned by this process, alive: never dead
    start = datetime.now(UTC)
    deadline = start + timedelta(hours=1)
    journal.record(
        "INC-8",
        "clock.started",
        run_id=run.id,
        clock="authority",
        title="Notify the authority",
        source="GDPR art. 33(1)",
        starts_at=(start - timedelta(hours=71)).isoformat(),
        deadline_at=deadline.isoformat(),
        stopped_by="notify",
    )
    request = WaitRequest(
        kind="manual",
        prompt="Send the form",
        deadline=(start + timedelta(minutes=30)).isoformat(),
        requester="U0REQUESTER",
        gate_hash="f" * 64,
    )
    journal.set_step(
        run.id, "notify", status="waiting", request=request.as_data(), waiting_since=start
    )

    (clock,) = find_stuck(journal, start, live=True)
    assert (clock.kind, clock.clock, clock.step) == (
        FindingKind.CLOCK_EXPIRING,
        "authority",
        "notify",
    )
    assert clock.command == "tocsin done INC-8 notify --as YOUR_SLACK_ID"
    assert clock.deadline == deadline and "expires in 1 h" in clock.summary
    narrow = WatchdogSettings(clock_warning_seconds=1800)
    assert find_stuck(journal, start, rules=narrow) == []  # an hour left: not yet

    later = find_stuck(journal, start + timedelta(hours=2))
    assert sorted(f.kind for f in later) == [FindingKind.CLOCK_EXPIRING, FindingKind.GATE_OVERDUE]
    expired = next(f for f in later if f.kind == FindingKind.CLOCK_EXPIRING)
    assert expired.key.endswith(":expired") and clock.key.endswith(":expiring")
    assert "expired 1 h ago" in expired.summary

    assert already_posted(journal) == set()
    journal.record("INC-8", FOUND_KIND, run_id=run.id, actor="watchdog", key=clock.key)
    assert already_posted(journal) == {clock.key}
    assert already_posted(journal, "INC-9") == set()

    journal.record("INC-8", "clock.stopped", run_id=run.id, clock="authority", met=True)
    assert find_stuck(journal, start) == []
