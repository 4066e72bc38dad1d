"""Judging the clicks the gateway acknowledged, after the chat service got its answer.

Each gateway process runs one ``ClickJudge``: a thread that claims queued clicks from the
journal (``tocsin.journal.click_queue``), hands each to the integration it came from
(Slack's ``judge_queued``: read the click, look the person up, judge and journal the
decision), marks it judged, and leaves what follows — waking the flow, telling the
clicker why a click did not count — to the gateway's background threads. It is woken
when this process queues a click, and looks every ``LOOK_EVERY_SECONDS`` for clicks
queued by another gateway, or claimed by one that died (its claim lapses after
``LEASE_SECONDS``); it looks first thing at start, so a gateway started after a crash
judges what the dead one left.

``FlowWaker``: the flow reads every pending decision when it wakes, so a run being woken
is not woken again for each click: at most one wake-up per run is on its way, and one
more after it when clicks came meanwhile.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Executor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.engine import Connection

from tocsin.journal import DecisionRecord, RunRecord
from tocsin.journal.click_queue import ClickOutcome, ClickQueue, QueuedClick

_log = logging.getLogger("tocsin.gateway")

LEASE_SECONDS = 10.0
"""A claim lapses after this: then another gateway (or this one) judges the click."""
CLAIM_BATCH = 50
"""Clicks claimed at once: judged together, their decisions journalled in one transaction
(fewer clicks when fewer wait: a batch is what was queued meanwhile)."""
LOOK_EVERY_SECONDS = 0.2
"""How often the judge looks for clicks it was not woken for (another gateway's)."""
MAX_ATTEMPTS = 5
"""A click that failed to be judged this many times is set aside as unreadable."""


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Verdict:
    """A queued click judged: its outcome, why, and ``after``: what to do once it is marked
    judged, on a background thread (wake the flow, tell the clicker)."""

    outcome: ClickOutcome
    reason: str
    after: Callable[[], None] = _nothing


ClickHandler = Callable[[QueuedClick], Verdict]
"""An integration's judge of the clicks it queued (by their ``source``)."""
ClickPreparer = Callable[[Sequence[QueuedClick]], None]
"""Called with the clicks of a claimed batch before they are judged one by one (Slack: look
the clickers up at once, read their gates at once)."""


class JudgedTogether(Protocol):
    """What the handlers of a claimed batch decide, journalled in one transaction with the
    marks that its clicks were judged (the gateway's ``DecisionBatch``)."""

    def judging(self, click_id: int) -> None:
        """The decisions made from now on are this queued click's."""

    def commit(self, mark: Callable[[Connection], Collection[int]]) -> set[int]:
        """Journal them, with ``mark`` (marking the clicks judged, in the same transaction,
        first) keeping only the clicks it marked; their ids."""
        ...


def gateway_owner() -> str:
    """This gateway process, as its claims name it: host, process, and a random part."""
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class ClickJudge:
    """The judge loop of one gateway process; see the module docstring."""

    def __init__(
        self,
        queue: ClickQueue,
        handlers: Mapping[str, ClickHandler],
        background: Executor,
        *,
        preparers: Mapping[str, ClickPreparer] | None = None,
        owner: str | None = None,
        lease_seconds: float = LEASE_SECONDS,
        batch: int = CLAIM_BATCH,
        look_every: float = LOOK_EVERY_SECONDS,
        threads: int = 1,
        batches: Callable[[], AbstractContextManager[JudgedTogether]] | None = None,
    ) -> None:
        """``threads``: judges claiming batches side by side (PostgreSQL: their database
        round trips overlap; SQLite takes one writer at a time, so one is enough).
        ``batches``: a batch for the decisions of each claimed batch of clicks, journalled
        with their marks in one transaction; without it each handler journals its own
        decision, and the batch's marks are written after."""
        self.batches = batches
        self.queue = queue
        self.handlers = handlers
        self.preparers = preparers if preparers is not None else {}
        self.background = background
        self.owner = owner or gateway_owner()
        self.lease_seconds = lease_seconds
        self.batch = batch
        self.look_every = look_every
        self._woken = threading.Event()
        self._closing = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name=f"gateway-click-judge-{n}", daemon=True)
            for n in range(threads)
        ]

    def start(self) -> ClickJudge:
        for thread in self._threads:
            thread.start()
        return self

    def wake(self) -> None:
        """Clicks were queued: look now."""
        self._woken.set()

    def close(self) -> None:
        """Stop after the click being judged; clicks claimed and not judged are taken again
        when their claim lapses."""
        self._closing.set()
        self._woken.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=self.lease_seconds)

    def _run(self) -> None:
        if threading.current_thread() is self._threads[0]:
            try:
                self.queue.prune()
            except Exception as exc:  # pruning is housekeeping: judging goes on
                _log.warning("cannot delete old judged clicks: %s", exc)
        while not self._closing.is_set():
            self._woken.clear()
            try:
                claimed = self.queue.claim(self.owner, self.batch, self.lease_seconds)
            except Exception as exc:  # the journal is away: look again soon
                _log.error("cannot claim queued clicks: %s", exc)
                claimed = []
            if claimed:
                self._judge_all(claimed)
            else:
                self._woken.wait(self.look_every)

    def _judge_all(self, claimed: list[QueuedClick]) -> None:
        if self.batches is None:
            verdicts = self._verdicts(claimed, None)
            try:
                self.queue.judged([(c.id, v.outcome, v.reason) for c, v in verdicts])
            except Exception as exc:  # judged again later: the decisions they led to are found then
                _log.error("cannot mark %d queued clicks judged: %s", len(verdicts), exc)
            marked = {click.id for click, _ in verdicts}
        else:
            with self.batches() as batch:
                verdicts = self._verdicts(claimed, batch)
                rows = [(c.id, v.outcome, v.reason) for c, v in verdicts]
                try:
                    marked = batch.commit(lambda db: self.queue.mark_judged(db, rows))
                except Exception as exc:  # nothing written: judged again once the claim lapses
                    _log.error(
                        "cannot journal the decisions of %d queued clicks (they stay queued): %s",
                        len(rows),
                        exc,
                    )
                    return
        for click, verdict in verdicts:
            if click.id in marked:  # else another judge marked it: its decision holds
                self.background.submit(verdict.after)

    def _verdicts(
        self, claimed: list[QueuedClick], batch: JudgedTogether | None
    ) -> list[tuple[QueuedClick, Verdict]]:
        for source in {click.source for click in claimed}:
            prepare = self.preparers.get(source)
            if prepare is not None:
                try:  # e.g. every clicker looked up in Slack at once, not one after another
                    prepare([click for click in claimed if click.source == source])
                except Exception:
                    _log.exception("preparing to judge clicks from %s failed", source)
        renew_at = time.monotonic() + self.lease_seconds / 2
        verdicts: list[tuple[QueuedClick, Verdict]] = []
        for index, click in enumerate(claimed):
            if self._closing.is_set():
                break
            if time.monotonic() > renew_at:  # judging is slow (Slack is): keep the claim
                rest = [c.id for c in claimed[index:]]
                try:
                    self.queue.extend(self.owner, rest, self.lease_seconds)
                except Exception as exc:
                    _log.error("cannot keep the claim on queued clicks: %s", exc)
                renew_at = time.monotonic() + self.lease_seconds / 2
            if batch is not None:
                batch.judging(click.id)
            verdict = self.judge(click)
            if verdict is not None:
                verdicts.append((click, verdict))
        return verdicts

    def judge(self, click: QueuedClick) -> Verdict | None:
        """Judge one claimed click; None on an unexpected error: it stays queued (judged
        again once its claim lapses), until ``MAX_ATTEMPTS``."""
        handler = self.handlers.get(click.source)
        if handler is None:
            return Verdict(ClickOutcome.UNREADABLE, f"no integration judges {click.source!r}")
        try:
            return handler(click)
        except Exception as exc:
            _log.exception("judging queued click %s failed", click.id)
            if click.attempts < MAX_ATTEMPTS:
                return None
            return Verdict(
                ClickOutcome.UNREADABLE,
                f"judging failed {click.attempts} times ({type(exc).__name__})",
            )


