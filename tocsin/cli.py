"""The ``tocsin`` command.

Exit codes: 0 success; 1 a runbook, a run or an integration's check has problems;
2 wrong command line or inputs; 3 configuration (settings, secrets, installed action packages);
70 an internal error (a bug: rerun with --debug and report it).
Expected errors print a message and a hint, never a traceback (use ``--debug``).
Heavy modules (pydantic, Jinja2, Prefect) are imported inside the commands so
that ``tocsin --help`` starts fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from tocsin.actions import ActionRegistry
    from tocsin.plan import Plan
    from tocsin.tickets import TicketKeys
    from tocsin.validation import LoadedRunbook

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70
DEFAULT_DEMO = "office-compromise"


def build_parser() -> argparse.ArgumentParser:
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

    status = commands.add_parser("status", help="incidents, their runs, and what each waits for")
    status.add_argument("ticket", nargs="?", help="one incident (default: all)")

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


REPORT_FORMATS = ("md", "html", "pdf", "json")


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
    actions.add_parser(
        "hmac",
        help="print the redaction token of a secret read from standard input, to look for it "
        "in the trail",
    )


def _decision_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ticket", metavar="TICKET", help="incident ticket key")
    parser.add_argument("step", metavar="STEP", help="id of the waiting step")
    parser.add_argument("--as", dest="actor", required=True, help="your Slack user id")
    parser.add_argument("--comment", default="", help="why; kept in the audit trail")
    parser.add_argument("--hash", dest="gate_hash", help="the gate hash you reviewed (from status)")


def main(argv: Sequence[str] | None = None) -> int:
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
        _print_error(exc)
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


def _print_error(exc: Exception) -> None:
    from tocsin.errors import RunbookError, TocsinError

    if isinstance(exc, RunbookError):
        for problem in exc.problems:
            print(problem, file=sys.stderr)
    message = exc.message if isinstance(exc, TocsinError) else str(exc)
    print(f"error: {message}", file=sys.stderr)
    hint = exc.hint if isinstance(exc, TocsinError) else ""
    if hint:
        print(f"  hint: {hint}", file=sys.stderr)


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    # soft_wrap: never cut lines ourselves; terminals wrap, and piped output stays greppable
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _registry() -> ActionRegistry:
    from tocsin.actions import ActionRegistry
    from tocsin.settings import load_settings

    registry = ActionRegistry.for_settings(load_settings())
    for skipped in registry.skipped:
        # A broken declaration costs its own actions only; say which file and where.
        for problem in skipped.problems:
            print(f"{problem} (declared integration skipped)", file=sys.stderr)
    return registry


def resolve_runbook(reference: str, registry: ActionRegistry) -> LoadedRunbook:
    """Load a runbook given as a file path or as an id found on the search path."""
    from tocsin.catalogue import resolve_runbook as resolve
    from tocsin.settings import load_settings

    return resolve(reference, registry, load_settings())


# --- commands -------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    from tocsin.errors import InputError
    from tocsin.validation import find_runbook_files, validate_files

    files, missing = find_runbook_files(args.paths)
    if missing:
        raise InputError(
            f"no such file or folder: {', '.join(str(p) for p in missing)}",
            "give runbook files or folders that contain them",
        )
    if not files:
        raise InputError(
            f"no runbook files (*.yaml, *.yml) in {', '.join(str(p) for p in args.paths)}"
        )
    report = validate_files(files, _registry())
    for problem in report.problems:
        print(problem)
    for warning in report.warnings:
        print(f"{warning.location}: warning: {warning.message}")
        if warning.hint:
            print(f"    hint: {warning.hint}")
    if report.ok:
        ids = ", ".join(loaded.id for loaded in report.runbooks)
        count = len(report.runbooks)
        if count or not report.declarations:
            print(f"ok: {count} runbook{'s' if count != 1 else ''} valid ({ids})")
        if report.declarations:
            services = ", ".join(report.declarations)
            many = len(report.declarations) != 1
            print(
                f"ok: {len(report.declarations)} declared integration{'s' if many else ''} "
                f"valid ({services})"
            )
        return EXIT_OK
    bad_files = len({p.location.file for p in report.problems})
    print(
        f"{len(report.problems)} problem{'s' if len(report.problems) != 1 else ''} in {bad_files} "
        f"of {report.files_checked} file{'s' if report.files_checked != 1 else ''}"
    )
    return EXIT_PROBLEMS


def cmd_plan(args: argparse.Namespace) -> int:
    from tocsin.incident import Incident
    from tocsin.inputs import parse_assignments
    from tocsin.plan import build_plan

    settings = _settings()
    ticket = _check_ticket(settings, args.ticket or _ticket_keys(settings).example)
    given = parse_assignments(args.assignments)
    registry = _registry()
    loaded = resolve_runbook(args.runbook, registry)
    plan = build_plan(loaded, registry, Incident(ticket=ticket, requested_via="cli"), given)
    if args.json:
        from dataclasses import asdict

        print(json.dumps(asdict(plan), indent=2, default=str, ensure_ascii=False))
    else:
        _print_plan(plan, _console())
    return EXIT_PROBLEMS if plan.failures else EXIT_OK


def _print_plan(plan: Plan, console: Console) -> None:
    from rich.markup import escape

    console.print(
        f"[bold]Plan for {escape(plan.runbook_id)} v{escape(plan.runbook_version)}[/]: {escape(plan.title)}"
    )
    console.print(
        f"Incident {escape(plan.ticket)} · severity {plan.severity} · "
        "[yellow]plan only: nothing is called[/]"
    )
    if plan.inputs:
        shown = ", ".join(
            f"{name}={_short(value)}" + (" (default)" if name in plan.defaults_used else "")
            for name, value in plan.inputs.items()
        )
        console.print(f"Inputs: {escape(shown)}")
    if plan.missing_inputs:
        console.print(
            "[yellow]Inputs not given (shown as <inputs.NAME>):[/] "
            + ", ".join(plan.missing_inputs)
            + " — set them with --set NAME=VALUE"
        )
    console.print()
    for step in plan.steps:
        _print_step(step, console)
    if plan.handlers:
        console.print("[bold]Failure handlers[/] (run only when a step's on_failure names them)")
        for step in plan.handlers:
            _print_step(step, console)
    if plan.secrets_needed:
        names = ", ".join(f"{name} (TOCSIN_SECRET_{name.upper()})" for name in plan.secrets_needed)
        console.print(f"Secrets read at run time: {escape(names)}")
    summary = (
        f"{len(plan.steps)} steps: {plan.destructive_count} destructive action"
        f"{'s' if plan.destructive_count != 1 else ''}, {plan.count('approval')} approval gate"
        f"{'s' if plan.count('approval') != 1 else ''}, {plan.count('manual')} manual task"
        f"{'s' if plan.count('manual') != 1 else ''}"
    )
    console.print(summary)
    for step in plan.failures:
        console.print(f"[bold red]Step {step.id} would fail:[/] {escape(step.failure or '')}")


def _print_step(step: Any, console: Console) -> None:
    from rich.markup import escape

    indent = "   " * step.depth
    kind = {
        "action": f"action {step.action}",
        "approval": "approval gate",
        "manual": "manual task",
        "parallel": "parallel",
    }[step.kind]
    style = {"approval": "magenta", "manual": "cyan", "parallel": "blue"}.get(step.kind, "green")
    flag = "  [bold red]DESTRUCTIVE[/]" if step.destructive else ""
    console.print(
        f"{indent}[bold]{escape(step.number)}.[/] [bold]{escape(step.id)}[/] — {escape(step.title)}  "
        f"[{style}]\\[{escape(kind)}][/]{flag}"
    )
    pad = indent + "    "
    if step.condition:
        console.print(f"{pad}when: {escape(step.condition)} → [italic]{step.condition_outcome}[/]")
    for name, value in step.parameters.items():
        console.print(f"{pad}{escape(name)}: {escape(_short(value))}")
    if step.touches and step.destructive:
        console.print(f"{pad}[bold red]would touch:[/] {escape(step.touches)}")
    elif step.touches:
        console.print(f"{pad}does: {escape(step.touches)}")
    for line in step.details:
        console.print(f"{pad}{escape(line)}")
    if step.needs_approval:
        console.print(
            f"{pad}[bold]cannot be undone:[/] approved at gate {escape(step.approved_by_gate)}"
            if step.approved_by_gate
            else f"{pad}[bold red]cannot be undone and no approval gate covers it[/]"
        )
    if step.undo:
        console.print(f"{pad}undo: {escape(step.undo)}")
    if step.failure:
        console.print(f"{pad}[bold red]would fail:[/] {escape(step.failure)}")


def _short(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cmd_list(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from tocsin.catalogue import search_paths
    from tocsin.errors import RunbookError
    from tocsin.settings import load_settings
    from tocsin.validation import display_path, find_runbook_files, load_runbook

    paths = args.paths or search_paths(load_settings())
    files, _ = find_runbook_files(paths)
    registry = _registry()
    console = _console()
    broken = 0
    found = 0
    seen: set[str] = set()
    for file in files:
        try:
            loaded = load_runbook(file, registry)
        except RunbookError as exc:
            broken += 1
            console.print(
                f"[red]{escape(display_path(file))}: {len(exc.problems)} problem(s)[/] "
                f"(run `tocsin validate {escape(display_path(file))}`)"
            )
            continue
        if loaded.id in seen:
            continue
        seen.add(loaded.id)
        found += 1
        runbook = loaded.runbook
        console.print(
            f"[bold]{escape(runbook.runbook)}[/] v{escape(runbook.version)} — {escape(runbook.title)} "
            f"[dim]({runbook.severity.value}, {escape(display_path(loaded.path))})[/]"
        )
        for name, spec in runbook.inputs.items():
            need = (
                "required"
                if spec.is_required
                else f"default {spec.default!r}"
                if spec.default is not None
                else "optional"
            )
            kind = spec.type.value + (f" of {spec.items}" if spec.type.value == "list" else "")
            if spec.values:
                kind += f": {'|'.join(spec.values)}"
            console.print(
                f"    --set {escape(name)}=…  {escape(kind)}, {escape(need)} — {escape(spec.description)}"
            )
    console.print(
        f"{found} runbook{'s' if found != 1 else ''}"
        + (f", {broken} with problems" if broken else "")
    )
    return EXIT_PROBLEMS if broken else EXIT_OK


def cmd_actions(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from tocsin.actions import ActionDefinition

    registry = _registry()
    definitions: list[ActionDefinition] = [registry.get(args.name)] if args.name else list(registry)
    if args.json:
        print(json.dumps([_action_as_data(d) for d in definitions], indent=2, ensure_ascii=False))
        return EXIT_OK
    console = _console()
    for definition in definitions:
        flags = ["[bold red]destructive[/]" if definition.destructive else "read-only/harmless"]
        flags.append("idempotent" if definition.idempotent else "not idempotent")
        if definition.needs_approval:
            flags.append("[bold]needs an approval gate[/]")
        console.print(f"[bold]{escape(definition.name)}[/]  ({', '.join(flags)})")
        console.print(f"    {escape(definition.description)}")
        for param in _action_as_data(definition)["parameters"]:
            need = "required" if param["required"] else f"default {json.dumps(param['default'])}"
            description = f" — {param['description']}" if param["description"] else ""
            console.print(
                f"    {escape(param['name'])}: {escape(param['type'])}, {escape(need)}{escape(description)}"
            )
        if definition.secrets:
            console.print(f"    secrets: {', '.join(definition.secrets)}")
        if definition.output_names:
            console.print(f"    outputs: {', '.join(sorted(definition.output_names))}")
        console.print(f"    [dim]from {escape(definition.module)}[/]")
    return EXIT_OK


def _action_as_data(definition: Any) -> dict[str, Any]:
    schema = definition.parameters.model_json_schema()
    required = set(schema.get("required", []))
    parameters = []
    for name, info in definition.parameters.model_fields.items():
        prop = schema["properties"][name]
        parameters.append(
            {
                "name": name,
                "type": _type_label(prop),
                "required": name in required,
                "default": None
                if info.is_required()
                else info.get_default(call_default_factory=True),
                "description": info.description or "",
            }
        )
    return {
        "name": definition.name,
        "description": definition.description,
        "destructive": definition.destructive,
        "idempotent": definition.idempotent,
        "needs_approval": definition.needs_approval,
        "secrets": list(definition.secrets),
        "parameters": parameters,
        "outputs": sorted(definition.output_names or []),
        "module": definition.module,
    }


def _type_label(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return "|".join(str(v) for v in prop["enum"])
    if "anyOf" in prop:
        return " or ".join(_type_label(p) for p in prop["anyOf"])
    kind = prop.get("type", "any")
    if kind == "array" and "items" in prop:
        return f"list of {_type_label(prop['items'])}"
    if kind == "object":
        return "mapping"
    return {
        "string": "text",
        "integer": "integer",
        "number": "number",
        "boolean": "boolean",
        "null": "none",
    }.get(str(kind), str(kind))


def cmd_integrations(args: argparse.Namespace) -> int:
    from tocsin.settings import EnvironmentSecrets

    as_json = bool(getattr(args, "json", False) or args.json_all)
    if args.integrations_command == "check":
        return _check_integrations(_settings(), args.names, as_json=as_json, debug=args.debug)
    from tocsin.integration_checks import list_all

    settings = _settings()
    report = list_all(settings, EnvironmentSecrets())
    if as_json:
        print(json.dumps({"mode": settings.mode, **report.as_data()}, indent=2))
        return EXIT_OK
    if settings.mode == "sandbox":
        print("SANDBOX mode: runs use the sandbox's local fakes, not the settings below")
    for state in report.integrations:
        configured = (
            "nothing to configure"
            if not state.needs_setup
            else "configured"
            if state.configured
            else "not configured"
        )
        print(f"{state.name}: {configured} — {state.description}")
        for secret in state.secrets:
            print(f"    secret {secret.variable}: {'set' if secret.set else 'not set'}")
    print("`tocsin integrations check` verifies the configured ones' access")
    return EXIT_OK


def _check_integrations(settings: Any, names: list[str], *, as_json: bool, debug: bool) -> int:
    """`tocsin integrations check`: live, the settings' services; in the sandbox, its fakes."""
    from tocsin.integration_checks import check_all, integrations_named
    from tocsin.settings import EnvironmentSecrets, SecretStore

    chosen = integrations_named(names)  # an unknown name is said before anything starts
    secrets: SecretStore = EnvironmentSecrets()
    sandbox = None
    if settings.mode == "sandbox":
        from tocsin.sandbox.assembly import Sandbox

        sandbox = Sandbox(settings).__enter__()
        settings, secrets = sandbox.settings, sandbox.secrets
    try:
        report = check_all(settings, secrets, chosen, asked_for=bool(names), debug=debug)
    finally:
        if sandbox is not None:
            sandbox.__exit__(None, None, None)
    if as_json:
        print(json.dumps({"mode": settings.mode, **report.as_data()}, indent=2))
        return EXIT_OK if report.ok else EXIT_PROBLEMS
    if sandbox is not None:
        print(
            "SANDBOX mode: checking the local fakes runs use "
            "(TOCSIN_MODE=live checks the real services)"
        )
    problems = 0
    for state in report.integrations:
        if not state.results:
            print(f"{state.name}: {state.state.value}")
            continue
        for result in state.results:
            print(
                f"{state.name}: {result.check}: {'ok' if result.ok else 'PROBLEM'}: {result.message}"
            )
            if not result.ok:
                problems += 1
                if result.hint:
                    print(f"    fix: {result.hint}")
    if report.ok:
        checked = any(state.results for state in report.integrations)
        print(
            "all configured integrations ok" if checked else "no integration to check is configured"
        )
        return EXIT_OK
    print(f"{problems} problem{'s' * (problems != 1)} found")
    return EXIT_PROBLEMS


