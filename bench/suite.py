"""The benchmark suite in one command: every figure, its goal, met or not, its bare-Prefect peer.

    python3 dev.py bench [--quick] [--only NAME[,NAME]] [--json] [--readme]

Each benchmark of ``BENCHMARKS`` runs in a child process of its own (``--child``), so that
its memory figures and its Prefect server and state are its own; the child calls the
module's ``measure(quick)`` and hands back its figures as JSON in a file. A benchmark that
raises, times out or has no ``measure()`` yet is a row of the table, not the end of the run.

Exit status: 0 when every benchmark ran (a missed goal is a figure, not a failure: the
machine may be busy), 1 when one failed, 2 for a wrong option.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
README = ROOT / "README.md"
START_MARKER = "<!-- bench:start -->"
END_MARKER = "<!-- bench:end -->"
GRACE_SECONDS = 15.0
"""After a timeout, how long a child has to stop its Prefect server before it is killed."""

sys.path.insert(0, str(BENCH))  # as when run as a script: the benchmarks import `figures`
from figures import Figure  # noqa: E402


@dataclass(frozen=True)
class Bench:
    """One benchmark: a module of ``bench/`` offering ``measure(quick)``; ``options`` are
    passed to it as keyword arguments (one module measured in two set-ups is two entries)."""

    name: str
    module: str
    timeout_seconds: float = 1800.0
    quick_timeout_seconds: float = 300.0
    options: dict[str, Any] = field(default_factory=dict)


BENCHMARKS: list[Bench] = [
    Bench("cli_startup", "cli_startup"),
    Bench("engine_overhead", "engine_overhead"),
    Bench("approval_latency", "approval_latency"),
    Bench("concurrent_incidents", "concurrent_incidents", timeout_seconds=3600),
    Bench("gateway_load", "gateway_load"),
    Bench("mail_campaign", "mail_campaign"),
    Bench("audit_trail", "audit_trail"),
    Bench("scale_out_incidents", "scale_out_incidents", timeout_seconds=3600),
]


class Status:
    OK = "ok"
    FAILED = "failed"
    NOT_RUN = "not run"


@dataclass(frozen=True)
class Outcome:
    """What one benchmark gave: its figures, or why it has none."""

    name: str
    status: str
    figures: list[Figure] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0


# the machine ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures were measured on (read without importing Prefect)."""
    return {
        "cpus": os.cpu_count() or 0,
        "cpu_model": _proc_field("/proc/cpuinfo", "model name") or platform.processor(),
        "ram_gb": round(
            int((_proc_field("/proc/meminfo", "MemTotal") or "0 kB").split()[0]) / 2**20, 1
        ),
        "python": platform.python_version(),
        "prefect": _version("prefect"),
        "os": _os_name(),
        "load_at_start": round(os.getloadavg()[0], 2),
    }


def _proc_field(path: str, name: str) -> str:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return ""


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _os_name() -> str:
    pretty = ""
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                pretty = line.partition("=")[2].strip().strip('"')
    except OSError:
        pass
    kernel = f"{platform.system()} {platform.release()}"
    return f"{pretty}, {kernel}" if pretty else kernel


# the table (pure) ----------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()


def _met(met: bool | None) -> str:
    return "—" if met is None else ("yes" if met else "**no**")


def render_machine(facts: dict[str, Any]) -> str:
    """One line: the machine, as ``machine()`` describes it."""
    return (
        f"{facts['cpus']} × {facts['cpu_model']}, {facts['ram_gb']} GB RAM; "
        f"Python {facts['python']}; Prefect {facts['prefect']}; {facts['os']}; "
        f"load {facts['load_at_start']} at start"
    )


def render_table(outcomes: Sequence[Outcome]) -> str:
    """The Markdown table of every figure: a failed or missing benchmark is one row saying so."""
    lines = [
        "| benchmark | what | figure | goal | met | bare Prefect |",
        "|---|---|---|---|---|---|",
    ]
    for outcome in outcomes:
        if outcome.status != Status.OK:
            lines.append(
                f"| {outcome.name} | {outcome.status} | {_cell(outcome.error)} | | "
                f"{outcome.status} | |"
            )
            continue
        for figure in outcome.figures:
            lines.append(
                f"| {_cell(figure.benchmark)} | {_cell(figure.what)} | {_cell(figure.value)} | "
                f"{_cell(figure.goal) or '—'} | {_met(figure.met)} | {_cell(figure.peer) or '—'} |"
            )
    return "\n".join(lines)


