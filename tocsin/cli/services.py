"""The long-running services: the gateway, and Tocsin's local Prefect server."""

from __future__ import annotations

import argparse

from tocsin.cli.exit_codes import EXIT_OK
from tocsin.cli.lookups import current_settings


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
    from tocsin.integration import ticket_system
    from tocsin.settings import EnvironmentSecrets, SecretStore

    settings = current_settings()
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
