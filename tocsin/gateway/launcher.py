"""Starting the runs asked for from Slack or a ticket, on a deployment or in this process."""

from __future__ import annotations

import logging
import threading
from typing import Any

from tocsin import preflight
from tocsin.action_registry import ActionRegistry
from tocsin.errors import InputError
from tocsin.incident import Incident
from tocsin.inputs import resolve_inputs
from tocsin.journal import Journal
from tocsin.launch import RunRequest, flow_run_request, run_on_deployment
from tocsin.settings import EnvironmentSecrets, SecretStore, Settings, configured
from tocsin.validation import LoadedRunbook

_log = logging.getLogger("tocsin.gateway")


def _import_prefect() -> None:
    try:
        import prefect.deployments  # noqa: F401
    except Exception:  # the run that needs it says what is wrong
        _log.exception("cannot import Prefect")


class RunLauncher:
    """Starts runs asked for from Slack or a ticket: on a Prefect deployment (a worker runs
    them) when ``gateway.deployment`` is set, else in this process, one thread per run."""

    def __init__(
        self, settings: Settings, journal: Journal, secrets: SecretStore | None = None
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.secrets = secrets if secrets is not None else EnvironmentSecrets()
        self.threads: list[threading.Thread] = []
        self._registry: ActionRegistry | None = None
        if settings.gateway.deployment:
            # Prefect takes a second or more to import (more on a busy machine): done now,
            # not while the first `/tocsin run` waits for its answer.
            threading.Thread(target=_import_prefect, name="gateway-warm-up", daemon=True).start()

    @property
    def registry(self) -> ActionRegistry:
        """The actions runbooks may use here (found once)."""
        if self._registry is None:
            self._registry = ActionRegistry.for_settings(self.settings)
        return self._registry

    def start(self, loaded: LoadedRunbook, incident: Incident, inputs: dict[str, Any]) -> str:
        """Check the inputs and start the run; a sentence saying where it runs."""
        resolve_inputs(loaded.runbook, inputs)  # refuse wrong inputs here, with the CLI's words
        existing = self.journal.find_run(incident.ticket, loaded.runbook.runbook)
        if existing is not None and existing.is_alive():
            raise InputError(
                f"{loaded.runbook.runbook} is already running for {incident.ticket}",
                f"`/tocsin status {incident.ticket}` shows what it waits for",
            )
        self.preflight(loaded, incident)
        request = flow_run_request(RunRequest(loaded, incident, inputs), self.journal)
        parameters, name, tags = request.parameters, request.name, request.tags
        if self.settings.gateway.deployment:
            run_on_deployment(request, self.settings.gateway.deployment)
            return f"queued on deployment {self.settings.gateway.deployment}"
        thread = threading.Thread(
            target=self._run_here, args=(name, tags, parameters), name=name, daemon=True
        )
        thread.start()
        self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        return "started"

    def preflight(self, loaded: LoadedRunbook, incident: Incident) -> None:
        """Refuse a run that could not finish, before anything starts (``tocsin.preflight``).

        Run here, the key and the secrets its steps read are checked with the gateway's
        settings and secrets (a file read and look-ups: a person waits for the reply). On a
        deployment the worker checks its own at flow start, before the run opens, and
        queueing the run is what shows Prefect answers.
        """
        if self.settings.gateway.deployment:
            return
        preflight.check_run(
            loaded.runbook,
            incident.ticket,
            self.registry,
            self.settings,
            self.secrets,
            prefect=False,
            journal_too=False,
        )

    def _run_here(self, name: str, tags: list[str], parameters: dict[str, Any]) -> None:
        from prefect import tags as prefect_tags

        from tocsin.flows.runbook import run_runbook

        try:
            # The run uses the gateway's settings and secrets (the sandbox's, in the demo).
            with configured(self.settings, self.secrets), prefect_tags(*tags):
                run_runbook.with_options(flow_run_name=name)(**parameters, return_state=True)
        except Exception:  # the journal says how far it got; `tocsin run` continues it
            _log.exception("run %s stopped unexpectedly", name)


__all__ = ["RunLauncher"]
