"""The ``tocsin`` command's exit codes.

0 success; 1 a runbook, a run or an integration's check has problems;
2 wrong command line or inputs; 70 an internal error (a bug: rerun with --debug and report it).
Configuration errors exit with their own code, 3 (``tocsin.errors``).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70
