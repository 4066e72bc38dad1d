"""Shared set-up of the engine benchmarks: an isolated Tocsin home, its own Prefect server.

Import this module before anything that imports Prefect or reads Tocsin's settings.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOME = Path(tempfile.mkdtemp(prefix="tocsin-bench-"))
atexit.register(shutil.rmtree, HOME, ignore_errors=True)  # last: after the server has stopped
os.environ.update(
    XDG_DATA_HOME=str(HOME / "data"),
    XDG_CONFIG_HOME=str(HOME / "config"),
    PREFECT_HOME=str(HOME / "prefect"),
    PREFECT_SERVER_ANALYTICS_ENABLED="false",
    PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="WARNING",
    PREFECT_LOGGING_TO_API_BATCH_INTERVAL="5",
    TOCSIN_ACTION_MODULES='["tests.engine_actions"]',
)
sys.path.insert(0, str(ROOT))

from tocsin.embedded import stop_server, using_prefect  # noqa: E402
from tocsin.settings import load_settings  # noqa: E402

SETTINGS = load_settings()


_SERVER = ExitStack()


def start_server() -> str:
    """Start the benchmark's server; this process's Prefect clients use it until it exits."""
    started = time.perf_counter()
    url = _SERVER.enter_context(using_prefect(SETTINGS))
    print(f"local Prefect server on SQLite ready in {time.perf_counter() - started:.1f} s ({url})")
    _SERVER.callback(stop_server, SETTINGS)  # first, then the clients' settings are put back
    atexit.register(_SERVER.close)
    return url


def runbook_text(runbook_id: str, body: str) -> str:
    return (
        f"runbook: {runbook_id}\nversion: 1\ntitle: Bench\nsummary: Benchmark\nseverity: low\n"
        "sources: [{title: Bench, document: bench.txt}]\n"
        "inputs:\n  state: {type: string, description: Folder, default: /tmp}\n"
        "approver_groups:\n  leads: {users: [U0LEAD1, U0LEAD2]}\n"
        f"steps:\n{body}"
    )


def log_steps(prefix: str, count: int) -> str:
    return "".join(
        f"  - {{id: {prefix}{n}, title: Step {n}, action: log, with: {{message: step {n}}}}}\n"
        for n in range(1, count + 1)
    )


def gate_step(step_id: str) -> str:
    return (
        f"  - id: {step_id}\n    title: Gate\n"
        '    approval: {approvers: leads, prompt: "Go?", timeout: 30m}\n'
    )


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def approve_waiting_gates(journal: Any, stop: threading.Event, step_id: str = "gate") -> None:
    """Approve each run's gate as soon as it waits, until ``stop`` is set (a decider thread)."""
    from tocsin.decisions import DecisionRefused, submit

    approved: set[str] = set()
    while not stop.is_set():
        for run in journal.runs_of():
            if run.incident in approved or run.status != "waiting":
                continue
            record = journal.step(run.id, step_id)
            if record is None or record.status != "waiting":
                continue
            try:
                submit(
                    journal,
                    incident=run.incident,
                    step_id=step_id,
                    kind="approve",
                    actor="U0LEAD1",
                    channel="bench",
                    wait=False,
                )
            except DecisionRefused:
                continue
            approved.add(run.incident)
        time.sleep(0.2)
