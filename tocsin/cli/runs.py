"""Commands that start runs and answer them: run, approve, reject, done, status, demo."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from tocsin.cli.exit_codes import EXIT_OK, EXIT_PROBLEMS
from tocsin.cli.lookups import action_registry, checked_ticket, current_settings, resolve_runbook

DEFAULT_DEMO = "office-compromise"


def cmd_run(args: argparse.Namespace) -> int:
    import getpass

    from tocsin.errors import InputError
    from tocsin.incident import Incident
    from tocsin.inputs import parse_assignments
    from tocsin.model import is_slack_user_id
    from tocsin.running import start_run
    from tocsin.statuses import RunStatus

    settings = current_settings()
    ticket = checked_ticket(settings, args.ticket)
    if settings.mode == "live" and not (args.actor and is_slack_user_id(args.actor)):
        # Approvers are Slack ids: a requester known by another name could approve their own run.
        raise InputError(
            "live runs need the requester's Slack user id: --as U…",
            "your Slack member id is in your Slack profile (⋮ → Copy member ID)",
        )
    registry = action_registry()
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
            registry=registry,
        )
    _print_run_end(settings, ticket, result)
    return EXIT_OK if result["status"] == RunStatus.SUCCEEDED else EXIT_PROBLEMS


def _progress_printer() -> Any:
    """Prints the run's lines; a long step's progress bar is redrawn in place on a terminal
    (elsewhere, a line at each tenth)."""
    from datetime import datetime

    from tocsin.flows.run_state import PROGRESS_MARK

    terminal = sys.stdout.isatty()
    state = {"bar_open": False, "last_tenth": -1}

    def show(line: str) -> None:
        stamp = f"{datetime.now():%H:%M:%S}"
        if line.startswith(PROGRESS_MARK):
            text = line.removeprefix(PROGRESS_MARK)
            if terminal:
                print(f"\r{stamp} {text}", end="", flush=True)
                state["bar_open"] = True
                return
            percent = _percent_of(text)
            if percent // 10 == state["last_tenth"] and percent < 100:
                return
            state["last_tenth"] = percent // 10
            print(f"{stamp} {text}", flush=True)
            return
        if state["bar_open"]:
            print()
            state["bar_open"] = False
        print(f"{stamp} {line}", flush=True)

    return show


def _percent_of(text: str) -> int:
    match = re.search(r"\]\s*(\d+)%", text)
    return int(match.group(1)) if match else 100


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
    from tocsin.decisions import find_waiting_run, submit_where_reachable
    from tocsin.gates import WaitRequest
    from tocsin.running import journal_for

    settings = current_settings()
    ticket = checked_ticket(settings, args.ticket)
    kind = str(args.command)
    checklist: list[int] | None = None
    outputs = _given_outputs(args) if kind == "done" else None
    journal = journal_for(settings)
    try:
        if kind == "done" and outputs is None:
            checklist = list(args.check)
            if args.all:
                run, _ = find_waiting_run(journal, ticket, args.step)
                record = journal.step(run.id, args.step) if run else None
                if record and record.request:
                    count = len(WaitRequest.from_data(record.request).checklist)
                    checklist = list(range(1, count + 1))
        # The decision resumes the paused flow run, or waits in the journal for Prefect.
        outcome = submit_where_reachable(
            settings,
            journal,
            incident=ticket,
            step_id=args.step,
            kind=kind,
            actor=args.actor,
            channel="cli",
            comment=args.comment,
            checklist=checklist,
            gate_hash=args.gate_hash,
            outputs=outputs,
        )
    finally:
        journal.close()
    print(outcome.message)
    return EXIT_OK


def _given_outputs(args: argparse.Namespace) -> dict[str, Any] | None:
    """The outputs given with ``done`` (``--output NAME=VALUE``, ``--outputs-json``), or None."""
    import json

    from tocsin.errors import InputError

    if not args.outputs and args.outputs_json is None:
        return None
    given: dict[str, Any] = {}
    if args.outputs_json is not None:
        try:
            parsed = json.loads(args.outputs_json)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"--outputs-json is not JSON: {exc.msg}", 'give an object: {"count": 3}'
            ) from None
        if not isinstance(parsed, dict):
            raise InputError("--outputs-json must be a JSON object", 'like {"count": 3}')
        given.update(parsed)
    for item in args.outputs:
        name, equals, value = item.partition("=")
        if not equals or not name.strip():
            raise InputError(f"--output {item!r} is not NAME=VALUE", "like --output count=3")
        try:
            given[name.strip()] = json.loads(value)  # 3, true, ["a"]: as JSON reads them
        except json.JSONDecodeError:
            given[name.strip()] = value
    return given


def cmd_status(args: argparse.Namespace) -> int:
    """Exit 0; with ``--stuck``, 1 when something is stuck."""
    from tocsin.errors import InputError
    from tocsin.running import journal_for
    from tocsin.status import status_lines, stuck_data, stuck_findings, stuck_lines

    if args.json and not args.stuck:
        raise InputError("--json goes with --stuck", "run `tocsin status --stuck --json`")
    settings = current_settings()
    ticket = checked_ticket(settings, args.ticket) if args.ticket else None
    journal = journal_for(settings)
    try:
        if args.stuck:
            import json

            findings, prefect_read = stuck_findings(settings, journal, ticket)
            if args.json:
                print(json.dumps(stuck_data(findings, prefect_read), indent=2))
            else:
                print("\n".join(stuck_lines(findings, ticket)))
            return EXIT_PROBLEMS if findings else EXIT_OK
        for line in status_lines(journal, ticket):
            print(line)
    finally:
        journal.close()
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
    settings = current_settings()
    if settings.mode != "sandbox":
        raise ConfigurationError("the demo runs only in sandbox mode", "unset TOCSIN_MODE")
    # DEMO-n when none is given: the sandbox's ticket system is a fake Jira.
    ticket = checked_ticket(settings, args.ticket) if args.ticket else _next_demo_ticket(settings)
    registry = action_registry()
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
