"""Many incidents at once on the embedded SQLite server: all complete, none lost.

    .venv/bin/python bench/concurrent_incidents.py [--incidents 100]

Each incident runs a 10-step runbook with one approval gate (4 log steps, the gate, 5 log
steps), all started together, each flow in its own thread of this process. A decider
approves every gate as soon as it waits. Prints how many completed, how many were lost
(not succeeded), the wall time, and the peak memory of this process and of the server.

Then, on the same server, the same shape as bare Prefect flows (4 tasks, a
`pause_flow_run` polled at the interval Tocsin's gates poll at, 5 tasks), all started
together, a decider resuming every paused run: how many completed, and the wall time.
"""

from __future__ import annotations

import argparse
import resource
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import engine_setup
from engine_setup import approve_waiting_gates, gate_step, log_steps, runbook_text, start_server
from figures import Figure


def peak_rss_mb(pid: int | None = None) -> float:
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass(frozen=True)
class Load:
    incidents: int
    completed: int
    lost: list[str]
    wall_seconds: float
    runs_mb: float
    server_mb: float | None
    bare_completed: int
    bare_wall_seconds: float

    def per_minute(self, wall: float) -> float:
        return self.incidents / wall * 60


def tocsin_incidents(count: int) -> tuple[dict[str, Any], float]:
    """Every incident's result (by ticket) and the wall time."""
    from tocsin.flows.runbook import run_runbook
    from tocsin.incident import Incident
    from tocsin.running import journal_for

    text = runbook_text(
        "concurrent", log_steps("before", 4) + gate_step("gate") + log_steps("after", 5)
    )
    journal = journal_for(engine_setup.SETTINGS)
    results: dict[str, Any] = {}
    tickets = [f"LOAD-{n}" for n in range(1, count + 1)]

    def one(ticket: str) -> None:
        try:
            results[ticket] = run_runbook(
                runbook_source=text,
                runbook_name="concurrent.yaml",
                incident=asdict(Incident(ticket=ticket, requested_by="bench")),
                inputs={},
            )
        except BaseException as exc:  # reported as lost
            results[ticket] = {"status": f"error: {type(exc).__name__}: {exc}"}

    done = threading.Event()

    def decider() -> None:
        approve_waiting_gates(journal, done)

    wall = run_together(one, tickets, decider)
    done.set()
    return results, wall


def bare_incidents(count: int, poll_seconds: int) -> tuple[int, float]:
    """The same shape as bare Prefect flows (4 tasks, a pause, 5 tasks): completed, wall time."""
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import NotPausedError, ObjectNotFound
    from prefect.flow_runs import pause_flow_run, resume_flow_run

    @task
    def step(n: int) -> dict[str, str]:
        return {"message": f"step {n}"}

    @flow(name="bare-incident")
    def incident(ticket: str) -> str:
        for n in range(1, 5):
            step.with_options(task_run_name=f"before{n}")(n)
        pause_flow_run(timeout=1800, poll_interval=poll_seconds, key="gate")
        for n in range(1, 6):
            step.with_options(task_run_name=f"after{n}")(n)
        return "succeeded"

    results: dict[str, str] = {}

    def one(ticket: str) -> None:
        try:
            results[ticket] = incident(ticket)
        except BaseException as exc:
            results[ticket] = f"error: {type(exc).__name__}: {exc}"

    done = threading.Event()
    paused = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
    )

    def decider() -> None:
        with get_client(sync_client=True) as client:
            while not done.is_set():
                for run in client.read_flow_runs(
                    flow_filter=FlowFilter(name=FlowFilterName(any_=["bare-incident"])),
                    flow_run_filter=paused,
                    limit=200,
                ):
                    try:
                        resume_flow_run(run.id)
                    except (NotPausedError, ObjectNotFound, RuntimeError):
                        continue  # resumed by the previous look, not yet seen so
                time.sleep(0.2)

    wall = run_together(one, [f"BARE-{n}" for n in range(1, count + 1)], decider)
    done.set()
    return sum(1 for r in results.values() if r == "succeeded"), wall


def run_together(
    one: Callable[[str], None], tickets: list[str], decider: Callable[[], None]
) -> float:
    """Start every incident at once, each in its thread, with the decider; the wall time."""
    started = time.perf_counter()
    threads = [threading.Thread(target=one, args=(ticket,), daemon=True) for ticket in tickets]
    threading.Thread(target=decider, daemon=True).start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(1800)
    return time.perf_counter() - started


def load(count: int) -> Load:
    """Tocsin's incidents first (this process's peak memory is theirs), then the bare flows."""
    start_server()
    from tocsin.embedded import running_server
    from tocsin.flows.waiting import PAUSE_POLL_SECONDS

    results, wall = tocsin_incidents(count)
    succeeded = [t for t, r in results.items() if r.get("status") == "succeeded"]
    lost = sorted(set(results) - set(succeeded)) + [
        f"LOAD-{n}" for n in range(1, count + 1) if f"LOAD-{n}" not in results
    ]
    server = running_server(engine_setup.SETTINGS)
    runs_mb, server_mb = peak_rss_mb(), (peak_rss_mb(server[1]) if server else None)
    print(f"incidents started: {count}, completed: {len(succeeded)}, lost: {len(lost)}")
    for ticket in lost[:10]:
        print(f"  lost {ticket}: {results.get(ticket, {}).get('status', 'never finished')}")
    print(
        f"wall time: {wall:.1f} s ({count / wall * 60:.0f} incidents per minute, "
        f"{count * 10} steps and {count} gates)"
    )
    print(
        f"peak memory: this process {runs_mb:.0f} MB"
        + (f", Prefect server {server_mb:.0f} MB" if server_mb is not None else "")
    )
    bare_completed, bare_wall = bare_incidents(count, PAUSE_POLL_SECONDS)
    print(
        f"bare Prefect, same shape: {bare_completed} of {count} completed in {bare_wall:.1f} s "
        f"({count / bare_wall * 60:.0f} per minute)"
    )
    return Load(
        incidents=count,
        completed=len(succeeded),
        lost=lost,
        wall_seconds=wall,
        runs_mb=runs_mb,
        server_mb=server_mb,
        bare_completed=bare_completed,
        bare_wall_seconds=bare_wall,
    )


def measure(quick: bool = False) -> list[Figure]:
    found = load(10 if quick else 100)
    n = found.incidents
    memory = f"{found.runs_mb:.0f} MB (runs)" + (
        f" + {found.server_mb:.0f} MB (server)" if found.server_mb is not None else ""
    )
    return [
        Figure(
            "concurrent_incidents",
            f"{n} incidents × (10 steps + 1 gate) at once, embedded SQLite: completed",
            f"{found.completed} of {n}, {len(found.lost)} lost",
            goal="all complete, none lost",
            met=found.completed == n and not found.lost,
            peer=f"{found.bare_completed} of {n}",
        ),
        Figure(
            "concurrent_incidents",
            f"{n} incidents: wall time",
            f"{found.wall_seconds:.0f} s ({found.per_minute(found.wall_seconds):.0f} per minute)",
            peer=(
                f"{found.bare_wall_seconds:.0f} s "
                f"({found.per_minute(found.bare_wall_seconds):.0f} per minute)"
            ),
        ),
        Figure("concurrent_incidents", f"{n} incidents: peak memory", memory),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--incidents", type=int, default=100)
    load(parser.parse_args().incidents)


if __name__ == "__main__":
    main()
