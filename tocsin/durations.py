"""Durations as runbooks write them: a number and a unit (``30s``, ``15m``, ``4h``, ``3d``)."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_PATTERN = r"^\s*(\d+)\s*([smhd])\s*$"
_DURATION = re.compile(DURATION_PATTERN)


def parse_duration(text: object) -> timedelta:
    """Parse ``15m`` into a timedelta; a bare number is refused because its unit is ambiguous."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise ValueError(f"{text!r} is not a duration; write a number and a unit, like 15m")
    if isinstance(text, int):
        raise ValueError(f"duration {text} has no unit; write {text}s, {text}m, {text}h or {text}d")
    match = _DURATION.match(text)
    if not match:
        raise ValueError(
            f"{text!r} is not a duration; write a whole number and one unit: "
            "s (seconds), m (minutes), h (hours) or d (days), like 15m"
        )
    amount, unit = match.groups()
    if int(amount) == 0:
        raise ValueError("a duration must be longer than zero")
    return timedelta(seconds=int(amount) * _UNITS[unit])


def format_duration(value: timedelta) -> str:
    """The shortest exact runbook spelling of ``value`` (``5400s`` -> ``90m``)."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
