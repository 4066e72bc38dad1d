"""Approval latency: from a decision to the next step starting.

    .venv/bin/python bench/approval_latency.py [--gates 20]

One run with K gates, each followed by a `log` step. A decider thread approves each gate
as soon as it waits (through tocsin.decisions.submit, as `tocsin approve` does) and notes
when it submitted; the next step's start is its `step.started` event in the journal.
Goal: p95 at most 1.5 s.
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import asdict
from datetime import UTC, datetime

import engine_setup
from engine_setup import gate_step, percentile, runbook_text, start_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gates", type=int, default=20)
    gates = parser.parse_args().gates
    start_server()

    from tocsin.decisions import submit
    from tocsin.flows.runbook import run_runbook
    from tocsin.incident import Incident
    from tocsin.running import journal_for

    body = "".join(
        gate_step(f"gate{n}")
        + f"  - {{id: after{n}, title: After {n}, action: log, with: {{message: go}}}}\n"
        for n in range(1, gates + 1)
    )
    journal = journal_for(engine_setup.SETTINGS)
    ticket = "LATENCY-1"
    decided: dict[int, datetime] = {}

    def decider() -> None:
        for n in range(1, gates + 1):
            while True:
                run = journal.find_run(ticket, "latency")
                record = journal.step(run.id, f"gate{n}") if run else None
                if record is not None and record.status == "waiting":
                    break
                time.sleep(0.02)
            decided[n] = datetime.now(UTC)
            submit(
                journal,
                incident=ticket,
                step_id=f"gate{n}",
                kind="approve",
                actor="U0LEAD1",
                channel="bench",
            )

    thread = threading.Thread(target=decider, daemon=True)
    thread.start()
    result = run_runbook(
        runbook_source=runbook_text("latency", body),
        runbook_name="latency.yaml",
        incident=asdict(Incident(ticket=ticket, requested_by="bench")),
        inputs={},
    )
    thread.join(30)
    assert result["status"] == "succeeded", result
    started = {
        e["step_id"]: e["at"] for e in journal.events_of(ticket) if e["kind"] == "step.started"
    }
    latencies = []
    for n in range(1, gates + 1):
        began = started[f"after{n}"]
        began = began if began.tzinfo else began.replace(tzinfo=UTC)
        latencies.append((began - decided[n]).total_seconds())
    p95 = percentile(latencies, 0.95)
    print(f"gates decided: {gates}")
    print(
        f"decision -> next step started: p50 {percentile(latencies, 0.5):.2f} s, "
        f"p95 {p95:.2f} s, max {max(latencies):.2f} s"
    )
    print(f"goal p95 <= 1.5 s: {'met' if p95 <= 1.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
