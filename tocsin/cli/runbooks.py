"""Commands about runbooks and what they may use: validate, plan, list, actions, schema."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from tocsin.cli.exit_codes import EXIT_OK, EXIT_PROBLEMS
from tocsin.cli.lookups import (
    action_registry,
    checked_ticket,
    configured_ticket_keys,
    current_settings,
    resolve_runbook,
)
from tocsin.cli.output import make_console

if TYPE_CHECKING:
    from rich.console import Console

    from tocsin.plan import Plan


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
    report = validate_files(files, action_registry())
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

    settings = current_settings()
    ticket = checked_ticket(settings, args.ticket or configured_ticket_keys(settings).example)
    given = parse_assignments(args.assignments)
    registry = action_registry()
    loaded = resolve_runbook(args.runbook, registry)
    plan = build_plan(
        loaded, registry, Incident(ticket=ticket, requested_via="cli"), given, settings=settings
    )
    if args.json:
        from dataclasses import asdict

        print(json.dumps(asdict(plan), indent=2, default=str, ensure_ascii=False))
    else:
        _print_plan(plan, make_console())
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
    if step.preview:
        console.print(f"{pad}[bold]preview:[/]")
        for line in step.preview.splitlines():
            console.print(f"{pad}  {escape(line)}", highlight=False)
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
    registry = action_registry()
    console = make_console()
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

    registry = action_registry()
    definitions: list[ActionDefinition] = [registry.get(args.name)] if args.name else list(registry)
    if args.json:
        print(json.dumps([_action_as_data(d) for d in definitions], indent=2, ensure_ascii=False))
        return EXIT_OK
    console = make_console()
    for definition in definitions:
        flags = ["[bold red]destructive[/]" if definition.destructive else "read-only/harmless"]
        flags.append("idempotent" if definition.idempotent else "not idempotent")
        if definition.reconcile is not None:
            flags.append("reads back an interrupted call")
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
        "reconciles": definition.reconcile is not None,
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


def cmd_schema(args: argparse.Namespace) -> int:
    from tocsin.schema import schema_text

    text = schema_text(action_registry())
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK
