"""Starting a run from the command line: sandbox, local Prefect server, the flow, progress lines."""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from tocsin import preflight
from tocsin.action_registry import ActionRegistry
from tocsin.audit import AuditKey
from tocsin.errors import ConfigurationError, InputError
from tocsin.incident import Incident
from tocsin.inputs import resolve_inputs
from tocsin.journal import Journal, default_url
from tocsin.launch import RunRequest, flow_run_request, run_in_process, run_on_deployment
from tocsin.preflight import Findings
from tocsin.private_paths import private_folder
from tocsin.settings import EnvironmentSecrets, SecretStore, Settings, configured
from tocsin.statuses import ACTIVE_RUN
from tocsin.validation import LoadedRunbook

if TYPE_CHECKING:
    from tocsin.sandbox.assembly import Sandbox

Printer = Callable[[str], None]
_log = logging.getLogger(__name__)


def journal_for(settings: Settings, *, signing: bool = False) -> Journal:
    """The journal named by the settings, with the audit key when there is one.

    ``signing``: this process writes a run's events, so it must sign checkpoints. In the
    sandbox a missing key is created; live, it is a configuration error.
    """
    private_folder(settings.data_dir)  # 0700 when Tocsin creates it: it holds the journal
    return Journal(
        settings.journal_url or default_url(settings.data_dir),
        audit_key=audit_key_for(settings, required=signing),
        checkpoint_every=settings.audit.checkpoint_every,
    )


def audit_key_for(settings: Settings, *, required: bool = False) -> AuditKey | None:
    """The configured signing key; refused when it is a link or others may read it."""
    path = settings.audit_key_path
    if path.exists() or path.is_symlink():
        return AuditKey.load(path)
    if settings.mode == "sandbox":
        return AuditKey.generate(path)
    if required:
        raise ConfigurationError(
            f"no audit signing key at {path}",
            "create it with `tocsin audit keygen` and give its .pub file to whoever verifies "
            "audit exports (or set TOCSIN_AUDIT__KEY_PATH to an existing key)",
        )
    return None


@contextmanager
def _quiet_prefect_console() -> Iterator[None]:
    """Prefect's INFO lines would repeat Tocsin's progress lines on the terminal: in the
    block, its console handler shows warnings only.

    Only a handler left at Prefect's default level (all): one given a level
    (``PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL``) keeps it. Its API log handler (the UI) is
    unaffected.
    """
    import prefect.main  # noqa: F401  (configures Prefect's logging, once: after it, not undone)
    from prefect.logging.handlers import PrefectConsoleHandler

    quieted = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler, PrefectConsoleHandler) and handler.level == logging.NOTSET
    ]
    consoles = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler, PrefectConsoleHandler)
    ]
    for handler in quieted:
        handler.setLevel(logging.WARNING)
    for handler in consoles:
        handler.addFilter(_expected_errors_without_traceback)
    try:
        yield
    finally:
        for handler in quieted:
            handler.setLevel(logging.NOTSET)
        for handler in consoles:
            handler.removeFilter(_expected_errors_without_traceback)


def _expected_errors_without_traceback(record: logging.LogRecord) -> bool:
    """Prefect logs a failed task or flow with its traceback; for an expected error (a
    ``TocsinError``) the terminal gets its message only, as from every other command."""
    from tocsin.errors import TocsinError

    if record.exc_info and isinstance(record.exc_info[1], TocsinError):
        record.exc_info = None
        record.exc_text = None
    return True


