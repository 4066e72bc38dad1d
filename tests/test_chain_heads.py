"""Appending to a chain without reading its head each time: a journal remembers the head
its last commit left; when another writer appended since, the insert breaks the chain's
unique number and the append runs again from the real head. The chain stays whole."""

from __future__ import annotations

import threading
from pathlib import Path

from tocsin.audit import AuditKey
from tocsin.journal import Journal


def _journals(tmp_path: Path, count: int) -> list[Journal]:
    """``count`` journals on one database, signing with one key (as processes would)."""
    key = AuditKey.generate(tmp_path / "audit.key")
    return [Journal(f"sqlite:///{tmp_path / 'journal.db'}", audit_key=key) for _ in range(count)]


def _numbers(journal: Journal, incident: str) -> list[int]:
    return [record.seq for record in journal.audit_records(incident)]


def test_two_writers_taking_turns_keep_one_unbroken_chain(tmp_path: Path) -> None:
    flow, gateway = _journals(tmp_path, 2)  # two processes' worth of journal
    try:
        for turn in range(20):
            flow.record("CH-1", "step.succeeded", step_id=f"s{turn}")
            gateway.record("CH-1", "decision.recorded", actor="U0LEAD1")
            flow.record("CH-1", "step.started", step_id=f"s{turn + 1}")
        assert _numbers(flow, "CH-1") == list(range(1, 61))
        assert flow.verify("CH-1", None).ok
    finally:
        flow.close()
        gateway.close()


def test_threads_and_processes_appending_at_once_keep_one_unbroken_chain(tmp_path: Path) -> None:
    journals = _journals(tmp_path, 2)

    def append(journal: Journal, worker: int) -> None:
        for n in range(25):
            journal.record("CH-2", "note", actor=f"worker-{worker}", n=n)

    threads = [
        threading.Thread(target=append, args=(journals[worker % 2], worker)) for worker in range(4)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert _numbers(journals[0], "CH-2") == list(range(1, 101))
        assert journals[1].verify("CH-2", None).ok
    finally:
        for journal in journals:
            journal.close()


def test_a_failed_transaction_does_not_leave_its_head_behind(tmp_path: Path) -> None:
    (journal,) = _journals(tmp_path, 1)
    try:
        journal.record("CH-3", "first")

        def fails(db: object) -> None:
            journal._append(db, "CH-3", "never", None, None, None, {})  # type: ignore[arg-type]
            raise RuntimeError("the write failed after appending")

        try:
            journal._chained_write(fails)  # type: ignore[arg-type]
        except RuntimeError:
            pass
        journal.record("CH-3", "second")
        assert [r.kind for r in journal.audit_records("CH-3")] == ["first", "second"]
        assert journal.verify("CH-3", None).ok
    finally:
        journal.close()
