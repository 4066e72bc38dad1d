"""Engine overhead, against bare Prefect doing the same no-op: per action step, and per run.

    .venv/bin/python bench/engine_overhead.py [--steps 50] [--repeat 3] [--runs 10]

Both run on the same local Prefect server, interleaved, so that a change of load on the
machine weighs on both alike.

- Per step: both are timed inside the flow, so the flow's own start and end (about a
  second, and noisy) are left out: the bare flow times its loop of N task calls; Tocsin's
  run is timed from the journal, from the first step's `step.started` event to the last
  step's `step.succeeded`. A Tocsin step does what a real step does: journal it as running,
  render its parameters, run the action (`log`) in a Prefect task, journal its outputs and
  events (SQLite, synchronous=FULL). Goal: at most 1.5 times the bare task.
- Per run: a one-step runbook from the call of the flow to its return (the run opened and
  closed in the journal, its audit chain signed) against a bare flow calling one task.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import engine_setup  # noqa: F401 -- isolates the environment first
from engine_setup import log_steps, runbook_text, start_server
from figures import Figure

GOAL_RATIO = 1.5


@dataclass(frozen=True)
class Overhead:
    steps: int
    repeat: int
    runs: int
    bare_step_ms: float
    tocsin_step_ms: float
    bare_run_s: float
    tocsin_run_s: float

    @property
    def ratio(self) -> float:
        return self.tocsin_step_ms / self.bare_step_ms


def overhead(steps: int, repeat: int, runs: int) -> Overhead:
    """Measure, printing the figures."""
    start_server()

    from prefect import flow, task

    from tocsin.flows.runbook import run_runbook
    from tocsin.incident import Incident
    from tocsin.running import journal_for

    @task
    def noop(message: str) -> dict[str, str]:
        return {"message": message}

    @flow
    def bare(count: int) -> float:
        started = time.perf_counter()
        for n in range(count):
            noop.with_options(task_run_name=f"noop-{n}")(f"step {n}")
        return time.perf_counter() - started

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

    def whole(work: Callable[[], object]) -> float:
        started = time.perf_counter()
        work()
        return time.perf_counter() - started

    bare(2)
    tocsin_run(2)  # warm up imports and the server
    bare_times, tocsin_times = [], []
    for _ in range(repeat):
        bare_times.append(bare(steps))
        tocsin_times.append(tocsin_run(steps))
    bare_runs, tocsin_runs = [], []
    for _ in range(runs):
        bare_runs.append(whole(lambda: bare(1)))
        tocsin_runs.append(whole(lambda: tocsin_run(1)))
    found = Overhead(
        steps=steps,
        repeat=repeat,
        runs=runs,
        bare_step_ms=min(bare_times) / steps * 1000,
        tocsin_step_ms=min(tocsin_times) / steps * 1000,
        bare_run_s=statistics.median(bare_runs),
        tocsin_run_s=statistics.median(tocsin_runs),
    )
    print(f"steps per flow: {steps} (best of {repeat})")
    print(f"bare Prefect task, per step : {found.bare_step_ms:7.1f} ms")
    print(f"Tocsin action step, per step: {found.tocsin_step_ms:7.1f} ms")
    verdict = "met" if found.ratio <= GOAL_RATIO else "MISSED"
    print(f"ratio: {found.ratio:.2f}x -> goal <= {GOAL_RATIO}x {verdict}")
    print(
        f"one-step run, start to finish (median of {runs}): bare flow {found.bare_run_s:.2f} s, "
        f"Tocsin {found.tocsin_run_s:.2f} s"
    )
    return found


def measure(quick: bool = False) -> list[Figure]:
    found = overhead(steps=10, repeat=2, runs=3) if quick else overhead(50, 3, 10)
    return [
        Figure(
            "engine_overhead",
            f"per action step, timed inside the flow ({found.steps} steps, best of {found.repeat})",
            f"{found.tocsin_step_ms:.1f} ms ({found.ratio:.2f}× bare)",
            goal=f"≤ {GOAL_RATIO}× a bare task",
            met=found.ratio <= GOAL_RATIO,
            peer=f"{found.bare_step_ms:.1f} ms per task",
        ),
        Figure(
            "engine_overhead",
            f"per run: a one-step runbook, flow start to finish (median of {found.runs})",
            f"{found.tocsin_run_s:.2f} s ({(found.tocsin_run_s - found.bare_run_s) * 1000:+.0f} ms "
            "vs bare)",
            peer=f"{found.bare_run_s:.2f} s for a one-task flow",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="measurements; the best is kept")
    parser.add_argument("--runs", type=int, default=10, help="one-step runs; the median is kept")
    given = parser.parse_args()
    overhead(given.steps, given.repeat, given.runs)


if __name__ == "__main__":
    main()
