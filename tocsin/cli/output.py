"""Printing for every command: the console, an error with its hint, a file written."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


def print_error(exc: Exception) -> None:
    """Print an error's message and hint (and a runbook's problems) on standard error."""
    from tocsin.errors import RunbookError, TocsinError

    if isinstance(exc, RunbookError):
        for problem in exc.problems:
            print(problem, file=sys.stderr)
    message = exc.message if isinstance(exc, TocsinError) else str(exc)
    print(f"error: {message}", file=sys.stderr)
    hint = exc.hint if isinstance(exc, TocsinError) else ""
    if hint:
        print(f"  hint: {hint}", file=sys.stderr)


def make_console(stderr: bool = False) -> Console:
    """A rich console for standard output (or ``stderr``) that never wraps lines itself."""
    from rich.console import Console

    # soft_wrap: never cut lines ourselves; terminals wrap, and piped output stays greppable
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def write_output(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path``; ``InputError`` when the file cannot be written."""
    from tocsin.errors import InputError

    try:
        path.write_bytes(content)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}") from None
