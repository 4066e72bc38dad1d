"""What the fault tests share (a run killed, its journal's database or its Prefect server
gone, a service down): a runbook of three steps whose middle one the fault hits, `tocsin
run` as a subprocess started, killed mid-step and waited for, and the session's journal."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_runner import start_tocsin_run
from tests.engine_actions import calls
from tests.engine_support import HEAD, settings_journal, wait_until
from tocsin.journal import Journal


def three_steps(middle: str, last_title: str = "Last") -> str:
    """A runbook (``HEAD``'s, its ``{runbook_id}`` and other fields still to format) of the
    steps ``first``, then ``middle`` (YAML of one step, in the same format syntax), then
    ``last``; ``first`` and ``last`` count their calls in the ``state`` input's folder."""
    return (
        HEAD
        + """\
steps:
  - id: first
    title: First
    action: test.count
    with: {{file: "{{{{ inputs.state }}}}/first"}}
"""
        + middle
        + "  - id: last\n"
        + f"    title: {last_title}\n"
        + """\
    action: test.count
    with: {{file: "{{{{ inputs.state }}}}/last"}}
"""
    )


SLOW_STEP = three_steps(
    """\
  - id: slow
    title: Slow and {kind}
    action: {action}
    with: {{seconds: 20, file: "{{{{ inputs.state }}}}/slow"}}
"""
)
"""The runbook killed during its ``slow`` step: ``{kind}`` says how, ``{action}`` is the
step's action (``test.sleep`` and its idempotent and read-back kinds)."""


@pytest.fixture(scope="module")
def journal(prefect_server: str) -> Iterator[Journal]:
    """The journal the session's settings name, for the module."""
    opened = settings_journal()
    yield opened
    opened.close()


def finished(process: subprocess.Popen[str], timeout: float) -> str:
    """What ``process`` printed once it ended (within ``timeout``; killed otherwise)."""
    try:
        output, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return output


def kill_during_slow_step(journal: Journal, runbook: Path, ticket: str, state: Path) -> None:
    """`tocsin run` of a ``SLOW_STEP`` runbook, killed with kill -9 once its ``slow`` step has
    started: the run is left running, no process alive, its ``slow`` step in flight."""
    process = start_tocsin_run(runbook, ticket, state)
    try:
        wait_until(
            lambda: any(line.startswith("start") for line in calls(state / "slow")),
            timeout=90,
            what="the slow step to start",
        )
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
        assert process.stdout is not None
        process.stdout.close()
    run = journal.find_run(ticket, runbook.stem)
    assert run is not None and run.status == "running" and not run.is_alive()
    assert journal.step(run.id, "slow").status == "running"  # type: ignore[union-attr]
