"""The ``tocsin`` command line: every command, its arguments and their help."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tocsin.cli.report import REPORT_FORMATS
from tocsin.cli.runs import DEFAULT_DEMO


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``tocsin`` command line, commands in the order ``--help`` lists them."""
    parser = argparse.ArgumentParser(
        prog="tocsin",
        description="Incident-response runbooks for broker offices: validate, plan and run them.",
        epilog="Start with `tocsin list`, then `tocsin plan RUNBOOK --ticket INC-1 --set name=value`.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    validate = commands.add_parser("validate", help="check runbook files and folders")
    validate.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="runbook file or folder"
    )

    plan = commands.add_parser("plan", help="show what a run would do, without calling anything")
    plan.add_argument("runbook", metavar="RUNBOOK", help="runbook file, or runbook id")
    plan.add_argument(
        "--ticket", help="incident ticket key (default: the ticket system's example, like INC-1234)"
    )
    plan.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an input value; repeat for several inputs or list items",
    )
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")

    listing = commands.add_parser("list", help="list the runbooks found, with their inputs")
    listing.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="folders to search (default: the runbook search path)",
    )

    actions = commands.add_parser("actions", help="list the actions runbooks can use")
    actions.add_argument("name", nargs="?", help="show one action in detail")
    actions.add_argument("--json", action="store_true", help="print as JSON")

    _integrations_parser(commands)

    schema = commands.add_parser("schema", help="write the runbook JSON Schema (for editors)")
    schema.add_argument(
        "-o", "--output", type=Path, help="file to write (default: standard output)"
    )
    run = commands.add_parser("run", help="run a runbook for an incident (waits at gates)")
    run.add_argument("runbook", metavar="RUNBOOK", help="runbook file, or runbook id")
    run.add_argument("--ticket", required=True, help="incident ticket key, like INC-1234")
    run.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an input value; repeat for several inputs or list items",
    )
    run.add_argument(
        "--as",
        dest="actor",
        help="who starts the run (Slack user id; required live); sandbox default: your login",
    )
    run.add_argument("--title", default="", help="incident title shown in messages")
    run.add_argument("--detected-at", default="", help="when the breach was discovered (ISO 8601)")
    run.add_argument(
        "--deployment",
        nargs="?",
        const="run-runbook/tocsin",
        metavar="NAME",
        help="run on a Prefect worker through this deployment (default run-runbook/tocsin) "
        "instead of in this process",
    )

    for name in ("approve", "reject"):
        decide = commands.add_parser(name, help=f"{name} an approval gate of a waiting run")
        _decision_arguments(decide)
    done = commands.add_parser("done", help="mark a manual task of a waiting run done")
    _decision_arguments(done)
    done.add_argument(
        "--check",
        type=int,
        action="append",
        default=[],
        metavar="N",
        help="a checklist item you did (1-based); repeat",
    )
    done.add_argument("--all", action="store_true", help="every checklist item was done")
    done.add_argument(
        "--output",
        dest="outputs",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an interrupted step took effect: one of its action's outputs as you read it; repeat",
    )
    done.add_argument(
        "--outputs-json",
        metavar="JSON",
        help='an interrupted step took effect: its outputs as a JSON object ({"count": 3})',
    )

    status = commands.add_parser("status", help="incidents, their runs, and what each waits for")
    status.add_argument("ticket", nargs="?", help="one incident (default: all)")
    status.add_argument(
        "--stuck",
        action="store_true",
        help="only what is stuck: gates past their deadline, runs whose process died, "
        "regulatory clocks about to expire (exit 1 when there is any)",
    )
    status.add_argument("--json", action="store_true", help="with --stuck: print as JSON")

    demo = commands.add_parser("demo", help="run a shipped runbook end to end in the sandbox")
    demo.add_argument(
        "runbook",
        nargs="?",
        default=DEFAULT_DEMO,
        help=f"the runbook to run (default: {DEFAULT_DEMO}; --list shows the others)",
    )
    demo.add_argument("--ticket", help="incident ticket key (default: a new DEMO-n)")
    demo.add_argument("--list", action="store_true", help="list the runbooks the demo can run")

    gateway = commands.add_parser(
        "gateway", help="serve Slack clicks and commands and Jira webhooks (HTTP)"
    )
    gateway.add_argument("--host", help="address to listen on (default: setting gateway.host)")
    gateway.add_argument(
        "--port", type=int, help="port to listen on (default: setting gateway.port, 8750)"
    )

    doctor = commands.add_parser(
        "doctor",
        help="check this configuration (Prefect, workers, journal, key, integrations): what to fix",
    )
    doctor.add_argument(
        "runbooks",
        nargs="*",
        metavar="RUNBOOK",
        help="also check the secrets and integrations these runbooks' steps need",
    )
    doctor.add_argument(
        "--pool", help="the work pool runs go to (default: the deployment's, else tocsin)"
    )
    doctor.add_argument("--json", action="store_true", help="print the results as JSON")

    sandbox = commands.add_parser(
        "sandbox",
        help="serve the sandbox's fake services for workers and gateways in other processes",
    )
    sandbox.add_argument(
        "--env-file",
        type=Path,
        help="where to write the environment pointing at the fakes "
        "(default: data_dir/sandbox.env; removed when the fakes stop)",
    )

    server = commands.add_parser("server", help="Tocsin's local Prefect server")
    server.add_argument("action", choices=["status", "stop"])

    _audit_parser(commands)

    report = commands.add_parser("report", help="write an incident's post-incident report")
    report.add_argument("ticket", metavar="TICKET", help="incident ticket key")
    report.add_argument(
        "--format",
        dest="fmt",
        choices=REPORT_FORMATS,
        help="md, html, pdf or json (default: from the -o file's extension, else md)",
    )
    report.add_argument(
        "-o", "--output", type=Path, help="file to write (default: standard output)"
    )
    report.add_argument("--lang", choices=["en", "fr"], default="en", help="en (default) or fr")
    report.add_argument(
        "--offline", action="store_true", help="do not ask Prefect for its run states"
    )
    return parser


