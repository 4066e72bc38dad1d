"""A service's ``Retry-After`` (RFC 9110 §10.2.3), read the one way every integration reads it.

A 429 or a 503 may say how long to wait before trying again: a number of seconds
(``Retry-After: 120``) or an HTTP date (``Retry-After: Fri, 31 Dec 2027 23:59:59 GMT``).
``parse_retry_after`` turns either into seconds from now; a value that is neither (garbage,
a negative number, ``nan``, ``inf``) is ignored, as if the service had said nothing, since
a broken or hostile server must not decide how long a run waits. A huge value is returned
as said: whoever waits caps it (the step retry: ``max_retry_wait_seconds``).

Integrations put what their service said on the ``IntegrationError`` they raise for a 429
or 503 (``retry_after=``); the step's retry waits at least that long (``flows/retry_waits``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

_DELAY_SECONDS = re.compile(r"^[0-9]{1,15}(\.[0-9]{1,6})?$")
"""RFC 9110's delay-seconds is digits; a fraction is accepted (Microsoft Graph sends them)."""


def parse_retry_after(value: Any, *, now: float | None = None) -> float | None:
    """Seconds to wait that a ``Retry-After`` value asks for (0 for a date in the past);
    None when absent or unreadable. ``now``: the current time (``time.time()``) for a date."""
    if isinstance(value, list | tuple):  # some clients keep each header's values in a list
        value = value[0] if value else None
    if not isinstance(value, str | bytes):
        return None
    text = (value.decode("latin-1") if isinstance(value, bytes) else value).strip()
    if not text or len(text) > 64:
        return None
    if _DELAY_SECONDS.match(text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": a time in UTC, its zone unknown (RFC 5322)
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def retry_after_of(headers: Mapping[str, Any] | None) -> float | None:
    """The ``Retry-After`` among ``headers`` (any letter case), read by ``parse_retry_after``."""
    if not headers:
        return None
    getter = getattr(headers, "get", None)
    found = getter("retry-after") if getter is not None else None
    if found is None:
        found = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
    return parse_retry_after(found)


__all__ = ["parse_retry_after", "retry_after_of"]
