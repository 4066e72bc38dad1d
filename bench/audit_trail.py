"""Verify and report an incident with 10,000 audit events: each must take under 1 s.

Builds the incident in a temporary SQLite journal (realistic records: step parameters,
outputs, approvals, decisions; a checkpoint every 50 records), then times, each the
median of several rounds:
- ``verify``: load the records and checkpoints from the journal, recompute every hash
  and signature (what ``tocsin audit verify`` does);
- ``report``: the same load and verification plus building and rendering the report,
  per format (what ``tocsin report`` does, without process start-up).

Usage: .venv/bin/python bench/audit_trail.py [EVENTS]
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tocsin.audit import AuditKey, verify_chain  # noqa: E402
from tocsin.journal import Journal  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import Figure  # noqa: E402

TICKET = "INC-10000"
ROUNDS = 5
TARGET_SECONDS = 1.0


def build(journal: Journal, events: int) -> None:
    """About one step per four records, an approval every 40 steps, a message every 10."""
    journal.record(
        TICKET,
        "run.started",
        run_id=1,
        actor="U0REQUESTER",
        runbook="office-compromise",
        version="1",
        via="cli",
        title="Broker office hacked",
        severity="critical",
        inputs={"office_id": "OF-1042", "devices": ["PC-1", "PC-2"]},
    )
    journal.record(
        TICKET,
        "clock.started",
        run_id=1,
        clock="gdpr_authority",
        title="Notify the data-protection authority",
        starts_at="2026-11-24T09:00:00+00:00",
        deadline_at="2026-11-27T09:00:00+00:00",
    )
    step = 0
    while count(journal) < events - 1:
        step += 1
        step_id = f"step_{step}"
        if step % 40 == 0:
            journal.record(
                TICKET,
                "approval.requested",
                run_id=1,
                step_id=step_id,
                kind="approval",
                prompt="Disconnect office OF-1042 from the platform now? " * 3,
                approvers=["U0LEAD1", "U0LEAD2", "U0LEAD3"],
                quorum=2,
                title=f"Approve {step_id}",
            )
            for lead in ("U0LEAD1", "U0LEAD2"):
                journal.record(
                    TICKET,
                    "decision.received",
                    run_id=1,
                    step_id=step_id,
                    actor=lead,
                    decision="approve",
                    channel="slack",
                    comment="ok",
                )
            journal.record(
                TICKET,
                "step.approved",
                run_id=1,
                step_id=step_id,
                outputs={"approved_by": ["U0LEAD1", "U0LEAD2"], "decision": "approved"},
            )
            continue
        journal.record(
            TICKET,
            "step.started",
            run_id=1,
            step_id=step_id,
            action="http.request",
            parameters={
                "service": "platform",
                "method": "POST",
                "url": f"/offices/OF-1042/devices/PC-{step}/revoke",
                "json": {"reason": "incident INC-10000", "by": "tocsin"},
            },
            title=f"Revoke certificate {step}",
            phase="contain" if step < 100 else "recover",
        )
        if step % 7 == 0:
            journal.record(TICKET, "step.retried", run_id=1, step_id=step_id, attempt=2)
        journal.record(
            TICKET,
            "step.succeeded",
            run_id=1,
            step_id=step_id,
            outputs={"status_code": 200, "body": {"revoked": True, "serial": f"CERT-{step:05d}"}},
            attempts=2 if step % 7 == 0 else 1,
        )
        if step % 10 == 0:
            journal.record(
                TICKET, "message.sent", run_id=1, step_id=step_id, channel="slack", count=1
            )
    journal.record(TICKET, "run.finished", run_id=1, status="succeeded", reason="every step")
    journal.checkpoint(TICKET, "run.finished")


def count(journal: Journal) -> int:
    from sqlalchemy import func, select

    from tocsin.journal import events

    with journal.transaction() as db:
        return int(db.execute(select(func.count()).select_from(events)).scalar_one())


def median_seconds(work: Callable[[], object], rounds: int = ROUNDS) -> float:
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


FORMATS = ("json", "md", "html", "pdf")


def timings(
    events: int, rounds: int = ROUNDS, formats: tuple[str, ...] = FORMATS
) -> tuple[int, dict[str, float]]:
    """The records built, and the seconds of verify and of each report format."""
    folder = Path(tempfile.mkdtemp(prefix="tocsin-audit-bench-"))
    key = AuditKey.generate(folder / "signing.key")
    journal = Journal(f"sqlite:///{folder / 'journal.db'}", audit_key=key, checkpoint_every=50)
    started = time.perf_counter()
    build(journal, events)
    records = journal.audit_records(TICKET)
    print(
        f"built {len(records)} records, {len(journal.checkpoints_of(TICKET))} checkpoints "
        f"in {time.perf_counter() - started:.1f} s"
    )

    def verify() -> object:
        result = journal.verify(TICKET, key.public_key)
        assert result.ok, result.problems[:3]
        return result

    figures = {"verify": median_seconds(verify, rounds)}
    from tocsin.report import build_report, render

    for fmt in formats:

        def report(fmt: str = fmt) -> object:
            loaded = journal.audit_records(TICKET)
            checked = verify_chain(TICKET, loaded, journal.checkpoints_of(TICKET), key.public_key)
            return render(build_report(TICKET, loaded, checked), fmt, "en")  # type: ignore[arg-type]

        figures[f"report {fmt}"] = median_seconds(report, rounds) if fmt != "pdf" else _once(report)
    journal.close()
    shutil.rmtree(folder, ignore_errors=True)
    for name, seconds in figures.items():
        target = "" if name == "report pdf" else f" (target < {TARGET_SECONDS:.0f} s)"
        verdict = "" if name == "report pdf" else (" ok" if seconds < TARGET_SECONDS else " SLOW")
        print(f"{name:12s} {seconds * 1000:8.0f} ms{target}{verdict}")
    return len(records), figures


def measure(quick: bool = False) -> list[Figure]:
    """Quick: 2,000 events, 2 rounds, no PDF (the 1 s goal is for 10,000: not judged then)."""
    events, rounds = (2_000, 2) if quick else (10_000, ROUNDS)
    records, figures = timings(events, rounds, FORMATS[:-1] if quick else FORMATS)
    judged = not quick
    result = []
    for name, seconds in figures.items():
        has_goal = judged and name != "report pdf"
        how = "once" if name == "report pdf" else f"median of {rounds}"
        result.append(
            Figure(
                "audit_trail",
                f"{name}, incident of {records:,} audit records ({how})",
                f"{seconds:.2f} s",
                goal=f"< {TARGET_SECONDS:.0f} s" if has_goal else "",
                met=seconds < TARGET_SECONDS if has_goal else None,
            )
        )
    return result


def main() -> int:
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    _, figures = timings(events)
    return 1 if any(s >= TARGET_SECONDS for n, s in figures.items() if n != "report pdf") else 0


def _once(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