def cmd_schema(args: argparse.Namespace) -> int:
    from tocsin.schema import schema_text

    text = schema_text(_registry())
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _settings() -> Any:
    from tocsin.settings import load_settings

    return load_settings()


def _ticket_keys(settings: Any) -> TicketKeys:
    """The configured ticket system's key form (Jira's when none is), read from the settings."""
    from tocsin.integration import ticket_keys
    from tocsin.tickets import JIRA_KEYS

    return ticket_keys(settings) or JIRA_KEYS


def _check_ticket(settings: Any, ticket: str, *, or_gateway: bool = False) -> str:
    """``ticket`` as a key of the configured ticket system (``or_gateway``: or the gateway's
    own audit chain); ``InputError`` saying the form keys take."""
    from tocsin.errors import InputError
    from tocsin.incident import check_chain, check_ticket
    from tocsin.integration import ticket_keys
    from tocsin.tickets import JIRA_KEYS

    keys = ticket_keys(settings)
    try:
        return (check_chain if or_gateway else check_ticket)(ticket, keys or JIRA_KEYS)
    except InputError as exc:
        if keys is not None:
            raise
        raise InputError(
            exc.message,
            f"{exc.hint}: Jira's form, used while no ticket system is configured "
            "(configure yours, and its keys are accepted)",
        ) from None


