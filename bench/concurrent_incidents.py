"""Many incidents at once on the embedded SQLite server: all complete, none lost.

    .venv/bin/python bench/concurrent_incidents.py [--incidents 100]

Each incident runs a 10-step runbook with one approval gate (4 log steps, the gate, 5 log
steps), all started together, each flow in its own thread of this process. A decider
approves every gate as soon as it waits. Prints how many completed, how many were lost
(not succeeded), the wall time, and the peak memory of this process and of the server.
"""

from __future__ import annotations

import argparse
import resource
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import engine_setup
from engine_setup import gate_step, log_steps, runbook_text, start_server


def peak_rss_mb(pid: int | None = None) -> float:
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--incidents", type=int, default=100)
    count = parser.parse_args().incidents
    start_server()

    from tocsin.decisions import DecisionRefused, submit
    from tocsin.embedded import running_server
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
        except BaseException as exc:  # reported below as lost
            results[ticket] = {"status": f"error: {type(exc).__name__}: {exc}"}

    done = threading.Event()

    def decider() -> None:
        approved: set[str] = set()
        while not done.is_set():
            for run in journal.runs_of():
                if run.incident in approved or run.status != "waiting":
                    continue
                record = journal.step(run.id, "gate")
                if record is None or record.status != "waiting":
                    continue
                try:
                    submit(
                        journal,
                        incident=run.incident,
                        step_id="gate",
                        kind="approve",
                        actor="U0LEAD1",
                        channel="bench",
                        wait=False,
                    )
                except DecisionRefused:
                    continue
                approved.add(run.incident)
            time.sleep(0.2)

    started = time.perf_counter()
    threads = [threading.Thread(target=one, args=(ticket,), daemon=True) for ticket in tickets]
    deciding = threading.Thread(target=decider, daemon=True)
    deciding.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(1800)
    wall = time.perf_counter() - started
    done.set()
    succeeded = [t for t in tickets if results.get(t, {}).get("status") == "succeeded"]
    lost = [t for t in tickets if t not in succeeded]
    server = running_server(engine_setup.SETTINGS)
    print(f"incidents started: {count}, completed: {len(succeeded)}, lost: {len(lost)}")
    for ticket in lost[:10]:
        print(f"  lost {ticket}: {results.get(ticket, {}).get('status', 'never finished')}")
    print(
        f"wall time: {wall:.1f} s ({count / wall * 60:.0f} incidents per minute, "
        f"{count * 10} steps and {count} gates)"
    )
    print(
        f"peak memory: this process {peak_rss_mb():.0f} MB"
        + (f", Prefect server {peak_rss_mb(server[1]):.0f} MB" if server else "")
    )


if __name__ == "__main__":
    main()
