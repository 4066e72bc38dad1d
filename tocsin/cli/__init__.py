"""The ``tocsin`` command.

Exit codes: 0 success; 1 a runbook, a run or an integration's check has problems;
2 wrong command line or inputs; 3 configuration (settings, secrets, installed action packages);
70 an internal error (a bug: rerun with --debug and report it).
Expected errors print a message and a hint, never a traceback (use ``--debug``).
Heavy modules (pydantic, Jinja2, Prefect) are imported inside the commands so
that ``tocsin --help`` starts fast.

One module per group of commands: ``runbooks`` (validate, plan, list, actions, schema),
``runs`` (run, approve, reject, done, status, demo), ``services`` (gateway, server),
``integrations``, ``audit`` and ``report``; ``parser`` holds the whole command line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from tocsin.cli.audit import cmd_audit
from tocsin.cli.doctor import cmd_doctor
from tocsin.cli.exit_codes import EXIT_INTERNAL, EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE
from tocsin.cli.integrations import cmd_integrations
from tocsin.cli.lookups import resolve_runbook
from tocsin.cli.output import print_error
from tocsin.cli.parser import build_parser
from tocsin.cli.report import cmd_report
from tocsin.cli.runbooks import cmd_actions, cmd_list, cmd_plan, cmd_schema, cmd_validate
from tocsin.cli.runs import cmd_decide, cmd_demo, cmd_run, cmd_status
from tocsin.cli.services import cmd_gateway, cmd_sandbox, cmd_server

__all__ = [
    "EXIT_INTERNAL",
    "EXIT_OK",
    "EXIT_PROBLEMS",
    "EXIT_USAGE",
    "build_parser",
    "main",
    "resolve_runbook",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tocsin`` command line ``argv``; return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from tocsin import __version__

        print(f"tocsin {__version__}")
        return EXIT_OK
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    from tocsin.errors import TocsinError

    handler = _COMMANDS[args.command]
    try:
        return handler(args)
    except TocsinError as exc:
        if args.debug:
            raise
        print_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `tocsin status | head`: the reader has what it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # a bug, not a user error: say so without a wall of traceback
        if args.debug:
            raise
        print(f"internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(
            "  hint: this is a bug in Tocsin; rerun with --debug and report the traceback",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "validate": cmd_validate,
    "plan": cmd_plan,
    "list": cmd_list,
    "actions": cmd_actions,
    "schema": cmd_schema,
    "integrations": cmd_integrations,
    "run": cmd_run,
    "approve": cmd_decide,
    "reject": cmd_decide,
    "done": cmd_decide,
    "status": cmd_status,
    "server": cmd_server,
    "demo": cmd_demo,
    "gateway": cmd_gateway,
    "doctor": cmd_doctor,
    "sandbox": cmd_sandbox,
    "audit": cmd_audit,
    "report": cmd_report,
}