def cmd_run(args: argparse.Namespace) -> int:
    import getpass

    from tocsin.errors import InputError
    from tocsin.incident import Incident
    from tocsin.inputs import parse_assignments
    from tocsin.model import is_slack_user_id
    from tocsin.running import start_run
    from tocsin.statuses import RunStatus

    settings = _settings()
    ticket = _check_ticket(settings, args.ticket)
    if settings.mode == "live" and not (args.actor and is_slack_user_id(args.actor)):
        # Approvers are Slack ids: a requester known by another name could approve their own run.
        raise InputError(
            "live runs need the requester's Slack user id: --as U…",
            "your Slack member id is in your Slack profile (⋮ → Copy member ID)",
        )
    registry = _registry()
    loaded = resolve_runbook(args.runbook, registry)
    incident = Incident(
        ticket=ticket,
        title=args.title,
        requested_by=args.actor or getpass.getuser(),
        requested_via="cli",
        detected_at=args.detected_at,
    )
    if args.deployment:
        from tocsin.running import start_deployment_run

        result = start_deployment_run(
            loaded,
            incident,
            parse_assignments(args.assignments),
            deployment=args.deployment,
            settings=settings,
            printer=_progress_printer(),
        )
    else:
        result = start_run(
            loaded,
            incident,
            parse_assignments(args.assignments),
            settings=settings,
            printer=_progress_printer(),
        )
    _print_run_end(settings, ticket, result)
    return EXIT_OK if result["status"] == RunStatus.SUCCEEDED else EXIT_PROBLEMS


