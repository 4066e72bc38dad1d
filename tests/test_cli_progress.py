"""The CLI's printer of a run's lines: a long step's progress bar redrawn in place on a
terminal, a line at each tenth elsewhere (a log file, CI)."""

from __future__ import annotations

import io
import re

import pytest

from tocsin.cli.runs import _progress_printer
from tocsin.flows.run_state import PROGRESS_MARK


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def bar(done: int, total: int) -> str:
    percent = 100 * done // total
    filled = percent // 5
    return (
        f"{PROGRESS_MARK}notify_clients: [{'#' * filled}{'.' * (20 - filled)}] "
        f"{percent:3d}% {done}/{total} sent"
    )


STAMP = r"\d\d:\d\d:\d\d"


def test_off_a_terminal_progress_is_one_line_per_tenth_and_the_last(
    capsys: pytest.CaptureFixture[str],
) -> None:
    show = _progress_printer()
    show("step notify_clients started")
    for done in range(0, 5001, 250):
        show(bar(done, 5000))
    show("step notify_clients succeeded")

    lines = capsys.readouterr().out.splitlines()
    assert all(re.match(STAMP + " ", line) for line in lines)
    shown = [line for line in lines if "notify_clients: [" in line]
    assert [re.search(r"(\d+)/5000", line).group(1) for line in shown] == [  # type: ignore[union-attr]
        str(n) for n in range(0, 5001, 500)
    ]
    assert "\r" not in "".join(lines) and PROGRESS_MARK not in "".join(lines)
    assert lines[0].endswith("step notify_clients started")
    assert lines[-1].endswith("step notify_clients succeeded")


def test_on_a_terminal_the_bar_is_redrawn_in_place_then_the_next_line_starts_fresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    screen = Terminal()
    monkeypatch.setattr("sys.stdout", screen)
    show = _progress_printer()
    show(bar(1200, 5000))
    show(bar(2500, 5000))
    show(bar(5000, 5000))
    show("step notify_clients succeeded")

    written = screen.getvalue()
    redraws = written.split("\r")[1:]
    assert len(redraws) == 3
    assert "1200/5000" in redraws[0] and "\n" not in redraws[0]
    assert "2500/5000" in redraws[1] and "\n" not in redraws[1]
    last, after = redraws[2].split("\n", 1)
    assert "100% 5000/5000 sent" in last
    assert re.fullmatch(STAMP + " step notify_clients succeeded\n", after)
    assert PROGRESS_MARK not in written
