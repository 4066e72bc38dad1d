"""Telling people privately why their click did not count, within Slack's limits.

``chat.postEphemeral`` is a Tier 4 method: about 100 calls a minute per workspace. A busy
gate (people clicking again, a gate closed while its approvers still click, strangers)
refuses far more clicks than that, and each notice sent one by one would be answered 429
and retried, holding up the gateway's other work after its answers. So:

- a person is told a reason about a step once (``REPEAT_AFTER_SECONDS``): the same reason
  for the same click again is not repeated;
- at most ``PER_MINUTE`` notices a minute leave a gateway process; past that, the rest of
  the minute are dropped and counted in one log line (the click's outcome is in the click
  queue and, for a decision, in the trail: only the courtesy message is lost);
- notices are sent by a thread of their own, at most ``MAX_WAITING`` waiting, never
  retried on 429: a notice never delays waking a flow.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor

_log = logging.getLogger("tocsin.gateway")

PER_MINUTE = 100
"""Notices a gateway process sends a minute at most (``chat.postEphemeral``: Tier 4)."""
REPEAT_AFTER_SECONDS = 600.0
"""The same reason is told to the same person about the same step again after this."""
REMEMBERED = 10_000
"""Notices remembered for ``REPEAT_AFTER_SECONDS`` at most (the oldest forgotten first)."""
MAX_WAITING = 50
"""Notices waiting to be sent at most; past that they are dropped (Slack is slow)."""


class RefusalNotices:
    """Sends each distinct notice once, within a budget a minute; see the module docstring."""

    def __init__(
        self,
        *,
        per_minute: int = PER_MINUTE,
        repeat_after: float = REPEAT_AFTER_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_minute = per_minute
        self.repeat_after = repeat_after
        self.clock = clock
        self._lock = threading.Lock()
        self._told: OrderedDict[Hashable, float] = OrderedDict()
        self._minute_started = clock()
        self._sent_this_minute = 0
        self._dropped_this_minute = 0
        self._waiting = 0
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slack-notices")

    def send(self, key: Hashable, notice: Callable[[], None]) -> bool:
        """Send ``notice`` (a call to Slack) unless the notice ``key`` names was sent lately
        or the minute's budget is spent; whether it was handed to the sending thread."""
        moment = self.clock()
        with self._lock:
            self._new_minute(moment)
            told_at = self._told.get(key)
            if told_at is not None and moment - told_at < self.repeat_after:
                return False
            if self._sent_this_minute >= self.per_minute or self._waiting >= MAX_WAITING:
                self._dropped_this_minute += 1
                return False
            self._sent_this_minute += 1
            self._waiting += 1
            self._told[key] = moment
            self._told.move_to_end(key)
            while len(self._told) > REMEMBERED:
                self._told.popitem(last=False)
        self._sender.submit(self._sending, notice)
        return True

    def close(self) -> None:
        self._sender.shutdown(wait=False, cancel_futures=True)

    def _sending(self, notice: Callable[[], None]) -> None:
        try:
            notice()
        except Exception:  # a courtesy message: the click's outcome is journalled already
            _log.exception("telling a clicker why the click did not count failed")
        finally:
            with self._lock:
                self._waiting -= 1

    def _new_minute(self, moment: float) -> None:
        """Start a new minute's budget when the last one is over (the caller holds the lock)."""
        if moment - self._minute_started < 60.0:
            return
        if self._dropped_this_minute:
            _log.warning(
                "%d notices of refused clicks not sent in the last minute (more than %d a "
                "minute: Slack's limit); their outcomes are in the click queue and the trail",
                self._dropped_this_minute,
                self.per_minute,
            )
        self._minute_started = moment
        self._sent_this_minute = 0
        self._dropped_this_minute = 0


__all__ = ["MAX_WAITING", "PER_MINUTE", "REPEAT_AFTER_SECONDS", "RefusalNotices"]
