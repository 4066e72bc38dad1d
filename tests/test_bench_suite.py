"""`python3 dev.py bench`: one table from every benchmark, each run in a process of its own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import pytest

from bench.suite import (
    END_MARKER,
    START_MARKER,
    Bench,
    Figure,
    Outcome,
    Status,
    as_json,
    from_json,
    main,
    render_report,
    render_table,
    rewrite_readme,
)
from tests.engine_support import wait_until

ROOT = Path(__file__).resolve().parent.parent
MACHINE = {
    "cpus": 2,
    "cpu_model": "Test CPU",
    "ram_gb": 7.8,
    "python": "3.11.7",
    "prefect": "3.8.8",
    "os": "Debian GNU/Linux 12 (bookworm), Linux 6.1",
    "load_at_start": 0.5,
}


def test_table_shows_each_figure_its_goal_verdict_and_bare_prefect_peer() -> None:
    outcomes = [
        Outcome(
            "engine_overhead",
            Status.OK,
            figures=[
                Figure(
                    "engine_overhead", "per step", "6.6 ms (1.31× bare)", "≤ 1.5×", True, "5.0 ms"
                ),
                Figure("engine_overhead", "per run", "1.20 s", peer="1.05 s"),
            ],
            seconds=12.0,
        ),
        Outcome(
            "approval_latency",
            Status.OK,
            figures=[Figure("approval_latency", "p50 | p95", "p95 2.1 s", "p95 ≤ 1.5 s", False)],
            seconds=30.0,
        ),
        Outcome("audit_trail", Status.FAILED, error="exit 1: RuntimeError: disk full", seconds=1.0),
        Outcome("gateway_load", Status.NOT_RUN, error="bench/gateway_load.py has no measure() yet"),
    ]
    assert render_table(outcomes).splitlines() == [
        "| benchmark | what | figure | goal | met | bare Prefect |",
        "|---|---|---|---|---|---|",
        "| engine_overhead | per step | 6.6 ms (1.31× bare) | ≤ 1.5× | yes | 5.0 ms |",
        "| engine_overhead | per run | 1.20 s | — | — | 1.05 s |",
        "| approval_latency | p50 \\| p95 | p95 2.1 s | p95 ≤ 1.5 s | **no** | — |",
        "| audit_trail | failed | exit 1: RuntimeError: disk full | | failed | |",
        "| gateway_load | not run | bench/gateway_load.py has no measure() yet | | not run | |",
    ]
    report = render_report(
        outcomes, MACHINE, quick=True, when=datetime(2026, 12, 3, 7, 5, tzinfo=UTC)
    )
    assert report.startswith(
        "Measured 2026-12-03 07:05 UTC, quick sizes (CI smoke, not the reference figures), "
        "in 43 s, each benchmark in its own process. Machine: 2 × Test CPU, 7.8 GB RAM; "
        "Python 3.11.7; Prefect 3.8.8; Debian GNU/Linux 12 (bookworm), Linux 6.1; "
        "load 0.5 at start.\n\n| benchmark |"
    )


def test_a_saved_json_run_gives_the_same_table_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outcomes = [
        Outcome(
            "cli_startup", Status.OK, [Figure("cli_startup", "--help", "0.05 s", "< 0.3 s", True)]
        ),
        Outcome("audit_trail", Status.FAILED, error="timed out after 1800 s", seconds=1800.0),
    ]
    when = datetime(2026, 12, 3, 7, 5, tzinfo=UTC)
    saved = tmp_path / "run.json"
    saved.write_text(as_json(outcomes, MACHINE, quick=False, when=when))
    assert from_json(saved.read_text()) == (outcomes, MACHINE, False, when)

    assert main(["--from-json", str(saved)]) == 1  # a failed benchmark in it
    shown = capsys.readouterr().out
    assert shown == render_report(outcomes, MACHINE, quick=False, when=when) + "\n"
    assert main(["--from-json", str(saved), "--only", "cli_startup"]) == 0
    assert "audit_trail" not in capsys.readouterr().out

    saved.write_text("{}")
    assert main(["--from-json", str(saved)]) == 2
    assert f"cannot read {saved}" in capsys.readouterr().err


def test_readme_rewrite_replaces_only_what_lies_between_the_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    original = readme.read_text()
    before, _, rest = original.partition(START_MARKER)
    _, _, after = rest.partition(END_MARKER)
    assert (
        "| benchmark | what | figure | goal | met | bare Prefect |" in rest.partition(END_MARKER)[0]
    )

    table = "| benchmark | what |\n|---|---|\n| cli_startup | --help |\n"
    rewrite_readme(readme, table)
    rewritten = readme.read_text()
    assert rewritten == f"{before}{START_MARKER}\n{table}{END_MARKER}{after}"

    rewrite_readme(readme, table)  # twice: the same file
    assert readme.read_text() == rewritten

    readme.write_text(original.replace(END_MARKER, ""))
    with pytest.raises(ValueError, match="bench:end"):
        rewrite_readme(readme, table)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def write_benches(folder: Path) -> None:
    (folder / "tiny_bench.py").write_text(
        "from figures import Figure\n\n"
        "def measure(quick: bool = False) -> list[Figure]:\n"
        "    return [Figure('tiny', 'quick' if quick else 'full', '1 s', '< 2 s', True)]\n"
    )
    (folder / "boom_bench.py").write_text(
        "def measure(quick: bool = False) -> list[object]:\n"
        "    raise RuntimeError('the fake SMTP server refused the connection')\n"
    )
    (folder / "old_bench.py").write_text("def main() -> None:\n    print('figures')\n")
    # Stuck, with a server of its own in a session of its own (as Prefect's are).
    (folder / "stuck_bench.py").write_text(
        "import pathlib, subprocess, sys, time\n\ndef measure(quick: bool = False) -> list[object]:\n"
        "    server = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'],"
        " start_new_session=True)\n"
        f"    pathlib.Path({str(folder / 'server.pid')!r}).write_text(str(server.pid))\n"
        "    time.sleep(120)\n    return []\n"
    )


def test_a_bench_that_raises_is_a_failed_row_and_the_run_goes_on_and_exits_non_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_benches(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), str(ROOT)]))
    benches = [
        Bench("boom", "boom_bench"),
        Bench("tiny", "tiny_bench"),
        Bench("old", "old_bench"),
        Bench("stuck", "stuck_bench", quick_timeout_seconds=3),
    ]
    started = time.monotonic()
    code = main(["--quick"], benchmarks=benches)
    assert time.monotonic() - started < 60  # the stuck one was stopped
    shown = capsys.readouterr()
    assert code == 1
    rows = [line for line in shown.out.splitlines() if line.startswith("| ")]
    assert rows[1:] == [
        "| boom | failed | exit 1: RuntimeError: the fake SMTP server refused the connection "
        "| | failed | |",
        "| tiny | quick | 1 s | < 2 s | yes | — |",
        "| old | not run | bench/old_bench.py has no measure() yet: run it alone | | not run | |",
        "| stuck | failed | timed out after 3 s | | failed | |",
    ]
    assert "Traceback" in shown.err  # the failed bench's own output, for whoever runs it
    server = int((tmp_path / "server.pid").read_text())
    wait_until(lambda: not alive(server), timeout=20, what="the stuck bench's server stopped")

    # Without the failures: exit 0, a benchmark without measure() is not a failure.
    assert main(["--only", "tiny,old"], benchmarks=benches) == 0
    assert "| tiny | full | 1 s |" in capsys.readouterr().out


def test_unknown_benchmark_or_readme_with_quick_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--only", "cli_startup,gatway_load"]) == 2
    assert "unknown benchmark gatway_load; known: cli_startup, engine_overhead" in (
        capsys.readouterr().err
    )
    assert main(["--readme", "--quick"]) == 2
    assert "--readme takes the full run's figures" in capsys.readouterr().err


@pytest.mark.slow
def test_dev_bench_quick_json_gives_the_machine_and_the_figures() -> None:
    done = subprocess.run(
        [sys.executable, "dev.py", "bench", "--quick", "--only", "cli_startup", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    given = json.loads(done.stdout)
    assert given["quick"] is True
    machine = given["machine"]
    assert machine["cpus"] == os.cpu_count()
    assert machine["prefect"] == metadata.version("prefect")
    assert machine["python"] == ".".join(str(n) for n in sys.version_info[:3])
    assert machine["ram_gb"] > 0 and machine["os"] and machine["cpu_model"]
    [bench] = given["benchmarks"]
    assert (bench["name"], bench["status"], bench["error"]) == ("cli_startup", "ok", "")
    whats = [f["what"] for f in bench["figures"]]
    assert whats == [
        "`tocsin --help`, median of 3 fresh processes",
        "`tocsin validate runbooks/`, median of 3 fresh processes",
        "`tocsin plan mailbox-compromise`, median of 3 fresh processes",
    ]
    help_figure = bench["figures"][0]
    seconds = float(help_figure["value"].split()[0])
    assert 0 < seconds < 30
    assert help_figure["goal"] == "< 0.3 s"
    assert help_figure["met"] is (seconds < 0.3) or seconds == 0.3  # shown rounded
