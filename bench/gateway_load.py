"""Slack clicks at 200 a second against real gateways, on the real path: how fast Slack gets
its answer, how soon each click is judged.

    .venv/bin/python bench/gateway_load.py [--rate 200] [--seconds 10] [--quick]
        [--journal sqlite|postgresql|both] [--gateways 1|2|both]

For each journal (SQLite, PostgreSQL) and each number of gateway processes (1, 2):

- real runs: 20 incidents, each a real Tocsin run (``run_runbook`` on this benchmark's
  Prefect server, in a process of their own) waiting at a real gate of 60 approvers,
  quorum 10 (the most a runbook may ask: each gate closes during the load, its run goes
  on, and later clicks on it are refused as too late), its message posted in the fake Slack (``tocsin.integrations.slack.fake``,
  in a process of its own, which also answers ``users.info`` and the private refusals);
- real gateways: ``tocsin gateway`` subprocesses on that journal; with two, the clicks
  go to each in turn, as a load balancer sends them;
- real clicks: on the buttons of the gate messages as the fake Slack holds them, with
  the payload Slack sends (``block_actions``, form-encoded, the message and its blocks,
  response_url...; ``SimulatedSlack``), signed with ``X-Slack-Signature`` and
  ``X-Slack-Request-Timestamp``, sent open-loop (at a fixed rate whatever the answers'
  speed, as Slack does): half first approvals by approvers, a fifth the same approvers
  again, the rest clicks by people not in the group and forged clicks (wrong secret).

Measured: the acknowledgement (request sent to answer received: p50, p95, max; goal p95
< 100 ms, Slack's limit is 3 s), the time from a click sent to it judged (the decision
journalled, from the click queue's ``judged_at``: p95, max; goal: every click within
2 s), clicks acknowledged per second, and each gateway's memory (RSS before and after).
Checked: every forged click refused (401) and never queued, every other click answered
200, queued once and judged once (one decision per queued click: none judged twice), no
approval applied twice, no gate given more approvals than its quorum.

``measure()`` gives the figures to ``python3 dev.py bench``; ``main()`` prints them, each
setup's as soon as it is measured. The clicks themselves (planning, signing, sending) are
``click_load.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from click_load import (  # noqa: E402
    APPROVERS,
    INCIDENTS,
    SECRET,
    Click,
    approver,
    fire,
    plan_clicks,
    ticket,
)
from figures import Figure  # noqa: E402

QUORUM = 10
"""The most a runbook may ask for: each gate closes after 10 approvals, its run goes on."""
BOT_TOKEN = "xoxb-tocsin-sandbox"
P95_GOAL_MS = 100.0
JUDGED_GOAL_S = 2.0
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
CHANNEL = "C0INCIDENTS"


def runbook() -> str:
    users = ", ".join(approver(n) for n in range(APPROVERS))
    return (
        "runbook: click-load\nversion: 1\ntitle: Click load\nsummary: Gateway benchmark\n"
        "severity: low\nsources: [{title: Bench, document: bench.txt}]\n"
        f"approver_groups:\n  leads: {{users: [{users}]}}\n"
        "steps:\n"
        "  - id: approve_cut\n    title: Approve cutting the office off\n"
        f"    approval: {{approvers: leads, quorum: {QUORUM}, "
        'prompt: "Cut the office off?", timeout: 2h}\n'
        "  - {id: after, title: After, action: log, with: {message: go}}\n"
    )


# -- the other processes -----------------------------------------------------------------


def fake_slack_process(urls: Any) -> None:
    """Slack, in its own process: gate messages, users.info, private refusals."""
    from tocsin.integrations.slack.fake import FakeSlack, SlackChannel

    slack = FakeSlack(channels=(SlackChannel(CHANNEL, "support-incidents"),)).start()
    urls.put(slack.url)
    while True:
        time.sleep(3600)


def runs_process() -> None:
    """The runs, in their own process: one thread per incident, each waiting at its gate."""
    import threading

    from tocsin.flows.runbook import run_runbook
    from tocsin.incident import Incident

    text = runbook()

    def one(key: str) -> None:
        run_runbook(
            runbook_source=text,
            runbook_name="click-load.yaml",
            incident=asdict(Incident(ticket=key, requested_by="U0REQUESTER")),
            inputs={},
            return_state=True,
        )

    for n in range(INCIDENTS):
        threading.Thread(target=one, args=(ticket(n),), daemon=True).start()
    while True:
        time.sleep(3600)


# -- set-up --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    journal: str  # "SQLite" or "PostgreSQL"
    gateways: int

    @property
    def name(self) -> str:
        return f"{self.journal}, {self.gateways} gateway{'s' * (self.gateways > 1)}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def journal_url(kind: str, folder: Path) -> Iterator[str]:
    """A new, empty journal: a SQLite file, or a PostgreSQL database dropped afterwards."""
    if kind == "SQLite":
        yield f"sqlite:///{folder / 'journal.db'}"
        return
    from sqlalchemy import create_engine, text

    name = f"tocsin_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as db:
        db.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as db:
            db.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in this process's environment while children are started."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def settings_for(folder: Path, url: str, slack_url: str, prefect_url: str) -> dict[str, str]:
    return {
        "TOCSIN_MODE": "live",
        "TOCSIN_DATA_DIR": str(folder / "data"),
        "TOCSIN_JOURNAL_URL": url,
        "TOCSIN_PREFECT_API_URL": prefect_url,
        "PREFECT_API_URL": prefect_url,
        "TOCSIN_SLACK__API_URL": f"{slack_url}/api/",
        "TOCSIN_SLACK__INCIDENT_CHANNEL": "#support-incidents",
        "TOCSIN_ANNOUNCE__PROGRESS_EVERY_SECONDS": "0",
        "TOCSIN_SECRET_SLACK_BOT_TOKEN": BOT_TOKEN,
        "TOCSIN_SECRET_SLACK_SIGNING_SECRET": SECRET,
        # Every forged click audited one by one (the worst case for the journal).
        "TOCSIN_GATEWAY__REFUSALS_AUDITED_PER_MINUTE": "1000000",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }


def wait_for(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def gate_messages(slack_url: str) -> dict[str, Any]:
    """ticket -> the gate message, as the fake Slack holds it (a ``PostedSlackMessage``)."""
    from tocsin.integrations.slack.fake import PostedSlackMessage

    found: dict[str, Any] = {}
    with httpx.Client(base_url=f"{slack_url}/api/") as client:
        headers = {"Authorization": f"Bearer {BOT_TOKEN}"}
        history = client.post(
            "conversations.history", data={"channel": CHANNEL, "limit": 1000}, headers=headers
        ).json()
        for header in history.get("messages", []):
            replies = client.post(
                "conversations.replies",
                data={"channel": CHANNEL, "ts": header["ts"], "limit": 1000},
                headers=headers,
            ).json()
            for message in replies.get("messages", []):
                for block in message.get("blocks") or []:
                    for element in block.get("elements", []) if block["type"] == "actions" else []:
                        if element.get("action_id") == "tocsin_approve":
                            key = json.loads(element["value"])["ticket"]
                            found[key] = PostedSlackMessage(
                                CHANNEL,
                                message["ts"],
                                message.get("text"),
                                message.get("blocks"),
                                message.get("thread_ts"),
                            )
    return found


def rss_mb(pid: int, field_name: str = "VmRSS") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# -- one measurement -----------------------------------------------------------------------


@dataclass
class Result:
    setup: Setup
    clicks: list[Click]
    took: float
    judged_s: list[float]
    judged_within: float
    rss_before: list[float]
    rss_after: list[float]
    rss_peak: list[float]
    problems: list[str] = field(default_factory=list)

    def ack(self, fraction: float) -> float:
        values = sorted(c.ack_ms for c in self.clicks)
        return values[min(len(values) - 1, int(round(fraction * (len(values) - 1))))]

    def judged(self, fraction: float) -> float:
        values = sorted(self.judged_s) or [float("nan")]
        return values[min(len(values) - 1, int(round(fraction * (len(values) - 1))))]


def measure_setup(setup: Setup, rate: int, seconds: int, prefect_url: str) -> Result:
    spawn = multiprocessing.get_context("spawn")
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tocsin-clicks-")))
        url = stack.enter_context(journal_url(setup.journal, folder))
        from tocsin.audit import AuditKey
        from tocsin.journal import Journal

        AuditKey.generate(folder / "data" / "audit" / "signing.key")
        urls: Any = spawn.Queue()
        slack = spawn.Process(target=fake_slack_process, args=(urls,), daemon=True)
        slack.start()
        stack.callback(_end, slack)
        slack_url = urls.get(timeout=60)
        values = settings_for(folder, url, slack_url, prefect_url)
        with environment(values):
            runs = spawn.Process(target=runs_process, daemon=True)
            runs.start()
        stack.callback(_end, runs)
        journal = Journal(url)
        stack.callback(journal.close)

        def all_waiting() -> bool:
            failed = [r.incident for r in journal.runs_of() if r.status == "failed"]
            if failed:
                raise RuntimeError(f"runs failed before the clicks: {failed}")
            waiting = [
                journal.step(r.id, "approve_cut")
                for r in journal.runs_of()
                if r.status == "waiting"
            ]
            return sum(1 for s in waiting if s is not None and s.status == "waiting") == INCIDENTS

        wait_for(all_waiting, 300, f"{INCIDENTS} runs waiting at their gates")
        messages = wait_for(
            lambda: (found := gate_messages(slack_url)) and len(found) == INCIDENTS and found,
            60,
            "the gate messages",
        )
        ports = [free_port() for _ in range(setup.gateways)]
        gateways = []
        for port in ports:
            process = subprocess.Popen(
                [sys.executable, "-m", "tocsin", "gateway", "--port", str(port)],
                env={**os.environ, **values},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            stack.callback(_stop, process)
            gateways.append(process)
        for port, process in zip(ports, gateways, strict=True):
            wait_for(lambda p=port, g=process: _healthy(p, g), 120, f"the gateway on {port}")
        clicks = plan_clicks(rate, seconds, messages)
        rss_before = [rss_mb(g.pid) for g in gateways]
        took = asyncio.run(fire(rate, clicks, ports))
        queued = [c for c in clicks if c.kind != "forged"]
        judged_within = time.monotonic()
        try:
            wait_for(lambda: _unjudged(journal) == 0, 300, "every queued click judged")
        except RuntimeError as exc:
            problems = [str(exc)]
        else:
            problems = []
        judged_within = time.monotonic() - judged_within
        rss_after = [rss_mb(g.pid) for g in gateways]
        rss_peak = [rss_mb(g.pid, "VmHWM") for g in gateways]
        judged_s, more = _check(journal, clicks, queued)
        problems += more
        return Result(
            setup, clicks, took, judged_s, judged_within, rss_before, rss_after, rss_peak, problems
        )
    raise AssertionError("unreachable")  # pragma: no cover


def _healthy(port: int, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"the gateway on port {port} ended ({process.returncode})")
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    except httpx.TransportError:
        return False


def _unjudged(journal: Any) -> int:
    from tocsin.journal.click_queue import ClickQueue

    return ClickQueue(journal).unjudged()


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def _end(process: Any) -> None:
    process.terminate()
    process.join(10)


def _check(journal: Any, clicks: list[Click], queued: list[Click]) -> tuple[list[float], list[str]]:
    """Times from sent to judged, and what is wrong (statuses, clicks lost or judged twice)."""
    from sqlalchemy import select

    from tocsin.journal.schema import queued_clicks

    problems: list[str] = []
    wrong = [(c.kind, c.status) for c in clicks if c.status != (401 if c.kind == "forged" else 200)]
    if wrong:
        problems.append(f"{len(wrong)} unexpected statuses, e.g. {wrong[:3]}")
    with journal.transaction() as db:
        rows = list(db.execute(select(queued_clicks)).mappings())
    by_trigger = {json.loads(r["payload"])["trigger_id"]: r for r in rows}
    sent = {c.trigger: c for c in queued}
    if set(by_trigger) != set(sent):
        problems.append(
            f"queued {len(by_trigger)} clicks for {len(sent)} answered 200 "
            f"({len(set(sent) - set(by_trigger))} missing, "
            f"{len(set(by_trigger) - set(sent))} not sent as valid)"
        )
    judged_s = []
    for trigger, row in by_trigger.items():
        if row["judged_at"] is None or trigger not in sent:
            continue
        at = row["judged_at"] if row["judged_at"].tzinfo else row["judged_at"].replace(tzinfo=UTC)
        judged_s.append((at - datetime.fromtimestamp(sent[trigger].sent_at, UTC)).total_seconds())
    decisions = []
    for run in journal.runs_of():
        decisions += journal.decisions_of(run.id, "approve_cut")
    if len(decisions) != len(rows):
        problems.append(f"{len(decisions)} decisions for {len(rows)} queued clicks")
    applied = [(d.run_id, d.actor) for d in decisions if d.status == "applied"]
    if len(applied) != len(set(applied)):
        problems.append(f"{len(applied) - len(set(applied))} approvals applied twice")
    over = [run for run in {r for r, _ in applied} if sum(r == run for r, _ in applied) > QUORUM]
    if over:
        problems.append(f"runs {over} applied more approvals than their quorum")
    return judged_s, problems


# -- figures ---------------------------------------------------------------------------------


def figures_of(result: Result) -> list[Figure]:
    name = "gateway clicks"
    setup = result.setup.name
    p95 = result.ack(0.95)
    judged_p95, judged_max = result.judged(0.95), result.judged(1.0)
    answered = len(result.clicks) / result.took
    return [
        Figure(name, f"{setup}: ack p50", f"{result.ack(0.5):.1f} ms"),
        Figure(
            name, f"{setup}: ack p95", f"{p95:.1f} ms", f"< {P95_GOAL_MS:.0f} ms", p95 < P95_GOAL_MS
        ),
        Figure(
            name,
            f"{setup}: ack max",
            f"{result.ack(1.0):.0f} ms",
            "< 3000 ms",
            result.ack(1.0) < 3000,
        ),
        Figure(name, f"{setup}: sent to judged p95", f"{judged_p95:.2f} s"),
        Figure(
            name,
            f"{setup}: sent to judged max",
            f"{judged_max:.2f} s",
            f"< {JUDGED_GOAL_S:.0f} s",
            judged_max < JUDGED_GOAL_S,
        ),
        Figure(name, f"{setup}: clicks answered per second", f"{answered:.0f}/s"),
        Figure(
            name,
            f"{setup}: gateway memory (RSS before -> after, peak)",
            ", ".join(
                f"{b:.0f} -> {a:.0f} MB (peak {p:.0f})"
                for b, a, p in zip(
                    result.rss_before, result.rss_after, result.rss_peak, strict=True
                )
            ),
        ),
        Figure(
            name,
            f"{setup}: every click answered, queued and judged once",
            "yes" if not result.problems else "; ".join(result.problems)[:300],
            "yes",
            not result.problems,
        ),
    ]


def run_all(setups: list[Setup], rate: int, seconds: int, *, verbose: bool = False) -> list[Result]:
    import engine_setup  # an isolated Tocsin home and its own Prefect server

    prefect_url = engine_setup.start_server()
    results = []
    for setup in setups:
        if verbose:
            load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
            print(f"{setup.name}: {rate} clicks/s for {seconds} s (load {load}) ...", flush=True)
        results.append(measure_setup(setup, rate, seconds, prefect_url))
        if verbose:  # at once: a later setup that fails does not take these figures with it
            print_figures(figures_of(results[-1]))
    return results


def print_figures(figures: list[Figure]) -> None:
    width = max(len(f.what) for f in figures)
    print(f"\n{'what':<{width}}  {'value':<40} goal")
    for figure in figures:
        met = "" if figure.met is None else (" met" if figure.met else " MISSED")
        print(f"{figure.what:<{width}}  {figure.value:<40} {figure.goal}{met}", flush=True)


SETUPS = [
    Setup("SQLite", 1),
    Setup("SQLite", 2),
    Setup("PostgreSQL", 1),
    Setup("PostgreSQL", 2),
]


def measure(quick: bool = False) -> list[Figure]:
    """The figures for ``python3 dev.py bench``: 200 clicks/s for 10 s (3 s when quick) on
    each journal with 1 and 2 gateways."""
    results = run_all(SETUPS, 200, 3 if quick else 10)
    return [figure for result in results for figure in figures_of(result)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="3 s per setup")
    parser.add_argument("--journal", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--gateways", choices=["1", "2", "both"], default="both")
    args = parser.parse_args()
    setups = [
        s
        for s in SETUPS
        if args.journal in ("both", s.journal.lower())
        and args.gateways in ("both", str(s.gateways))
    ]
    results = run_all(setups, args.rate, 3 if args.quick else args.seconds, verbose=True)
    figures = [figure for result in results for figure in figures_of(result)]
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"\nmachine: {os.cpu_count()} cores, load average now {load} (1, 5, 15 min)")
    return 0 if all(f.met is not False for f in figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