class FlowWaker:
    """Wakes runs' flows for the decisions journalled for them; see the module docstring."""

    def __init__(
        self, background: Executor, deliver: Callable[[RunRecord, DecisionRecord], None]
    ) -> None:
        self.background = background
        self._deliver = deliver
        self._lock = threading.Lock()
        self._busy: set[int] = set()
        self._again: dict[int, tuple[RunRecord, DecisionRecord]] = {}

    def wake(self, run: RunRecord, decision: DecisionRecord) -> None:
        """Wake the run's flow for ``decision`` (and whatever else is pending for it)."""
        with self._lock:
            if run.id in self._busy:
                self._again[run.id] = (run, decision)  # the latest: the flow reads the rest
                return
            self._busy.add(run.id)
        self.background.submit(self._waking, run, decision)

    def _waking(self, run: RunRecord, decision: DecisionRecord) -> None:
        while True:
            try:
                self._deliver(run, decision)
            except Exception:  # the flow reads the journal before each pause anyway
                _log.exception("waking the flow of run %s failed", run.id)
            with self._lock:
                if run.id not in self._again:
                    self._busy.discard(run.id)
                    return
                run, decision = self._again.pop(run.id)


__all__ = [
    "CLAIM_BATCH",
    "LEASE_SECONDS",
    "LOOK_EVERY_SECONDS",
    "MAX_ATTEMPTS",
    "ClickHandler",
    "ClickJudge",
    "ClickPreparer",
    "FlowWaker",
    "JudgedTogether",
    "Verdict",
    "gateway_owner",
]