def _progress_printer() -> Any:
    from datetime import datetime

    def show(line: str) -> None:
        print(f"{datetime.now():%H:%M:%S} {line}", flush=True)

    return show


def _print_run_end(
    settings: Any, ticket: str, result: dict[str, Any], *, write_report: bool = False
) -> None:
    from tocsin.evidence import incident_report, verify_incident
    from tocsin.journal import default_url

    where = settings.journal_url or default_url(settings.data_dir)
    verification, _ = verify_incident(settings, ticket, public_key_file=None, anchor=None)
    state = "intact" if verification.ok else "NOT intact"
    print(
        f"audit trail: {verification.records} records, {state}, head sha256:"
        f"{(verification.head or '')[:16]}… in {where} (`tocsin audit verify {ticket}`)"
    )
    if write_report:
        folder = settings.data_dir / "reports"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{ticket}.html"
        path.write_bytes(incident_report(settings, ticket, fmt="html", lang="en"))
        print(f"post-incident report: {path} (`tocsin report {ticket} -o {ticket}.pdf`)")
    else:
        print(f"post-incident report: `tocsin report {ticket} -o {ticket}.html`")


def cmd_decide(args: argparse.Namespace) -> int:
    from tocsin.decisions import find_waiting_run, submit
    from tocsin.embedded import using_prefect
    from tocsin.gates import WaitRequest
    from tocsin.running import journal_for

    settings = _settings()
    ticket = _check_ticket(settings, args.ticket)
    kind = str(args.command)
    checklist: list[int] | None = None
    journal = journal_for(settings)
    try:
        if kind == "done":
            checklist = list(args.check)
            if args.all:
                run, _ = find_waiting_run(journal, ticket, args.step)
                record = journal.step(run.id, args.step) if run else None
                if record and record.request:
                    count = len(WaitRequest.from_data(record.request).checklist)
                    checklist = list(range(1, count + 1))
        with using_prefect(settings):  # the decision resumes the paused flow run
            outcome = submit(
                journal,
                incident=ticket,
                step_id=args.step,
                kind=kind,
                actor=args.actor,
                channel="cli",
                comment=args.comment,
                checklist=checklist,
                gate_hash=args.gate_hash,
            )
    finally:
        journal.close()
    print(outcome.message)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from tocsin.running import journal_for
    from tocsin.status import status_lines

    settings = _settings()
    ticket = _check_ticket(settings, args.ticket) if args.ticket else None
    journal = journal_for(settings)
    try:
        for line in status_lines(journal, ticket):
            print(line)
    finally:
        journal.close()
    return EXIT_OK