def render_report(
    outcomes: Sequence[Outcome], facts: dict[str, Any], *, quick: bool, when: datetime
) -> str:
    """The table with what it was measured on, as printed and as put into the README."""
    sizes = "quick sizes (CI smoke, not the reference figures)" if quick else "full sizes"
    total = sum(o.seconds for o in outcomes)
    return (
        f"Measured {when:%Y-%m-%d %H:%M} UTC, {sizes}, in {total:.0f} s, each benchmark in "
        f"its own process. Machine: {render_machine(facts)}.\n\n{render_table(outcomes)}\n"
    )


def as_json(
    outcomes: Sequence[Outcome], facts: dict[str, Any], *, quick: bool, when: datetime
) -> str:
    return json.dumps(
        {
            "measured_at": when.isoformat(),
            "quick": quick,
            "machine": facts,
            "benchmarks": [asdict(o) for o in outcomes],
        },
        indent=2,
        ensure_ascii=False,
    )


def from_json(text: str) -> tuple[list[Outcome], dict[str, Any], bool, datetime]:
    """What ``as_json`` wrote: the outcomes, the machine, quick or not, when."""
    given = json.loads(text)
    outcomes = [
        Outcome(
            name=b["name"],
            status=b["status"],
            figures=[Figure(**f) for f in b["figures"]],
            error=b["error"],
            seconds=b["seconds"],
        )
        for b in given["benchmarks"]
    ]
    when = datetime.fromisoformat(given["measured_at"])
    return outcomes, dict(given["machine"]), bool(given["quick"]), when


def replace_between_markers(text: str, block: str) -> str:
    """``text`` with what lies between the two bench markers replaced by ``block``."""
    start, end = text.find(START_MARKER), text.find(END_MARKER)
    if start < 0 or end < start or text.count(START_MARKER) != 1 or text.count(END_MARKER) != 1:
        raise ValueError(
            f"the README must hold {START_MARKER} once, then {END_MARKER} once, around the "
            "benchmark table"
        )
    return f"{text[: start + len(START_MARKER)]}\n{block.strip()}\n{text[end:]}"


def rewrite_readme(path: Path, block: str) -> None:
    path.write_text(replace_between_markers(path.read_text(), block))


# running -------------------------------------------------------------------------------------


def run_one(bench: Bench, *, quick: bool, logs: Path) -> Outcome:
    """Run one benchmark in a child process; its output goes to ``logs``/NAME.log."""
    result = logs / f"{bench.name}.json"
    log = logs / f"{bench.name}.log"
    command = [sys.executable, str(Path(__file__).resolve()), "--child", bench.module]
    command += ["--result", str(result), "--options", json.dumps(bench.options)]
    command += ["--quick"] if quick else []
    timeout = bench.quick_timeout_seconds if quick else bench.timeout_seconds
    started = time.perf_counter()
    with log.open("w") as sink:
        # Unbuffered: a benchmark stopped at its time limit still shows how far it got.
        unbuffered = {**os.environ, "PYTHONUNBUFFERED": "1"}
        child = subprocess.Popen(
            command, cwd=ROOT, env=unbuffered, stdout=sink, stderr=subprocess.STDOUT
        )
        try:
            code: int | None = child.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        except BaseException:
            _stop(child)
            raise
        if code is None:
            _stop(child)
    seconds = time.perf_counter() - started
    if code is None:
        return Outcome(
            bench.name, Status.FAILED, error=f"timed out after {timeout:.0f} s", seconds=seconds
        )
    if code != 0 or not result.exists():
        return Outcome(bench.name, Status.FAILED, error=_last_error(log, code), seconds=seconds)
    given = json.loads(result.read_text())
    if "not_run" in given:
        return Outcome(bench.name, Status.NOT_RUN, error=given["not_run"], seconds=seconds)
    figures = [Figure(**f) for f in given["figures"]]
    return Outcome(bench.name, Status.OK, figures=figures, seconds=seconds)


