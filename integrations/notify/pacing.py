"""A campaign's rate: message i leaves no earlier than start + i / rate.

The schedule is fixed when the first message is paced, so time lost on one message (a slow
reply) is made up on the next ones instead of accumulating: a campaign of n messages takes
n / rate, not n × (1 / rate + the service's latency). Threads sending at once share one
``Pacer`` and so one schedule.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta


class Pacer:
    """Hands out sending slots at ``messages_per_minute``; thread-safe."""

    def __init__(
        self,
        messages_per_minute: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not messages_per_minute > 0:
            raise ValueError("messages_per_minute must be more than 0")
        self.messages_per_minute = messages_per_minute
        self.interval = 60.0 / messages_per_minute
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._start: float | None = None
        self._given = 0

    def wait(self) -> None:
        """Return when the next message may leave (at once for the first)."""
        with self._lock:
            moment = self._clock()
            if self._start is None:
                self._start = moment
            slot = self._start + self._given * self.interval
            self._given += 1
        delay = slot - moment
        if delay > 0:
            self._sleep(delay)

    @property
    def given(self) -> int:
        """Slots handed out so far."""
        with self._lock:
            return self._given


def campaign_duration(count: int, messages_per_minute: float) -> timedelta:
    """How long ``count`` messages take at the rate (the first leaves at once)."""
    if count <= 1:
        return timedelta(0)
    return timedelta(minutes=(count - 1) / messages_per_minute)


def duration_sentence(count: int, messages_per_minute: float) -> str:
    """``about 2 h 47 min``, ``about 12 min``, ``under a minute``: for the plan."""
    seconds = campaign_duration(count, messages_per_minute).total_seconds()
    if seconds < 60:
        return "under a minute"
    minutes = round(seconds / 60)
    hours, minutes = divmod(minutes, 60)
    if hours and minutes:
        return f"about {hours} h {minutes} min"
    if hours:
        return f"about {hours} h"
    return f"about {minutes} min"