def cmd_server(args: argparse.Namespace) -> int:
    from tocsin.embedded import running_server, stop_server

    settings = _settings()
    if args.action == "stop":
        print("stopped" if stop_server(settings) else "no local Prefect server was running")
        return EXIT_OK
    found = running_server(settings)
    print(f"running at {found[0]} (pid {found[1]})" if found else "not running")
    return EXIT_OK


def _next_demo_ticket(settings: Any) -> str:
    from tocsin.running import journal_for

    journal = journal_for(settings)
    try:
        numbers = [
            int(run.incident.removeprefix("DEMO-"))
            for run in journal.runs_of()
            if run.incident.startswith("DEMO-") and run.incident[5:].isdigit()
        ]
    finally:
        journal.close()
    return f"DEMO-{max(numbers, default=0) + 1}"


def cmd_demo(args: argparse.Namespace) -> int:
    from tocsin.demo import scripted_approver
    from tocsin.errors import ConfigurationError, InputError
    from tocsin.incident import Incident
    from tocsin.integration import demo_runs
    from tocsin.running import start_run
    from tocsin.statuses import RunStatus

    runs = demo_runs()
    if args.list:
        width = max((len(name) for name in runs), default=0)
        for name, run in runs.items():
            default = " (default)" if name == DEFAULT_DEMO else ""
            print(f"{name:<{width}}  {run.title}{default}")
        return EXIT_OK
    demo_run = runs.get(args.runbook)
    if demo_run is None:
        raise InputError(
            f"the demo cannot run {args.runbook!r}: no installed integration seeds its sandbox",
            f"run one of: {', '.join(runs) or 'none installed'} (`tocsin demo --list`)",
        )
    settings = _settings()
    if settings.mode != "sandbox":
        raise ConfigurationError("the demo runs only in sandbox mode", "unset TOCSIN_MODE")
    # DEMO-n when none is given: the sandbox's ticket system is a fake Jira.
    ticket = _check_ticket(settings, args.ticket) if args.ticket else _next_demo_ticket(settings)
    registry = _registry()
    loaded = resolve_runbook(args.runbook, registry)
    incident = Incident(
        ticket=ticket,
        title=demo_run.title,
        requested_by="U0DEMOREQ",
        requested_via="cli",
    )
    printer = _progress_printer()
    result = start_run(
        loaded,
        incident,
        dict(demo_run.inputs),
        settings=settings,
        printer=printer,
        on_started=lambda sandbox: scripted_approver(settings, ticket, printer, sandbox),
    )
    _print_run_end(settings, ticket, result, write_report=True)
    return EXIT_OK if result["status"] == RunStatus.SUCCEEDED else EXIT_PROBLEMS


