"""What a benchmark hands to ``python3 dev.py bench``: figures, each with its goal.

Each benchmark script keeps its ``main()`` (it prints its own details when run alone) and
offers ``measure(quick: bool = False) -> list[Figure]`` for the one-table run; ``quick``
shortens it (fewer repeats, a smaller load) without changing what is measured.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """One measured figure: ``what`` is measured, ``value`` as shown (with its unit),
    ``goal`` as shown, ``met`` (None when the figure has no goal), and ``peer``: the same
    measure of bare Prefect in the same run, when one exists."""

    benchmark: str
    what: str
    value: str
    goal: str = ""
    met: bool | None = None
    peer: str = ""


__all__ = ["Figure"]
