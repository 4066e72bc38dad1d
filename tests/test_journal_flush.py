"""What a step makes durable, and how: before an action that must not run twice, its start
is on disk; an idempotent step's records skip their own disk flush (lost with the power,
the step runs again and does the same; the next flushed commit flushes them too). Every
commit is seen by other processes at once, flushed or not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.engine_support import HEAD, settings_journal, start_flow
from tocsin.journal import Journal

FULL = 2  # what SQLite's PRAGMA synchronous answers for FULL


def _synchronous(journal: Journal) -> int:
    with journal.engine.connect() as connection:
        return int(connection.exec_driver_sql("PRAGMA synchronous").scalar_one())


def test_an_unflushed_commit_is_seen_at_once_and_flushed_ones_stay_full(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'journal.db'}"
    writer, reader = Journal(url), Journal(url)
    try:
        with writer.transaction(flushed=False) as db:
            assert int(db.exec_driver_sql("PRAGMA synchronous").scalar_one()) == 1  # NORMAL
            writer.record("FL-1", "run.requested", actor="U0SUPPORT", via="test")
        assert [e["kind"] for e in reader.events_of("FL-1")] == ["run.requested"]
        assert _synchronous(writer) == FULL, "a flushed commit would not be flushed"
        with writer.transaction() as db:
            assert int(db.exec_driver_sql("PRAGMA synchronous").scalar_one()) == FULL
    finally:
        writer.close()
        reader.close()


def test_an_unflushed_transaction_that_fails_leaves_flushed_commits_full(
    tmp_path: Path,
) -> None:
    journal = Journal(f"sqlite:///{tmp_path / 'journal.db'}")
    try:
        with pytest.raises(RuntimeError), journal.transaction(flushed=False):
            raise RuntimeError("the write failed")
        assert _synchronous(journal) == FULL
    finally:
        journal.close()


@pytest.mark.postgres
def test_on_postgresql_an_unflushed_commit_turns_off_synchronous_commit_for_itself() -> None:
    journal = Journal("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    try:
        with journal.transaction(flushed=False) as db:
            assert db.execute(text("SHOW synchronous_commit")).scalar_one() == "off"
        with journal.transaction() as db:
            assert db.execute(text("SHOW synchronous_commit")).scalar_one() == "on"
    finally:
        journal.close()


@pytest.fixture
def flushes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str, bool]]]:
    """(step, event, flushed) of every step record the flow journals."""
    seen: list[tuple[str, str, bool]] = []
    original = Journal.step_event

    def spy(self: Journal, *args: Any, flushed: bool = True, **kwargs: Any) -> None:
        seen.append((args[2], args[3], flushed))
        original(self, *args, flushed=flushed, **kwargs)

    monkeypatch.setattr(Journal, "step_event", spy)
    yield seen


def test_only_an_action_that_must_not_run_twice_flushes_its_steps_records(
    prefect_server: str, tmp_path: Path, flushes: list[tuple[str, str, bool]]
) -> None:
    runbook = (
        HEAD.format(runbook_id="flushing")
        + """\
steps:
  - id: again_is_fine
    title: Idempotent
    action: test.count_idempotent
    with: {file: "{{ inputs.state }}/a"}
  - id: only_once
    title: Not idempotent
    action: test.count
    with: {file: "{{ inputs.state }}/b"}
"""
    )
    journal = settings_journal()
    try:
        result = start_flow(journal, runbook, tmp_path, ticket="FL-2").finish()
    finally:
        journal.close()
    assert result["status"] == "succeeded", result
    assert flushes == [
        ("again_is_fine", "step.started", False),
        ("again_is_fine", "step.succeeded", False),
        ("only_once", "step.started", True),
        ("only_once", "step.succeeded", True),
    ]
