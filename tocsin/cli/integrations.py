"""``tocsin integrations``: the installed integrations, and a check of their access."""

from __future__ import annotations

import argparse
import json
from typing import Any

from tocsin.cli.exit_codes import EXIT_OK, EXIT_PROBLEMS
from tocsin.cli.lookups import current_settings


def cmd_integrations(args: argparse.Namespace) -> int:
    from tocsin.settings import EnvironmentSecrets

    as_json = bool(getattr(args, "json", False) or args.json_all)
    if args.integrations_command == "check":
        return _check_integrations(
            current_settings(), args.names, as_json=as_json, debug=args.debug
        )
    from tocsin.integration_checks import list_all

    settings = current_settings()
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
    if settings.starts_own_sandbox:
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
