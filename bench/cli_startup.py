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

from figures import Figure

ROOT = Path(__file__).resolve().parent.parent
TOCSIN = Path(sys.executable).parent / "tocsin"


def timed(args: list[str], runs: int) -> list[float]:
    durations = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([str(TOCSIN), *args], cwd=ROOT, capture_output=True, check=True)
        durations.append(time.perf_counter() - started)
    return durations


CASES = {
    "tocsin --help": ["--help"],
    "tocsin validate runbooks/": ["validate", "runbooks/"],
    "tocsin plan mailbox-compromise": [
        "plan",
        "runbooks/mailbox-compromise.yaml",
        "--set",
        "user=a@broker.example",
    ],
}
HELP_GOAL_SECONDS = 0.3


def medians(runs: int) -> dict[str, tuple[float, float]]:
    """Each case's median and slowest start, in seconds, printed as they come."""
    print(f"{'command':34} {'median':>8} {'slowest':>8}   ({runs} runs each)")
    figures = {}
    for label, args in CASES.items():
        durations = timed(args, runs)
        figures[label] = (statistics.median(durations), max(durations))
        print(f"{label:34} {figures[label][0]:7.3f}s {figures[label][1]:7.3f}s")
    return figures


def measure(quick: bool = False) -> list[Figure]:
    runs = 3 if quick else 20
    figures = []
    for label, (median, slowest) in medians(runs).items():
        is_help = label == "tocsin --help"
        figures.append(
            Figure(
                "cli_startup",
                f"`{label}`, median of {runs} fresh processes",
                f"{median:.2f} s (slowest {slowest:.2f} s)",
                goal=f"< {HELP_GOAL_SECONDS} s" if is_help else "",
                met=median < HELP_GOAL_SECONDS if is_help else None,
            )
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs
    medians(runs)
    help_median = statistics.median(timed(["--help"], runs))
    verdict = "meets" if help_median < HELP_GOAL_SECONDS else "MISSES"
    print(f"--help median {help_median:.3f}s {verdict} the {HELP_GOAL_SECONDS} s goal")


if __name__ == "__main__":
    main()
