"""`tocsin gateway` judges clicks in a process of its own (``gateway.judge_process``): the
answering process restarts it when it dies, and it never outlives the answering process.

A real ``tocsin gateway`` subprocess (live mode, on this module's fake Slack and journal), a
real run waiting at a real gate on the session's Prefect server, clicks signed as Slack
signs them; processes killed with SIGKILL and stopped with Ctrl-C (SIGINT).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests import gateway_support
from tests.engine_support import wait_until
from tests.gateway_support import running_gateway
from tests.test_click_queue import (
    SIGNING_SECRET,
    environment,
    gate_message,
    received,
    slack,
    start,
)
from tocsin.gateway.judging_process import RESTART_EVERY_SECONDS
from tocsin.integrations.slack.fake import FakeSlack
from tocsin.integrations.slack.simulated_user import SimulatedSlack
from tocsin.journal import Journal

# Fixtures, each started once for this module.
journal = gateway_support.journal
__all__ = ["environment", "journal", "slack"]

pytestmark = pytest.mark.slow


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"  # ended, not yet reaped by its parent


def test_a_judging_process_that_dies_is_started_again_and_judges_what_came_meanwhile(
    prefect_server: str, environment: Path, journal: Journal, slack: FakeSlack
) -> None:
    flow = start(environment, journal, "JP-1")
    message = gate_message(slack, "JP-1")
    with running_gateway(prefect_server) as gateway:
        first = gateway.judge_pid()
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: _gone(first), timeout=10, what="the judge's end")
        # Answered and queued while nobody judges: Slack still gets its answer at once.
        with SimulatedSlack(gateway.url, SIGNING_SECRET, fake_slack=slack) as clicker:
            assert clicker.click("U0LEAD1", message, "tocsin_approve").status_code == 200
        wait_until(
            lambda: received(journal, "JP-1") == ["U0LEAD1"],
            timeout=RESTART_EVERY_SECONDS + 40,
            what="the decision, by the judge started again",
        )
        assert flow.finish()["status"] == "succeeded"
        assert gateway.judge_pid() != first
        assert (gateway.health() or {}).get("judging") is True
        assert gateway.process.poll() is None


@pytest.mark.usefixtures("environment", "journal")  # the journal makes the signing key
def test_the_judging_process_ends_when_the_gateway_is_killed(prefect_server: str) -> None:
    with running_gateway(prefect_server) as gateway:
        judge = gateway.judge_pid()
        gateway.process.kill()  # SIGKILL: nothing of the gateway runs after this
        gateway.process.wait(10)
        wait_until(lambda: _gone(judge), timeout=20, what="the orphaned judge's end")


@pytest.mark.usefixtures("environment", "journal")  # the journal makes the signing key
def test_ctrl_c_stops_the_gateway_and_its_judge_without_a_traceback(prefect_server: str) -> None:
    with running_gateway(prefect_server) as gateway:
        judge = gateway.judge_pid()
        os.killpg(gateway.process.pid, signal.SIGINT)  # Ctrl-C reaches the whole group
        gateway.output, _ = gateway.process.communicate(timeout=40)
        output = gateway.output
        assert gateway.process.returncode == 130, output  # the shell's code for Ctrl-C
        assert "Traceback" not in output
        assert "clicks judged by process" in output
        wait_until(lambda: _gone(judge), timeout=10, what="the judge's end")