def start_deployment_run(
    loaded: LoadedRunbook,
    incident: Incident,
    given_inputs: dict[str, Any],
    *,
    deployment: str,
    settings: Settings,
    printer: Printer,
) -> dict[str, Any]:
    """Trigger the run through a Prefect deployment (a worker runs it) and follow it in the journal."""
    from tocsin.embedded import using_prefect

    runbook = loaded.runbook
    resolve_inputs(runbook, given_inputs)  # refuse wrong inputs here, not in a worker
    # This side needs the journal and the server; the key, secrets and integrations are the
    # worker's, which checks them at flow start, before the run opens.
    found = [preflight.journal(settings, upgrade_ok=True), preflight.configured_prefect(settings)]
    Findings(tuple(f for f in found if f is not None)).refuse_if_problems(
        f"{runbook.runbook} for {incident.ticket}"
    )
    journal = journal_for(settings)
    try:
        request = flow_run_request(RunRequest(loaded, incident, given_inputs), journal)
    finally:
        journal.close()
    with using_prefect(settings), _quiet_prefect_console():
        from prefect.exceptions import ObjectNotFound

        try:
            flow_run = run_on_deployment(request, deployment)
        except ObjectNotFound:
            raise InputError(
                f"no Prefect deployment named {deployment!r}",
                "run `prefect deploy --all` in the Tocsin checkout, then "
                "`prefect worker start --pool tocsin`",
            ) from None
        printer(
            f"triggered flow run {flow_run.name} on deployment {deployment}; waiting for a worker"
        )
        return _follow_deployment_run(settings, incident.ticket, str(flow_run.id), printer)


def _follow_deployment_run(
    settings: Settings, ticket: str, flow_run_id: str, printer: Printer
) -> dict[str, Any]:
    """Print the run's events as the worker writes them, until it finishes; a flow run that
    ends without finishing the run (refused at flow start by the worker) is an error."""
    import time

    journal = journal_for(settings)
    seen = 0
    checked_state = 0.0
    try:
        while True:
            events = journal.events_of(ticket)
            mine = [e for e in events if e["data"].get("flow_run_id") == flow_run_id]
            start = events.index(mine[0]) if mine else len(events)
            for event in events[max(seen, start) :]:
                printer(_describe_event(event))
            seen = max(seen, len(events))
            if mine and any(e["kind"] == "run.finished" for e in events[start:]):
                finished = [e for e in events[start:] if e["kind"] == "run.finished"][-1]
                return {"status": finished["data"]["status"], "reason": finished["data"]["reason"]}
            if not mine and time.monotonic() - checked_state > 2.0:
                checked_state = time.monotonic()
                _refuse_if_ended(flow_run_id)
            time.sleep(0.5)
    finally:
        journal.close()


def _refuse_if_ended(flow_run_id: str) -> None:
    """The flow run ended before it opened the run: say why, with the worker's words."""
    from uuid import UUID

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(flow_run_id)).state
    if state is None or not state.is_final():
        return
    raise ConfigurationError(
        f"the worker did not start the run: flow run {flow_run_id} ended {state.name}: "
        f"{state.message or 'no message'}",
        "the worker checks its own settings, secrets and signing key before the run opens: "
        "give the worker the same TOCSIN_* settings and secrets; `tocsin doctor` on its machine "
        "says what is missing",
    )


def _describe_event(event: dict[str, Any]) -> str:
    step = f"{event['step_id']}: " if event.get("step_id") else ""
    who = f" by {event['actor']}" if event.get("actor") else ""
    return f"{step}{event['kind']}{who}"


def _mark_crashed(flow_run_id: str) -> None:
    """The previous process died mid-run: say so in Prefect, so its UI does not show it running."""
    from uuid import UUID

    import httpx
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Crashed

    try:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(
                UUID(flow_run_id),
                Crashed(message="the process running it stopped; a new run continues it"),
                force=True,
            )
    except (ObjectNotFound, httpx.HTTPError) as exc:
        # Best effort: the journal, not Prefect's state, decides what runs again.
        _log.debug("flow run %s not marked Crashed: %s", flow_run_id, exc)