def cmd_gateway(args: argparse.Namespace) -> int:
    from contextlib import AbstractContextManager, nullcontext

    from tocsin.embedded import using_prefect
    from tocsin.gateway import Gateway
    from tocsin.integration import ticket_system
    from tocsin.settings import EnvironmentSecrets, SecretStore

    settings = _settings()
    secrets: SecretStore = EnvironmentSecrets()
    sandbox = None
    if settings.mode == "sandbox":
        from tocsin.sandbox.assembly import Sandbox

        sandbox = Sandbox(settings).__enter__()
        settings, secrets = sandbox.settings, sandbox.secrets
        print(f"SANDBOX mode: local fakes of {', '.join(sandbox.fakes)}")
        for name, fake in sandbox.fakes.items():
            print(f"  fake {name}: {fake.url}")
        for note in sandbox.notes:
            print(f"  {note}")
    try:
        tickets = ticket_system(settings, secrets)
        # Runs asked for from Slack or Jira run in this process, unless on a deployment.
        prefect: AbstractContextManager[object] = (
            nullcontext() if settings.gateway.deployment else using_prefect(settings)
        )
        with prefect:
            gateway = Gateway(settings, secrets=secrets, tickets=tickets)
            host = args.host or settings.gateway.host
            port = settings.gateway.port if args.port is None else args.port
            public = (settings.gateway.public_url or f"http://{host}:{port}").rstrip("/")
            print(f"Tocsin gateway on http://{host}:{port}")
            width = max((len(route.label) for _, route in gateway.routes), default=0) + 1
            for _, route in gateway.routes:
                note = f" {route.note}" if route.note else ""
                print(f"  {route.label + ':':<{width}} {public}{route.path}{note}")
            runs = settings.gateway.deployment or "this process"
            print(f"  runs started from Slack or Jira run on: {runs}")
            try:
                gateway.serve(host, port)  # uvicorn with the gateway's limits (server_config)
            finally:
                gateway.close()
    finally:
        if sandbox is not None:
            sandbox.__exit__(None, None, None)
    return EXIT_OK


