"""Refused requests, audited in the gateway's own chain (``GATEWAY``) without letting a
flood of forged requests flood the journal."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tocsin.incident import GATEWAY_CHAIN
from tocsin.journal import Journal

_log = logging.getLogger("tocsin.gateway")

MAX_REASON_CHARS = 300
MAX_REFUSAL_WINDOWS = 1000
"""Addresses whose refusals are counted separately; past that, together."""


@dataclass
class _RefusalWindow:
    """Refusals from one address in the current minute."""

    started: float
    audited: int = 0
    counted: int = 0
    first_counted_at: str = ""
    reasons: Counter[str] = field(default_factory=Counter)


class RefusalAudit:
    """Audits requests refused at the door, in the gateway's own chain (``GATEWAY``).

    Up to ``per_minute`` refusals from one address each minute are recorded one by one
    (``gateway.request_refused``); the rest of that minute are only counted, and one
    ``gateway.refusals_summarised`` record says how many there were and why, when the minute
    is over. So a flood of forged requests costs the journal a few writes a minute, and the
    chain stays readable.
    """

    def __init__(
        self,
        journal: Journal,
        per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        window_seconds: float = 60.0,
    ) -> None:
        self.journal = journal
        self.per_minute = per_minute
        self.clock = clock
        self.window_seconds = window_seconds
        self._windows: dict[str, _RefusalWindow] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    def refused(
        self,
        peer: str,
        kind: str,
        source: str,
        status: int,
        reason: str,
        claimed: Mapping[str, str],
    ) -> bool:
        """Audit one refusal (``kind``: the record's kind); False when it was only counted."""
        with self._lock:
            expired = self._expired(self.clock())
            if peer not in self._windows and len(self._windows) >= MAX_REFUSAL_WINDOWS:
                peer = "(many addresses)"  # thousands of addresses at once: count them together
            window = self._windows.setdefault(peer, _RefusalWindow(self.clock()))
            audit = window.audited < self.per_minute
            if audit:
                window.audited += 1
            else:
                if not window.counted:
                    window.first_counted_at = _utc_now()
                window.counted += 1
                window.reasons[f"{status} {reason.split(':')[0][:60]}"] += 1
        self._summarise(expired)
        if audit:
            self.journal.record(
                GATEWAY_CHAIN,
                kind,
                source=source,
                status=status,
                reason=reason[:MAX_REASON_CHARS],
                peer=peer,
                claimed=dict(claimed),
            )
        return audit

    def flush(self, everything: bool = False) -> None:
        """Write the summaries of the minutes that are over (``everything``: of all)."""
        with self._lock:
            expired = self._expired(float("inf") if everything else self.clock())
        self._summarise(expired)

    def start(self) -> None:
        """Summarise finished minutes in the background, even when no more refusals come."""

        def sweep() -> None:
            signed_at = self.clock()
            while not self._stop.wait(min(5.0, self.window_seconds / 4)):
                try:
                    self.flush()
                    if self.clock() - signed_at >= self.window_seconds:
                        # The chain's head is signed at most once a minute, when it grew.
                        self.journal.checkpoint(GATEWAY_CHAIN, "periodic")
                        signed_at = self.clock()
                except Exception:  # the journal is away for a moment: try again later
                    _log.exception("cannot write the summary of refused requests")

        self._sweeper = threading.Thread(target=sweep, name="gateway-refusals", daemon=True)
        self._sweeper.start()

    def close(self) -> None:
        """Write what is still counted and sign the chain's head (the gateway stops)."""
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout=10)
        self.flush(everything=True)
        self.journal.checkpoint(GATEWAY_CHAIN, "gateway_stopped")

    def _expired(self, moment: float) -> list[tuple[str, _RefusalWindow]]:
        """Take out the windows that are over (the caller holds the lock)."""
        over = [
            (peer, window)
            for peer, window in self._windows.items()
            if moment - window.started >= self.window_seconds
        ]
        for peer, _ in over:
            del self._windows[peer]
        return over

    def _summarise(self, expired: list[tuple[str, _RefusalWindow]]) -> None:
        for peer, window in expired:
            if window.counted:
                self.journal.record(
                    GATEWAY_CHAIN,
                    "gateway.refusals_summarised",
                    peer=peer,
                    count=window.counted,
                    reason=f"{window.counted} more requests refused and not audited one by one "
                    f"(over {self.per_minute} a minute from {peer})",
                    since=window.first_counted_at,
                    until=_utc_now(),
                    reasons=dict(window.reasons.most_common(10)),
                )


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


__all__ = ["RefusalAudit"]