def start_run(
    loaded: LoadedRunbook,
    incident: Incident,
    given_inputs: dict[str, Any],
    *,
    settings: Settings,
    printer: Printer,
    on_started: Callable[[Sandbox | None], None] | None = None,
    registry: ActionRegistry | None = None,
) -> dict[str, Any]:
    """Run ``loaded`` for ``incident`` in this process until it finishes; return its outcome.

    Refused before anything starts when the run could not finish (``tocsin.preflight``:
    the key, the journal, the Prefect server, the secrets its steps read, the approvers'
    directory).
    In sandbox mode the fakes of the installed integrations are started first, and the run
    gets the settings and secrets pointing at them. ``on_started`` runs in a thread once
    the run starts, given the sandbox (None live). ``registry``: the actions ``loaded``
    was validated with (default: those the settings give).
    """
    runbook = loaded.runbook
    values, _ = resolve_inputs(runbook, given_inputs)
    refused = f"{runbook.runbook} for {incident.ticket}"
    registry = registry if registry is not None else ActionRegistry.for_settings(settings)
    # The sandbox's fakes give the secrets and settings: what the steps need is checked once
    # it is up; live, everything is checked now.
    preflight.run_findings(
        runbook, registry, settings, EnvironmentSecrets(), needs=not settings.starts_own_sandbox
    ).refuse_if_problems(refused)
    journal = journal_for(settings)
    try:
        existing = journal.find_run(incident.ticket, runbook.runbook)
        if existing is not None and existing.is_alive():
            raise InputError(
                f"{runbook.runbook} is already running for {incident.ticket} "
                f"(process {existing.owner})",
                f"`tocsin status {incident.ticket}` shows what it waits for",
            )
        previous_flow_run = None
        if existing is not None and existing.status in ACTIVE_RUN:
            previous_flow_run = existing.flow_run_id
        if existing is not None:
            printer(
                f"resuming the earlier run of {runbook.runbook} for {incident.ticket} "
                f"(it was {existing.status}); finished steps are not run again"
            )
    finally:
        journal.close()
    sandbox = None
    run_settings: Settings = settings
    secrets: SecretStore = EnvironmentSecrets()
    if settings.starts_own_sandbox:
        from tocsin.integration import SandboxSeed
        from tocsin.sandbox.assembly import Sandbox

        seed = SandboxSeed(
            inputs=values,
            usergroups=list(
                dict.fromkeys(g.usergroup for g in runbook.approver_groups.values() if g.usergroup)
            ),
            ticket=incident.ticket,
            title=incident.title,
        )
        sandbox = Sandbox(settings, seed).__enter__()
        run_settings, secrets = sandbox.settings, sandbox.secrets
        printer(f"SANDBOX mode: local fakes of {', '.join(sandbox.fakes)}; nothing real is touched")
        for note in sandbox.notes:
            printer(note)
    try:
        if sandbox is not None:
            Findings(
                tuple(preflight.runbook_needs(runbook, registry, run_settings, secrets))
            ).refuse_if_problems(refused)
        journal = journal_for(settings)
        try:
            request = flow_run_request(RunRequest(loaded, incident, given_inputs), journal)
        finally:
            journal.close()
        from tocsin.embedded import using_prefect

        with using_prefect(settings) as api_url:
            printer(
                f"Prefect server: {api_url.removesuffix('/api')} "
                f"(runs are tagged incident:{incident.ticket})"
            )
            from tocsin.flows.runbook import listen_to_progress, outcome_of

            if previous_flow_run is not None:
                _mark_crashed(previous_flow_run)
            stop_listening = listen_to_progress(printer)
            if on_started is not None:
                # In a copy of this context, so that its Prefect clients use the same server.
                threading.Thread(
                    target=contextvars.copy_context().run,
                    args=(on_started, sandbox),
                    daemon=True,
                ).start()
            try:
                with configured(run_settings, secrets), _quiet_prefect_console():
                    result = outcome_of(run_in_process(request))
            finally:
                stop_listening()
    finally:
        if sandbox is not None:
            sandbox.__exit__(None, None, None)
    return result
