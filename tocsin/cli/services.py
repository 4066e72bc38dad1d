"""The long-running services: the gateway, and Tocsin's local Prefect server."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from tocsin.cli.exit_codes import EXIT_OK
from tocsin.cli.lookups import current_settings

if TYPE_CHECKING:
    from tocsin.settings import Settings


def cmd_server(args: argparse.Namespace) -> int:
    from tocsin.embedded import running_server, stop_server

    settings = current_settings()
    if args.action == "stop":
        print("stopped" if stop_server(settings) else "no local Prefect server was running")
        return EXIT_OK
    found = running_server(settings)
    print(f"running at {found[0]} (pid {found[1]})" if found else "not running")
    return EXIT_OK


def cmd_gateway(args: argparse.Namespace) -> int:
    from contextlib import AbstractContextManager, nullcontext

    from tocsin.embedded import using_prefect
    from tocsin.gateway import Gateway
    from tocsin.gateway.judging_process import JudgingProcess
    from tocsin.integration import ticket_system
    from tocsin.settings import EnvironmentSecrets, SecretStore

    settings = current_settings()
    secrets: SecretStore = EnvironmentSecrets()
    sandbox = None
    if settings.starts_own_sandbox:
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
        prefect: AbstractContextManager[str | None] = (
            nullcontext() if settings.gateway.deployment else using_prefect(settings)
        )
        with prefect as prefect_url:
            own_judge = settings.gateway.judge_process
            gateway = Gateway(
                settings, secrets=secrets, tickets=tickets, judges_clicks=not own_judge
            )
            if own_judge:
                gateway.judged_by(JudgingProcess(settings, secrets, prefect_url).start())
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
            if gateway.judging is not None:
                print(f"  clicks judged by process {gateway.judging.pid}")
            try:
                gateway.serve(host, port)  # uvicorn with the gateway's limits (server_config)
            finally:
                gateway.close()
    finally:
        if sandbox is not None:
            sandbox.__exit__(None, None, None)
    return EXIT_OK


def cmd_sandbox(args: argparse.Namespace) -> int:
    """Serve the sandbox's fakes until interrupted, and write the environment that points
    workers, gateways and `tocsin run --deployment` at them."""
    import shlex
    import signal
    import threading

    from tocsin.errors import ConfigurationError
    from tocsin.integration import SandboxSeed
    from tocsin.private_paths import private_folder, write_file_atomically
    from tocsin.sandbox.assembly import Sandbox

    settings = current_settings()
    if settings.mode != "sandbox":
        raise ConfigurationError(
            "`tocsin sandbox` serves fake services, and the settings say mode live",
            "unset TOCSIN_MODE (or set it to sandbox) in this shell",
        )
    target = args.env_file or settings.data_dir / "sandbox.env"
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with Sandbox(settings, SandboxSeed(usergroups=_runbook_usergroups(settings))) as sandbox:
        variables = sandbox.environment()
        lines = [f"export {name}={shlex.quote(value)}" for name, value in variables.items()]
        private_folder(target.parent)
        write_file_atomically(target, ("\n".join(lines) + "\n").encode())
        print(f"SANDBOX: local fakes of {', '.join(sandbox.fakes)}; nothing real is touched")
        for name, fake in sandbox.fakes.items():
            print(f"  fake {name}: {fake.url}")
        for note in sandbox.notes:
            print(f"  {note}")
        print(f"Environment for workers, gateways and runs: {target}")
        print(f"  in each of their shells: . {shlex.quote(str(target))}")
        print("Ctrl-C stops the fakes.", flush=True)
        try:
            stop.wait()
        finally:
            target.unlink(missing_ok=True)
    return EXIT_OK


def _runbook_usergroups(settings: Settings) -> list[str]:
    """The Slack user groups approver groups name in the runbooks on the search path: the
    fake Slack gives each of them members, as a run's own sandbox does for its runbook."""
    from tocsin.catalogue import search_paths
    from tocsin.cli.lookups import action_registry
    from tocsin.errors import RunbookError
    from tocsin.validation import find_runbook_files, load_runbook

    registry = action_registry()
    files, _ = find_runbook_files(search_paths(settings))
    groups: dict[str, None] = {}
    for file in files:
        try:
            runbook = load_runbook(file, registry).runbook
        except RunbookError:
            continue  # `tocsin validate` tells what is wrong with it
        for group in runbook.approver_groups.values():
            if group.usergroup:
                groups[group.usergroup] = None
    return list(groups)