def _stop(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM first (the child then stops its Prefect server), SIGKILL after a grace period;
    then SIGTERM to what it had started and left behind (servers and workers run in
    sessions of their own, out of reach of its process group)."""
    family = _descendants(child.pid)
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    for pid in family:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass  # stopped with the child


def _descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # ended meanwhile
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        for kid in parents.get(queue.pop(), []):
            found.append(kid)
            queue.append(kid)
    return found


def _last_error(log: Path, code: int | None) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    last = lines[-1] if lines else "no output"
    return f"exit {code}: {last[:300]}"


def child(module_name: str, result: Path, options: dict[str, Any], *, quick: bool) -> int:
    """In the child process: import the benchmark, measure, write the figures to ``result``."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # atexit stops the Prefect server
    sys.path[:0] = [str(BENCH), str(ROOT)]
    module = importlib.import_module(module_name)
    measure = getattr(module, "measure", None)
    if not callable(measure):
        reason = f"bench/{module_name}.py has no measure() yet: run it alone"
        result.write_text(json.dumps({"not_run": reason}))
        return 0
    figures = measure(quick=quick, **options)
    if not isinstance(figures, list) or not all(isinstance(f, Figure) for f in figures):
        raise TypeError(f"{module_name}.measure() must return a list of Figure")
    result.write_text(json.dumps({"figures": [asdict(f) for f in figures]}))
    return 0


def select(names: str | None, benchmarks: Sequence[Bench]) -> list[Bench]:
    if not names:
        return list(benchmarks)
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {b.name: b for b in benchmarks}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValueError(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(known)}")
    return [known[n] for n in wanted]


def run_all(chosen: Sequence[Bench], *, quick: bool) -> list[Outcome]:
    """Each benchmark in turn, its time (and its output when it failed) on stderr."""
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="tocsin-bench-logs-") as folder:
        for bench in chosen:
            outcome = run_one(bench, quick=quick, logs=Path(folder))
            print(
                f"[bench] {bench.name}: {outcome.status} in {outcome.seconds:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            if outcome.status == Status.FAILED:
                log = (Path(folder) / f"{bench.name}.log").read_text(errors="replace")
                print(f"[bench] {bench.name}'s output:\n{log[-4000:]}", file=sys.stderr)
            outcomes.append(outcome)
    return outcomes


def main(argv: Sequence[str] | None = None, benchmarks: Sequence[Bench] = BENCHMARKS) -> int:
    parser = argparse.ArgumentParser(
        prog="dev.py bench", description="Run the benchmarks and print one table."
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a CI smoke run")
    parser.add_argument("--only", metavar="NAME[,NAME]", help="these benchmarks only")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--readme", action="store_true", help="rewrite the README's table between its markers"
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="FILE",
        help="measure nothing: show (or put into the README) what an earlier --json run saved",
    )
    parser.add_argument("--child", metavar="MODULE", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    given = parser.parse_args(argv)
    if given.child:
        return child(given.child, given.result, json.loads(given.options), quick=given.quick)
    try:
        chosen = select(given.only, benchmarks)
    except ValueError as exc:
        print(f"dev.py bench: {exc}", file=sys.stderr)
        return 2
    if given.from_json:
        try:
            outcomes, facts, quick, when = from_json(given.from_json.read_text())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"dev.py bench: cannot read {given.from_json}: {exc}", file=sys.stderr)
            return 2
        names = {b.name for b in chosen}
        outcomes = [o for o in outcomes if not given.only or o.name in names]
    else:
        quick, facts, when = given.quick, machine(), datetime.now(UTC)
    if given.readme and (quick or given.only):
        print(
            "dev.py bench: --readme takes the full run's figures: leave out --quick and --only",
            file=sys.stderr,
        )
        return 2
    if not given.from_json:
        outcomes = run_all(chosen, quick=quick)
    if given.json:
        print(as_json(outcomes, facts, quick=quick, when=when))
    else:
        print(render_report(outcomes, facts, quick=quick, when=when))
    failed = [o.name for o in outcomes if o.status == Status.FAILED]
    if given.readme:
        if failed:
            print(
                f"dev.py bench: README left as it was: {', '.join(failed)} failed", file=sys.stderr
            )
        else:
            rewrite_readme(README, render_report(outcomes, facts, quick=False, when=when))
            print(f"[bench] rewrote the table in {README}", file=sys.stderr)
    return 1 if failed else 0


__all__ = [
    "BENCHMARKS",
    "Bench",
    "Figure",
    "Outcome",
    "Status",
    "as_json",
    "from_json",
    "machine",
    "main",
    "render_report",
    "render_table",
    "replace_between_markers",
    "rewrite_readme",
]


if __name__ == "__main__":
    sys.exit(main())