def cmd_audit_keygen(args: argparse.Namespace) -> int:
    from tocsin.audit import AuditKey, public_path

    settings = _settings()
    path = args.key or settings.audit_key_path
    key = AuditKey.generate(path, overwrite=args.force)
    print(f"created audit signing key {key.key_id}")
    print(f"  private: {path} (keep it secret; only Tocsin's runs need it)")
    print(f"  public:  {public_path(path)} (give it to whoever verifies audit exports)")
    if args.key and args.key != settings.audit_key_path:
        print(f"  set TOCSIN_AUDIT__KEY_PATH={path} so that runs sign with it")
    return EXIT_OK


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from tocsin.errors import InputError
    from tocsin.evidence import verify_export_file, verify_incident

    if args.file is not None:
        if args.public_key is None:
            raise InputError(
                "verifying an export needs the public key: --public-key KEY.pub",
                "the key is the signing key's .pub file, from whoever exported the trail",
            )
        result = verify_export_file(args.file, args.public_key, args.anchor)
        key_used: Path | None = args.public_key
        if args.ticket and args.ticket != result.incident:
            raise InputError(f"{args.file} is the trail of {result.incident}, not {args.ticket}")
    else:
        if not args.ticket:
            raise InputError("name the incident: tocsin audit verify INC-1 (or --file EXPORT)")
        settings = _settings()
        result, key_used = verify_incident(
            settings,
            _check_ticket(settings, args.ticket, or_gateway=True),
            public_key_file=args.public_key,
            anchor=args.anchor,
            check_anchors=not args.offline,
        )
    if args.json:
        print(json.dumps({**result.as_data(), "public_key": str(key_used) if key_used else None}))
        return EXIT_OK if result.ok else EXIT_PROBLEMS
    if result.ok:
        print(f"{result.incident}: audit trail intact: {result.records} records, ", end="")
        print(f"{result.checkpoints} signed checkpoints")
    else:
        count = len(result.problems)
        print(f"{result.incident}: audit trail NOT intact: {count} problem{'s' * (count > 1)}")
        for problem in result.problems:
            print(f"  {problem.message}")
    if result.head:
        print(f"  head: sha256:{result.head} (record {result.records})")
    if key_used is None:
        print("  signatures NOT checked: no public key (give --public-key KEY.pub)")
    else:
        keys = ", ".join(sorted(result.key_ids)) or "none"
        print(f"  signatures checked with {key_used} (checkpoints signed by key {keys})")
    if result.anchor_seq is not None:
        print(f"  anchor {args.anchor} found: record {result.anchor_seq}")
    for place in result.anchors:
        if not place.reachable:
            continue
        count = len(place.heads)
        found = "" if count else " (none found)"
        state = " — NOT all in the chain" if place.mismatched else ""
        if count and not place.mismatched:
            numbers = ", ".join(str(result.hashes[h.head]) for h in place.heads)
            state = f", in the chain (record{'s' * (count > 1)} {numbers})"
        print(f"  published heads in {place.place}: {count}{found}{state}")
    for note in result.notes:
        print(f"  note: {note}")
    return EXIT_OK if result.ok else EXIT_PROBLEMS


