"""How long a step waits before trying its action again, and why.

The step's ``retry:`` gives a backoff (``backoff × backoff_factor^n``); a service that
refused with 429 or 503 may have said how long to wait (``IntegrationError.retry_after``,
its ``Retry-After``). The wait is the longer of the two, never more than the cap: the
``max_retry_wait_seconds`` setting (5 minutes by default), and the step's own
``timeout`` when it has one, so that neither a large ``backoff_factor`` nor a broken or
hostile server (``Retry-After: 999999999``) can hold a run for days. The reason goes in the
``step.retried`` record.

Prefect waits, between the attempts of the step's task (``AwaitingRetry``): it reads the
delay of retry ``n`` from the task's ``retry_delay_seconds`` when it schedules it.
``RetryDelays`` is that list for one step, answering what ``RetryWaits`` decided when the
attempt failed, or the capped backoff for a failure that did not get that far.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import SupportsIndex, overload


@dataclass(frozen=True)
class RetryWait:
    """The wait before one retry: ``seconds``, and ``reason`` for the trail."""

    seconds: float
    reason: str
    asked: float | None = None
    """What the service asked (its Retry-After), if it said."""


def decide_wait(backoff: float, asked: float | None, cap: float, cap_named: str) -> RetryWait:
    """max(``backoff``, ``asked``), at most ``cap`` (``cap_named``: where the cap comes from)."""
    wanted = backoff if asked is None else max(backoff, asked)
    if asked is None:
        reason = f"the step's backoff ({backoff:g} s)"
    elif asked > backoff:
        reason = f"the service asked for {asked:g} s (Retry-After)"
    else:
        reason = f"the step's backoff ({backoff:g} s; the service asked for {asked:g} s)"
    if wanted > cap:
        return RetryWait(cap, f"{reason}, capped at {cap:g} s ({cap_named})", asked)
    return RetryWait(wanted, reason, asked)


class RetryWaits:
    """The waits decided for the retries of one step, read by its ``RetryDelays``."""

    def __init__(self, backoffs: list[float], cap: float, cap_named: str) -> None:
        self.backoffs = backoffs
        self.cap = cap
        self.cap_named = cap_named
        self._decided: dict[int, RetryWait] = {}
        self._lock = threading.Lock()

    def backoff(self, retry: int) -> float:
        """The step's own backoff before retry ``retry`` (0-based), the last one repeated."""
        if not self.backoffs:
            return 0.0
        return self.backoffs[min(retry, len(self.backoffs) - 1)]

    def decide(self, retry: int, asked: float | None) -> RetryWait:
        """The wait before retry ``retry`` (0-based), given what the service asked."""
        wait = decide_wait(self.backoff(retry), asked, self.cap, self.cap_named)
        with self._lock:
            self._decided[retry] = wait
        return wait

    def taken(self, retry: int) -> RetryWait:
        """The wait before retry ``retry``: as decided, else (a failure the step did not see,
        like a bug's exception) the capped backoff."""
        with self._lock:
            decided = self._decided.get(retry)
        return decided or decide_wait(self.backoff(retry), None, self.cap, self.cap_named)

    def seconds(self, retry: int) -> float:
        """What Prefect waits before retry ``retry`` (``taken``)."""
        return self.taken(retry).seconds

    def forget(self) -> None:
        """A new task run of the step starts: its retries are decided again."""
        with self._lock:
            self._decided.clear()


class RetryDelays(list[float]):
    """A step task's ``retry_delay_seconds``: item ``n`` is the wait before retry ``n`` as
    ``RetryWaits`` decided it (Prefect indexes it when it schedules the retry)."""

    def __init__(self, waits: RetryWaits, retries: int) -> None:
        # The values themselves are what Prefect records of the policy: the capped backoffs.
        super().__init__(min(waits.backoff(n), waits.cap) for n in range(retries))
        self.waits = waits

    @overload
    def __getitem__(self, index: SupportsIndex) -> float: ...

    @overload
    def __getitem__(self, index: slice) -> list[float]: ...

    def __getitem__(self, index: SupportsIndex | slice) -> float | list[float]:
        if isinstance(index, slice):
            return list(self)[index]
        position = index.__index__()
        if position < 0:
            position += len(self)
        return self.waits.seconds(position)


__all__ = ["RetryDelays", "RetryWait", "RetryWaits", "decide_wait"]
