"""Approval latency: from a decision to the next step starting, against bare Prefect.

    .venv/bin/python bench/approval_latency.py [--gates 20]

Tocsin: one run with K gates, each followed by a `log` step. A decider thread approves each
gate as soon as it waits (through tocsin.decisions.submit, as `tocsin approve` does) and
notes when it submitted; the next step's start is its `step.started` event in the journal.
Goal: p95 at most 1.5 s.

Bare Prefect, on the same server: one flow with K `pause_flow_run` calls, each followed by
a task, polling at the interval Tocsin's gates poll at; a decider thread resumes each pause
(`resume_flow_run`) as soon as the run shows Paused and notes when; the next task notes its
own start.
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from uuid import UUID

import engine_setup
from engine_setup import gate_step, percentile, runbook_text, start_server
from figures import Figure

GOAL_P95_SECONDS = 1.5


@dataclass(frozen=True)
class Latencies:
    tocsin: list[float]
    bare: list[float]
    poll_seconds: float


def tocsin_latencies(gates: int) -> list[float]:
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
    return latencies


def bare_latencies(gates: int, poll_seconds: int) -> list[float]:
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import pause_flow_run, resume_flow_run
    from prefect.runtime import flow_run

    running: dict[str, UUID] = {}
    decided: list[float] = []

    @task
    def after(n: int) -> float:
        return time.time()

    @flow
    def bare_gates(count: int) -> list[float]:
        running["id"] = UUID(flow_run.id)
        starts = []
        for n in range(count):
            pause_flow_run(timeout=300, poll_interval=poll_seconds, key=f"gate{n}")
            starts.append(after.with_options(task_run_name=f"after-{n}")(n))
        return starts

    failures: list[BaseException] = []

    def decider() -> None:
        try:
            resumed: set[UUID] = set()
            deadline = time.monotonic() + 60 + gates * 10
            with get_client(sync_client=True) as client:
                while len(decided) < gates and time.monotonic() < deadline:
                    state = client.read_flow_run(running["id"]).state if running else None
                    if state is None or not state.is_paused() or state.id in resumed:
                        time.sleep(0.02)
                        continue
                    resumed.add(state.id)
                    decided.append(time.time())
                    resume_flow_run(running["id"])
        except BaseException as exc:  # the flow then times out at its pause: say why
            failures.append(exc)

    thread = threading.Thread(target=decider, daemon=True)
    thread.start()
    starts = bare_gates(gates)
    thread.join(30)
    if failures:
        raise failures[0]
    return [start - decision for start, decision in zip(starts, decided, strict=True)]


def latencies(gates: int) -> Latencies:
    """Measure both, printing the figures."""
    start_server()
    from tocsin.flows.waiting import PAUSE_POLL_SECONDS

    found = Latencies(
        tocsin=tocsin_latencies(gates),
        bare=bare_latencies(gates, PAUSE_POLL_SECONDS),
        poll_seconds=PAUSE_POLL_SECONDS,
    )
    print(f"gates decided: {gates} each; pauses polled every {found.poll_seconds} s")
    for label, values in (("Tocsin", found.tocsin), ("bare Prefect", found.bare)):
        print(
            f"{label:12s} decision -> next step started: p50 {percentile(values, 0.5):.2f} s, "
            f"p95 {percentile(values, 0.95):.2f} s, max {max(values):.2f} s"
        )
    p95 = percentile(found.tocsin, 0.95)
    print(f"goal p95 <= {GOAL_P95_SECONDS} s: {'met' if p95 <= GOAL_P95_SECONDS else 'MISSED'}")
    return found


def measure(quick: bool = False) -> list[Figure]:
    gates = 5 if quick else 20
    found = latencies(gates)
    p50, p95 = percentile(found.tocsin, 0.5), percentile(found.tocsin, 0.95)
    bare50, bare95 = percentile(found.bare, 0.5), percentile(found.bare, 0.95)
    return [
        Figure(
            "approval_latency",
            f"decision → next step started, {gates} gates (pause polled every "
            f"{found.poll_seconds} s)",
            f"p50 {p50:.2f} s, p95 {p95:.2f} s",
            goal=f"p95 ≤ {GOAL_P95_SECONDS} s",
            met=p95 <= GOAL_P95_SECONDS,
            peer=f"pause/resume: p50 {bare50:.2f} s, p95 {bare95:.2f} s",
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gates", type=int, default=20)
    latencies(parser.parse_args().gates)


if __name__ == "__main__":
    main()