def cmd_audit_export(args: argparse.Namespace) -> int:
    from tocsin.evidence import export_incident

    settings = _settings()
    ticket = _check_ticket(settings, args.ticket, or_gateway=True)
    export = export_incident(settings, ticket)
    if args.output is None:
        sys.stdout.write(export.text)
    else:
        _write_output(args.output, export.text.encode("utf-8"))
        print(f"wrote {export.lines} lines to {args.output}", file=sys.stderr)
    if export.signed:
        return EXIT_OK
    problems = export.verification.problems
    print(
        f"the audit trail of {ticket} is NOT intact ({len(problems)} "
        f"problem{'s' * (len(problems) > 1)}), so the export was NOT signed over its last "
        f"record: {problems[0].message}",
        file=sys.stderr,
    )
    print(f"  `tocsin audit verify {ticket}` lists every problem", file=sys.stderr)
    return EXIT_PROBLEMS


def cmd_audit_hmac(args: argparse.Namespace) -> int:
    import getpass

    from tocsin.audit import AuditKey

    settings = _settings()
    key = AuditKey.load(settings.audit_key_path)
    value = getpass.getpass("secret: ") if sys.stdin.isatty() else sys.stdin.read().rstrip("\n")
    print(key.redact(value))
    return EXIT_OK


_AUDIT_COMMANDS = {
    "keygen": cmd_audit_keygen,
    "verify": cmd_audit_verify,
    "export": cmd_audit_export,
    "hmac": cmd_audit_hmac,
}


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
    settings = _settings()
    content = incident_report(
        settings,
        _check_ticket(settings, args.ticket),
        fmt=fmt,
        lang=args.lang,
        with_prefect=not args.offline,
    )
    if args.output is None:
        sys.stdout.write(content.decode("utf-8"))
    else:
        _write_output(args.output, content)
        print(f"wrote the {fmt} report of {args.ticket} to {args.output}", file=sys.stderr)
    return EXIT_OK


def _write_output(path: Path, content: bytes) -> None:
    from tocsin.errors import InputError

    try:
        path.write_bytes(content)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}") from None


_COMMANDS = {
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
    "audit": lambda args: _AUDIT_COMMANDS[args.audit_command](args),
    "report": cmd_report,
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
