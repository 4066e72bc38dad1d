"""``tocsin report``: an incident's post-incident report, in the format asked for."""

from __future__ import annotations

import argparse
import sys

from tocsin.cli.exit_codes import EXIT_OK
from tocsin.cli.lookups import checked_ticket, current_settings
from tocsin.cli.output import write_output

REPORT_FORMATS = ("md", "html", "pdf", "json")


def cmd_report(args: argparse.Namespace) -> int:
    from tocsin.errors import InputError
    from tocsin.evidence import incident_report

    fmt = args.fmt
    if fmt is None:
        suffix = args.output.suffix.lstrip(".").lower() if args.output else ""
        fmt = {"markdown": "md", "htm": "html"}.get(suffix, suffix) or "md"
        if fmt not in REPORT_FORMATS:
            raise InputError(
                f"cannot tell the report format from {args.output}",
                "name the file .md, .html, .pdf or .json, or give --format",
            )
    if fmt == "pdf" and args.output is None:
        raise InputError("a PDF report needs a file: -o report.pdf")
    settings = current_settings()
    content = incident_report(
        settings,
        checked_ticket(settings, args.ticket),
        fmt=fmt,
        lang=args.lang,
        with_prefect=not args.offline,
    )
    if args.output is None:
        sys.stdout.write(content.decode("utf-8"))
    else:
        write_output(args.output, content)
        print(f"wrote the {fmt} report of {args.ticket} to {args.output}", file=sys.stderr)
    return EXIT_OK
