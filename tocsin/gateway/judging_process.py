"""The click judge in a process of its own, beside the process that answers Slack.

``tocsin gateway`` answers each click as soon as it is committed in the journal's click
queue; judging it (looking the clicker up, reading the gate, journalling the decision),
waking the run's flow and telling a refused clicker why all come after. In one process
they fight the answers for Python's interpreter, and under load the answers wait for it
(hundreds of milliseconds at 200 clicks a second). So the gateway's process only answers
and queues, and a child process (``JudgingProcess``) judges:

- it builds its own ``Gateway`` over the same settings, secrets and journal, with the click
  judge running (``judges_clicks=True``) and no HTTP server: it is a gateway of its own for
  the click queue, whose claims and leases already let any gateway process judge any click;
- the answering process wakes it after each commit of clicks (a byte on a pipe between
  them); it also looks on its own every ``LOOK_EVERY_SECONDS``, as every judge does;
- it ignores Ctrl-C (the answering process stops it, with another byte: it ends the batch
  it is judging) and ends by itself when the answering process is gone (the pipe closes:
  killed, it does not outlive it);
- if it dies, the answering process starts another (at most one every
  ``RESTART_EVERY_SECONDS``); meanwhile clicks are still answered and queued, and the
  clicks it had claimed are judged again once their claim lapses.

Setting ``gateway.judge_process = false`` judges in a thread of the answering process instead
(as the in-process ``GatewayServer`` of tests and the sandbox always does).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tocsin.settings import SecretStore, Settings

_log = logging.getLogger("tocsin.gateway")

RESTART_EVERY_SECONDS = 5.0
"""A judging process that died is started again after at most this long."""
WATCH_EVERY_SECONDS = 1.0
"""How often the answering process checks its judge is still there."""
WAKE = b"w"
STOP = b"s"
READY = b"ready"
STOP_SECONDS = 15.0
"""How long stopping waits for the judge to end its batch before it is terminated."""
CLOSE_SECONDS = 10.0
"""How long the judge, told to stop, waits for its batch and wake-ups to end before it ends."""


class JudgingProcess:
    """Starts, watches and stops the judging child process; see the module docstring."""

    def __init__(
        self, settings: Settings, secrets: SecretStore, prefect_url: str | None = None
    ) -> None:
        """``prefect_url``: the Prefect server the answering process uses, when it chose it
        (``using_prefect``); None: the environment's, which the child inherits."""
        self._context = multiprocessing.get_context("spawn")
        # The settings class is made at run time (a slot per integration): it goes as data.
        self._arguments = (settings.model_dump(mode="json"), secrets, prefect_url)
        self._process: SpawnProcess | None = None
        self._pipe: Connection | None = None
        self._ready = False
        self._closed = threading.Event()
        self._watcher = threading.Thread(
            target=self._watch, name="gateway-judge-watcher", daemon=True
        )
        self.restarts = 0

    def start(self) -> JudgingProcess:
        self._spawn()
        self._watcher.start()
        return self

    @property
    def alive(self) -> bool:
        """The judge is up: started, and judging (it said it was ready)."""
        process = self._process
        if process is None or not process.is_alive():
            return False
        if not self._ready:
            pipe = self._pipe
            try:
                self._ready = pipe is not None and pipe.poll() and pipe.recv_bytes() == READY
            except (EOFError, OSError):
                return False
        return self._ready

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def wake(self) -> None:
        """Clicks were committed: the judge looks now."""
        self._say(WAKE)

    def _say(self, what: bytes) -> None:
        pipe = self._pipe
        if pipe is None:
            return
        try:
            os.write(pipe.fileno(), what)  # one byte: written whole, or not at all
        except (BlockingIOError, OSError):
            pass  # full: it has wake-ups to read; gone: the watcher starts another

    def close(self) -> None:
        """Stop the judge after its batch (terminated if it takes longer than
        ``STOP_SECONDS``); what it claimed and did not judge is judged once the claim lapses."""
        self._closed.set()
        self._say(STOP)
        process = self._process
        if process is None:
            return
        process.join(STOP_SECONDS)
        if process.is_alive():
            _log.warning("the judging process did not stop in %.0f s: terminated", STOP_SECONDS)
            process.terminate()
            process.join(5)
        if process.is_alive():
            process.kill()
            process.join(5)
        if self._pipe is not None:
            self._pipe.close()

    def _spawn(self) -> None:
        settings, secrets, prefect_url = self._arguments
        ours, theirs = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=judge_clicks,
            args=(settings, secrets, prefect_url, theirs),
            name="tocsin-gateway-judge",
            daemon=False,
        )
        process.start()
        theirs.close()  # the child has its own: when this process dies, it reads the end
        os.set_blocking(ours.fileno(), False)  # a wake-up never holds up an answer
        previous, self._pipe = self._pipe, ours
        if previous is not None:
            previous.close()
        self._ready = False
        self._process = process
        _log.info("click judge started in process %s", process.pid)

    def _watch(self) -> None:
        last_start = time.monotonic()
        while not self._closed.wait(WATCH_EVERY_SECONDS):
            process = self._process
            if process is None or process.is_alive():
                continue
            _log.error(
                "the judging process %s ended (exit code %s): clicks are still answered and "
                "queued; starting another",
                process.pid,
                process.exitcode,
            )
            wait = RESTART_EVERY_SECONDS - (time.monotonic() - last_start)
            if wait > 0 and self._closed.wait(wait):
                return
            process.join(0)
            self._spawn()
            self.restarts += 1
            last_start = time.monotonic()


