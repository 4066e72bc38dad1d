"""Run the installed ``tocsin`` command as a subprocess, the way a user does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOCSIN = Path(sys.executable).parent / "tocsin"


def run_tocsin(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``tocsin ARGS``; colour is off (as when piped) unless ``env`` forces it."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("FORCE_COLOR", "NO_COLOR", "COLUMNS", "TERM")
    }
    environment.update({"COLUMNS": "200", **(env or {})})
    return subprocess.run(
        [str(TOCSIN), *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env=environment,
        timeout=timeout,
        check=False,
    )


def start_tocsin_run(runbook: Path, ticket: str, state: Path) -> subprocess.Popen[str]:
    """`tocsin run RUNBOOK --ticket T --as U0REQUESTER --set state=...` in the background."""
    return subprocess.Popen(
        [
            str(TOCSIN),
            "run",
            str(runbook),
            "--ticket",
            ticket,
            "--as",
            "U0REQUESTER",
            "--set",
            f"state={state}",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
