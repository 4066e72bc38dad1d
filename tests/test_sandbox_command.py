"""`tocsin sandbox`: the fakes served for workers and gateways in other processes."""

from __future__ import annotations

import os
import shlex
import signal
import stat
import subprocess
from pathlib import Path

from tests.cli_runner import TOCSIN, run_tocsin
from tests.engine_support import wait_until


def _read_environment(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        values[name] = shlex.split(value)[0] if value else ""
    return values


def test_the_sandbox_serves_its_fakes_to_other_processes_until_stopped(tmp_path: Path) -> None:
    env_file = tmp_path / "shared" / "sandbox.env"
    data = {"TOCSIN_DATA_DIR": str(tmp_path / "data")}
    process = subprocess.Popen(
        [str(TOCSIN), "sandbox", "--env-file", str(env_file)],
        env={**os.environ, **data},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(env_file.exists, timeout=60, what="the sandbox's environment file")
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600  # it holds the fakes' secrets
        shared = _read_environment(env_file)
        assert shared["TOCSIN_MODE"] == "sandbox" and shared["TOCSIN_SANDBOX_SHARED"] == "true"
        assert shared["TOCSIN_SLACK__API_URL"].startswith("https://127.0.0.1:")
        assert "TOCSIN_SECRET_SLACK_SIGNING_SECRET" in shared

        # Another process given that environment checks the shared fakes, starting none.
        checked = run_tocsin("integrations", "check", "slack", env={**data, **shared})
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "signs in as @tocsin" in checked.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "Environment for workers, gateways and runs" in output
    assert not env_file.exists()  # the fakes are gone: so is the file pointing at them
    # It was those fakes it checked: with them gone, the same check cannot reach Slack.
    again = run_tocsin("integrations", "check", "slack", env={**data, **shared})
    assert again.returncode == 1, again.stdout + again.stderr


def test_the_sandbox_refuses_to_start_in_live_mode(tmp_path: Path) -> None:
    result = run_tocsin("sandbox", env={"TOCSIN_DATA_DIR": str(tmp_path), "TOCSIN_MODE": "live"})
    assert result.returncode == 3
    assert "mode live" in result.stderr and "Traceback" not in result.stderr