def _integrations_parser(commands: Any) -> None:
    integrations = commands.add_parser(
        "integrations",
        help="the installed integrations: configured?, secrets set?, and `check` their access",
    )
    integrations.add_argument("--json", dest="json_all", action="store_true", help="as JSON")
    actions = integrations.add_subparsers(dest="integrations_command", metavar="ACTION")
    listing = actions.add_parser(
        "list", help="installed integrations, configured or not, their secrets set or not"
    )
    listing.add_argument("--json", action="store_true", help="print as JSON")
    check = actions.add_parser(
        "check",
        help="verify each configured integration's credentials and permissions (changes nothing)",
    )
    check.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="only these integrations (checked even when not configured); default: all",
    )
    check.add_argument("--json", action="store_true", help="print the results as JSON")


def _audit_parser(commands: Any) -> None:
    audit = commands.add_parser(
        "audit", help="the tamper-evident audit trail: keygen, verify, export, hmac"
    )
    actions = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    keygen = actions.add_parser("keygen", help="create the Ed25519 key that signs checkpoints")
    keygen.add_argument(
        "--key", type=Path, help="private key file to create (default: setting audit.key_path)"
    )
    keygen.add_argument("--force", action="store_true", help="replace an existing key")
    verify = actions.add_parser(
        "verify", help="recompute an incident's chain and checkpoint signatures"
    )
    verify.add_argument("ticket", nargs="?", metavar="TICKET", help="incident in the journal")
    verify.add_argument(
        "--file", type=Path, help="verify this export offline instead (needs --public-key)"
    )
    verify.add_argument(
        "--public-key", type=Path, help="public key file (default: the configured key's .pub)"
    )
    verify.add_argument(
        "--anchor", help="a head hash published earlier (sha256:...) the chain must contain"
    )
    verify.add_argument(
        "--offline",
        action="store_true",
        help="do not read the heads published in Slack and on the ticket",
    )
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    export = actions.add_parser(
        "export", help="write an incident's trail as JSON Lines, signed over its last record"
    )
    export.add_argument("ticket", metavar="TICKET", help="incident ticket key")
    export.add_argument(
        "-o", "--output", type=Path, help="file to write (default: standard output)"
    )
    hmac_parser = actions.add_parser(
        "hmac",
        help="print the redaction token of a secret read from standard input, to look for it "
        "in the trail",
    )
    hmac_parser.add_argument(
        "--email",
        action="store_true",
        help="the value is an e-mail address: compare it as notify does (spaces trimmed, "
        "lower case), to find a recipient in a campaign's outputs",
    )


def _decision_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ticket", metavar="TICKET", help="incident ticket key")
    parser.add_argument("step", metavar="STEP", help="id of the waiting step")
    parser.add_argument("--as", dest="actor", required=True, help="your Slack user id")
    parser.add_argument("--comment", default="", help="why; kept in the audit trail")
    parser.add_argument("--hash", dest="gate_hash", help="the gate hash you reviewed (from status)")
