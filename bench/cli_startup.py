"""How fast the tocsin command answers: `--help` (goal < 0.3 s) and validating the shipped runbooks.

    .venv/bin/python bench/cli_startup.py [--runs 20]

Prints the median and the slowest of several runs, each a fresh process, as a user sees it.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOCSIN = Path(sys.executable).parent / "tocsin"


def timed(args: list[str], runs: int) -> list[float]:
    durations = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([str(TOCSIN), *args], cwd=ROOT, capture_output=True, check=True)
        durations.append(time.perf_counter() - started)
    return durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs
    cases = {
        "tocsin --help": ["--help"],
        "tocsin validate runbooks/": ["validate", "runbooks/"],
        "tocsin plan mailbox-compromise": [
            "plan",
            "runbooks/mailbox-compromise.yaml",
            "--set",
            "user=a@broker.example",
        ],
    }
    print(f"{'command':34} {'median':>8} {'slowest':>8}   ({runs} runs each)")
    for label, args in cases.items():
        durations = timed(args, runs)
        print(f"{label:34} {statistics.median(durations):7.3f}s {max(durations):7.3f}s")
    help_median = statistics.median(timed(["--help"], runs))
    verdict = "meets" if help_median < 0.3 else "MISSES"
    print(f"--help median {help_median:.3f}s {verdict} the 0.3 s goal")


if __name__ == "__main__":
    main()
