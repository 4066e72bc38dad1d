"""Many incidents at once on the scale-out setup: two Prefect API servers on PostgreSQL and
Redis, two process workers, Tocsin's journal in PostgreSQL.

    .venv/bin/python bench/scale_out_incidents.py [--incidents 100] [--workers 2]

The same runbook as bench/concurrent_incidents.py (4 log steps, a gate, 5 log steps),
each incident queued on the ``run-runbook/tocsin`` deployment, so each run is a process
of its own on a worker, as in production. A decider approves each gate as soon as it
waits, through the journal and the other API server. Prints how many completed, how many
were lost, the wall time and the rate. Needs PostgreSQL on 127.0.0.1:5432 and Redis on
6379 (``python3 dev.py test`` starts them when absent); creates and drops its databases.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from engine_setup import approve_waiting_gates, gate_step, log_steps, runbook_text  # noqa: E402
from figures import Figure  # noqa: E402

BENCHMARK = "scale_out_incidents"


def run_incidents(count: int, workers: int) -> dict[str, float]:
    """Start ``count`` incidents on a fresh scale-out setup; their figures."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tocsin.action_registry import ActionRegistry
    from tocsin.incident import Incident
    from tocsin.journal import Journal
    from tocsin.launch import RunRequest, flow_run_request, run_on_deployment
    from tocsin.scale_out import DEPLOYMENT, LocalScaleOut, trial_databases
    from tocsin.validation import load_runbook_bytes

    folder = Path(tempfile.mkdtemp(prefix="tocsin-bench-scale-"))
    environment = {"TOCSIN_DATA_DIR": str(folder / "data"), "PREFECT_WORKER_QUERY_SECONDS": "1"}
    text = runbook_text(
        "scaled", log_steps("before", 4) + gate_step("gate") + log_steps("after", 5)
    )
    loaded = load_runbook_bytes(text.encode(), "scaled.yaml", ActionRegistry.discover())
    tickets = [f"SCALE-{n}" for n in range(1, count + 1)]
    with trial_databases() as databases:
        subprocess.run(
            [str(Path(sys.executable).parent / "tocsin"), "audit", "keygen"],
            env={"PATH": "/usr/bin:/bin", **environment},
            check=True,
            capture_output=True,
        )
        setup_started = time.perf_counter()
        with LocalScaleOut(
            folder / "processes", databases, environment=environment, workers=workers, gateways=0
        ) as cluster:
            setup = time.perf_counter() - setup_started
            journal = Journal(databases.journal_url)
            done = threading.Event()

            def decider() -> None:
                with temporary_settings(updates={PREFECT_API_URL: cluster.api_urls[-1]}):
                    approve_waiting_gates(journal, done)

            started = time.perf_counter()
            deciding = threading.Thread(target=decider, daemon=True)
            deciding.start()
            try:
                with temporary_settings(updates={PREFECT_API_URL: cluster.api_urls[0]}):
                    for ticket in tickets:
                        request = RunRequest(
                            loaded, Incident(ticket=ticket, requested_by="bench"), {}
                        )
                        run_on_deployment(flow_run_request(request, journal), DEPLOYMENT)
                deadline = time.monotonic() + 1800
                ended: dict[str, str] = {}
                while time.monotonic() < deadline and len(ended) < count:
                    for run in journal.runs_of():
                        if run.status in ("succeeded", "failed", "rejected", "timed_out"):
                            ended[run.incident] = run.status
                    time.sleep(1)
                wall = time.perf_counter() - started
            finally:
                done.set()
                deciding.join(10)
                journal.close()
    succeeded = sum(1 for status in ended.values() if status == "succeeded")
    return {"setup": setup, "wall": wall, "succeeded": succeeded, "lost": count - succeeded}


def _stop_cleanly_on_sigterm() -> None:
    """The suite stops a benchmark past its limit with SIGTERM: leave through the context
    managers, which stop the setup's servers and workers and drop its databases."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def measure(quick: bool = False) -> list[Figure]:
    _stop_cleanly_on_sigterm()
    count = 10 if quick else 100
    found = run_incidents(count, workers=2)
    shape = f"{count} incidents (10 steps + 1 gate) on PostgreSQL + Redis, 2 API servers, 2 workers"
    return [
        Figure(BENCHMARK, f"{shape}: wall time", f"{found['wall']:.0f} s"),
        Figure(BENCHMARK, f"{shape}: rate", f"{count / found['wall'] * 60:.0f} incidents/min"),
        Figure(
            BENCHMARK,
            f"{shape}: lost",
            f"{found['lost']:.0f} of {count}",
            goal="0",
            met=found["lost"] == 0,
        ),
        Figure(
            BENCHMARK,
            "scale-out setup started (servers, services, workers)",
            f"{found['setup']:.0f} s",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--incidents", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    _stop_cleanly_on_sigterm()
    found = run_incidents(args.incidents, args.workers)
    print(f"scale-out setup started in {found['setup']:.1f} s")
    print(
        f"incidents started: {args.incidents}, completed: {found['succeeded']:.0f}, "
        f"lost: {found['lost']:.0f}"
    )
    print(
        f"wall time: {found['wall']:.1f} s ({args.incidents / found['wall'] * 60:.0f} incidents "
        f"per minute, {args.incidents * 10} steps and {args.incidents} gates, "
        f"{args.workers} workers)"
    )


if __name__ == "__main__":
    main()
