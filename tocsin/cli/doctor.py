"""``tocsin doctor``: is this configuration able to run runbooks, and if not, what to fix.

One line per check, ``ok`` or ``PROBLEM ... — fix: ...``, exit 1 when one is a problem:
the Prefect server (answers, its version and database), the work pool runs are deployed
to and its live workers, the journal (reachable, schema current), the audit signing key
(present, safe permissions), each configured integration's credentials checked without
changing anything (``tocsin integrations check``'s checks, which reach Slack, Jira...),
and, for each runbook named, the secrets and integrations its steps need (none named:
whether each runbook of the catalogue could start, as notes, not problems). In sandbox
mode the integrations are checked against the sandbox's fakes, as runs would use them.
The checks are ``tocsin.preflight``'s, the ones every run makes before it starts.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tocsin.cli.exit_codes import EXIT_OK, EXIT_PROBLEMS
from tocsin.cli.lookups import current_settings

if TYPE_CHECKING:
    from tocsin.action_registry import ActionRegistry
    from tocsin.preflight import Finding
    from tocsin.settings import SecretStore, Settings

DEFAULT_DEPLOYMENT = "run-runbook/tocsin"
WORKER_SILENT_SECONDS = 90.0
"""A worker whose last heartbeat is older than this is not counted as live (Prefect's
workers beat every 30 s by default)."""


def cmd_doctor(args: argparse.Namespace) -> int:
    from tocsin.settings import EnvironmentSecrets

    settings = current_settings()
    secrets: SecretStore = EnvironmentSecrets()
    findings = [*_prefect_findings(settings, args.pool), _journal(settings), _key(settings)]
    sandbox = None
    if settings.starts_own_sandbox:  # else the fakes served by `tocsin sandbox`, as runs see them
        from tocsin.sandbox.assembly import Sandbox

        sandbox = Sandbox(settings).__enter__()
    try:
        checked_settings, checked_secrets = (
            (sandbox.settings, sandbox.secrets) if sandbox is not None else (settings, secrets)
        )
        findings.extend(_integrations(checked_settings, checked_secrets, debug=args.debug))
        findings.extend(_runbooks(args.runbooks, checked_settings, checked_secrets))
    finally:
        if sandbox is not None:
            sandbox.__exit__(None, None, None)
    ok = all(f.ok for f in findings)
    if args.json:
        print(
            json.dumps(
                {"mode": settings.mode, "ok": ok, "checks": [f.as_data() for f in findings]},
                indent=2,
            )
        )
        return EXIT_OK if ok else EXIT_PROBLEMS
    if settings.mode == "sandbox":
        print("SANDBOX mode: integrations are checked against the sandbox's fakes")
    for finding in findings:
        print(finding.line())
    problems = sum(not f.ok for f in findings)
    print("all good" if ok else f"{problems} problem{'s' * (problems != 1)} found")
    return EXIT_OK if ok else EXIT_PROBLEMS


def _journal(settings: Settings) -> Finding:
    from tocsin import preflight

    return preflight.journal(settings)


def _key(settings: Settings) -> Finding:
    from tocsin import preflight

    return preflight.signing_key(settings)


# -- Prefect: the server, the deployment, the work pool and its workers ------------------


def _prefect_findings(settings: Settings, pool: str | None) -> list[Finding]:
    from tocsin import preflight
    from tocsin.embedded import running_server
    from tocsin.preflight import Finding

    url = settings.prefect_api_url
    if not url:
        found = running_server(settings)
        if found is None:
            return [
                Finding(
                    "prefect server",
                    True,
                    "Tocsin's own server (SQLite in data_dir) is not running; `tocsin run` "
                    "starts it (set TOCSIN_PREFECT_API_URL to use a shared one)",
                )
            ]
        url = found[0]
    server, answered = preflight.prefect_server(url)
    if answered is None:
        return [server]
    if answered.database is None:
        said = (
            "database SQLite: Tocsin's own server"
            if not settings.prefect_api_url
            else "its API does not say its database: PREFECT_API_DATABASE_CONNECTION_URL is "
            "hidden; PostgreSQL for more than one server process"
        )
        server = Finding(server.area, True, f"{server.message} ({said})")
    asked = pool is not None or bool(settings.gateway.deployment)
    return [server, *_deployment_findings(url, settings.gateway.deployment, pool, asked=asked)]


def _deployment_findings(
    url: str, deployment: str | None, pool: str | None, *, asked: bool
) -> list[Finding]:
    """The deployment runs are sent to (``gateway.deployment``, else ``tocsin run
    --deployment``'s default), its work pool and that pool's live workers. Missing ones are
    a problem only when the configuration uses them (``asked``)."""
    import httpx

    from tocsin.preflight import Finding, prefect_http, shown_url

    base = url.rstrip("/")
    url = shown_url(url)
    name = deployment or DEFAULT_DEPLOYMENT
    flow, _, short = name.partition("/")
    findings: list[Finding] = []
    try:
        with prefect_http() as client:
            answer = client.get(f"{base}/deployments/name/{flow}/{short}")
            pool_name = pool
            if answer.status_code == 200:
                pool_name = pool_name or answer.json().get("work_pool_name")
                findings.append(
                    Finding("deployment", True, f"{name} runs on work pool {pool_name or '?'}")
                )
            elif asked:
                findings.append(
                    Finding(
                        "deployment",
                        False,
                        f"the Prefect server has no deployment {name}",
                        "run `prefect --no-prompt deploy --all` in the Tocsin checkout "
                        "(prefect.yaml)",
                    )
                )
            else:
                return [
                    Finding(
                        "deployment",
                        True,
                        f"none ({name} is not deployed): runs run in the process that starts "
                        "them; for workers, `prefect --no-prompt deploy --all` (prefect.yaml)",
                    )
                ]
            findings.extend(_pool_findings(client, base, pool_name or "tocsin"))
    except httpx.HTTPError as exc:
        findings.append(
            Finding(
                "work pool",
                False,
                f"the Prefect server at {url} stopped answering ({type(exc).__name__})",
                "check the server",
            )
        )
    return findings


def _pool_findings(client: Any, base: str, pool: str) -> list[Finding]:
    from tocsin.preflight import Finding

    answer = client.get(f"{base}/work_pools/{pool}")
    if answer.status_code == 404:
        return [
            Finding(
                "work pool",
                False,
                f"no work pool {pool!r}",
                f"prefect work-pool create {pool} --type process",
            )
        ]
    answer.raise_for_status()
    paused = bool(answer.json().get("is_paused"))
    workers = client.post(f"{base}/work_pools/{pool}/workers/filter", json={}).json()
    now = datetime.now(UTC)
    live: list[str] = []
    silent: list[str] = []
    for worker in workers if isinstance(workers, list) else []:
        beat = _moment(worker.get("last_heartbeat_time"))
        age = (now - beat).total_seconds() if beat else None
        label = f"{worker.get('name')} ({'never beat' if age is None else f'{age:.0f} s ago'})"
        (live if age is not None and age <= WORKER_SILENT_SECONDS else silent).append(label)
    found = [
        Finding(
            "work pool",
            not paused,
            f"{pool!r} is paused: runs sent there wait" if paused else f"{pool!r} exists",
            f"prefect work-pool resume {pool}" if paused else "",
        )
    ]
    if live:
        found.append(
            Finding(
                "workers", True, f"{len(live)} live on {pool!r}: last heartbeat " + ", ".join(live)
            )
        )
    else:
        gone = f" (silent: {', '.join(silent)})" if silent else ""
        found.append(
            Finding(
                "workers",
                False,
                f"no live worker on {pool!r}{gone}: runs sent there would wait",
                f"start one with the same TOCSIN_* settings, secrets and signing key: "
                f"`prefect worker start --pool {pool}`",
            )
        )
    return found


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# -- integrations and runbooks ------------------------------------------------------------


def _integrations(settings: Settings, secrets: SecretStore, *, debug: bool) -> list[Finding]:
    """``tocsin integrations check``'s results, one finding each (Slack, Jira reachability)."""
    from tocsin.integration_checks import CheckState, check_all
    from tocsin.preflight import Finding

    findings: list[Finding] = []
    for state in check_all(settings, secrets, debug=debug).integrations:
        area = f"integration {state.name}"
        if not state.results:
            said = (
                "nothing to check"
                if state.state is CheckState.NOTHING_TO_CHECK
                else "not configured (not checked)"
            )
            findings.append(Finding(area, True, said))
            continue
        findings.extend(
            Finding(f"{area}: {r.check}", r.ok, r.message, r.hint) for r in state.results
        )
    return findings


def _runbooks(references: list[str], settings: Settings, secrets: SecretStore) -> list[Finding]:
    """For each runbook named: the secrets and integrations its steps need, set or not."""
    from tocsin import preflight
    from tocsin.cli.lookups import action_registry, resolve_runbook
    from tocsin.errors import TocsinError
    from tocsin.preflight import Finding

    registry = action_registry()
    if not references:
        return _catalogue_readiness(registry, settings, secrets)
    findings: list[Finding] = []
    for reference in references:
        try:
            loaded = resolve_runbook(reference, registry)
        except TocsinError as exc:
            findings.append(Finding.problem(f"runbook {reference}", exc))
            continue
        needs = preflight.runbook_needs(loaded.runbook, registry, settings, secrets)
        area = f"runbook {loaded.runbook.runbook}"
        if not needs:
            findings.append(
                Finding(area, True, "every secret and integration its steps use is set")
            )
        findings.extend(Finding(f"{area}: {n.area}", n.ok, n.message, n.hint) for n in needs)
    return findings


def _catalogue_readiness(
    registry: ActionRegistry, settings: Settings, secrets: SecretStore
) -> list[Finding]:
    """No runbook named: whether each runbook of the catalogue could start now, as notes
    (a configuration need not serve every runbook: naming one checks it as a problem)."""
    from tocsin import preflight
    from tocsin.catalogue import runbook_by_id, runbook_ids
    from tocsin.errors import TocsinError
    from tocsin.preflight import Finding

    findings: list[Finding] = []
    for runbook_id in runbook_ids(registry, settings):
        area = f"runbook {runbook_id}"
        try:
            loaded = runbook_by_id(runbook_id, registry, settings)
        except TocsinError as exc:
            findings.append(Finding.problem(area, exc))
            continue
        needs = preflight.runbook_needs(loaded.runbook, registry, settings, secrets)
        if not needs:
            findings.append(
                Finding(area, True, "ready: every secret and setting its steps use is set")
            )
            continue
        missing = ", ".join(n.area for n in needs[:4]) + (
            f" and {len(needs) - 4} more" if len(needs) > 4 else ""
        )
        findings.append(
            Finding(
                area,
                True,
                f"cannot start yet, missing {missing}",
                f"`tocsin doctor {runbook_id}` says what to set",
                note=True,
            )
        )
    return findings