def judge_clicks(
    settings_data: dict[str, Any],
    secrets: SecretStore,
    prefect_url: str | None,
    told: Connection,
) -> None:
    """The judging process: a ``Gateway`` on the settings ``settings_data`` (dumped) judging
    clicks, woken by what ``told`` says, until it says stop or the answering process is gone."""
    from contextlib import AbstractContextManager, nullcontext

    from tocsin.embedded import prefect_pointed_at
    from tocsin.errors import TocsinError
    from tocsin.gateway.app import Gateway
    from tocsin.settings import settings_class

    settings = settings_class().model_validate(settings_data)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the answering process stops it
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s judge %(message)s")
    pointed: AbstractContextManager[Any] = (
        prefect_pointed_at(settings, prefect_url) if prefect_url else nullcontext()
    )
    with pointed:
        try:
            gateway = Gateway(settings, secrets=secrets, judges_clicks=True)
        except TocsinError as error:  # the journal is away: the answering process tries again
            _log.error("the click judge cannot start: %s", error.message)
            raise SystemExit(1) from None
        try:
            told.send_bytes(READY)
        except OSError:  # the answering process ended while this one started
            _close_within(gateway, CLOSE_SECONDS)
            return
        try:
            while True:
                try:
                    said = os.read(told.fileno(), 4096)
                except InterruptedError:
                    continue
                if not said:
                    _log.warning("the gateway's answering process is gone: the judge stops")
                    break
                if STOP in said:
                    break
                gateway.click_judge.wake()
        finally:
            _close_within(gateway, CLOSE_SECONDS)


def _close_within(gateway: Any, seconds: float) -> None:
    """Close the judge's gateway; if that takes longer than ``seconds`` (a flow being woken
    through a Prefect server that is gone), end the process all the same: what it claimed
    and did not mark judged is judged again once the claim lapses."""
    closing = threading.Thread(target=gateway.close, name="gateway-judge-closing", daemon=True)
    closing.start()
    closing.join(seconds)
    if closing.is_alive():
        _log.warning("the judge did not close in %.0f s: it ends without waiting", seconds)
        logging.shutdown()
        os._exit(0)


__all__ = ["RESTART_EVERY_SECONDS", "JudgingProcess", "judge_clicks"]
