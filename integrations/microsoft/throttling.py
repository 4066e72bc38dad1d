"""How long to wait when Microsoft throttles: a 429 or 503 is sent again after its
``Retry-After`` (seconds, possibly fractional, or an HTTP date) or, without one, after a
bounded exponential backoff with jitter; at most ``microsoft.max_retries`` times, never
waiting more than ``microsoft.max_retry_wait_seconds`` at once (``MicrosoftApi.send`` for
one request, ``batch`` for the items of a ``$batch``)."""

from __future__ import annotations

import random

from tocsin.retry_after import parse_retry_after

RETRIED_STATUSES = (429, 503)
"""The statuses that mean "later": throttled, or the service busy."""
_BACKOFF_BASE_SECONDS = 1.0


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds (fractional accepted, an HTTP date too); None if
    absent or unreadable (``tocsin.retry_after``)."""
    return parse_retry_after(value)


def backoff_seconds(attempt: int, limit: float) -> float:
    """The wait before retry ``attempt`` (0-based) without Retry-After: 1, 2, 4... s, capped
    at ``limit``, with jitter (half to all of it) so that many callers do not retry at once."""
    ceiling = min(limit, _BACKOFF_BASE_SECONDS * (2**attempt))
    return random.uniform(ceiling / 2, ceiling)
