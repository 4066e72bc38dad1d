"""Engine overhead per action step, against a bare Prefect task doing the same no-op.

    .venv/bin/python bench/engine_overhead.py [--steps 50]

Both run on the same local Prefect server, and both are timed inside the flow, so the
flow's own start and end (about a second, and noisy) are left out: the bare flow times its
loop of N task calls; Tocsin's run is timed from the journal, from the first step's
`step.started` event to the last step's `step.succeeded`. A Tocsin step does what a real
step does: journal it as running, render its parameters, run the action (`log`) in a
Prefect task, journal its outputs and events (SQLite, synchronous=FULL).
Goal: at most 1.5 times the bare task.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict

import engine_setup  # noqa: F401 -- isolates the environment first
from engine_setup import log_steps, runbook_text, start_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="measurements; the best is kept")
    steps = parser.parse_args().steps
    repeat = parser.parse_args().repeat
    start_server()

    from prefect import flow, task

    from tocsin.flows.runbook import run_runbook
    from tocsin.incident import Incident

    @task
    def noop(message: str) -> dict[str, str]:
        return {"message": message}

    @flow
    def bare(count: int) -> float:
        started = time.perf_counter()
        for n in range(count):
            noop.with_options(task_run_name=f"noop-{n}")(f"step {n}")
        return time.perf_counter() - started

    from tocsin.running import journal_for

    journal = journal_for(engine_setup.SETTINGS)
    tickets = iter(range(1, 10_000))

    def tocsin_run(count: int) -> float:
        ticket = f"BENCH-{next(tickets)}"
        result = run_runbook(
            runbook_source=runbook_text("overhead", log_steps("s", count)),
            runbook_name="overhead.yaml",
            incident=asdict(Incident(ticket=ticket, requested_by="bench")),
            inputs={},
        )
        assert result["status"] == "succeeded", result
        events = journal.events_of(ticket)
        first = min(e["at"] for e in events if e["kind"] == "step.started")
        last = max(e["at"] for e in events if e["kind"] == "step.succeeded")
        return float((last - first).total_seconds())

    bare(2)
    tocsin_run(2)  # warm up imports and the server
    # Interleaved, so that a change of load on the machine weighs on both alike.
    bare_times, tocsin_times = [], []
    for _ in range(repeat):
        bare_times.append(bare(steps))
        tocsin_times.append(tocsin_run(steps))
    bare_ms = min(bare_times) / steps * 1000
    tocsin_ms = min(tocsin_times) / steps * 1000
    ratio = tocsin_ms / bare_ms
    print(f"steps per flow: {steps} (best of {repeat})")
    print(f"bare Prefect task, per step : {bare_ms:7.1f} ms")
    print(f"Tocsin action step, per step: {tocsin_ms:7.1f} ms")
    print(f"ratio: {ratio:.2f}x -> goal <= 1.5x {'met' if ratio <= 1.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
