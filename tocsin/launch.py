"""One way to start a run, whoever asks (the CLI, a deployment's worker, the gateway).

A ``RunRequest`` is what someone asks for: a runbook exactly as it was validated, the
incident, the inputs given, who asks. ``flow_run_request`` is the one place that turns it
into the flow run's name, tags and parameters; the run is then started in this process
(``run_in_process``) or on a Prefect deployment (``run_on_deployment``). The flow reads
its parameters back with ``runbook_from_parameters``: it executes the bytes that were
validated, and refuses any others.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from tocsin.action_registry import ActionRegistry
from tocsin.errors import Location, Problem, RunbookError
from tocsin.incident import Incident
from tocsin.journal import Journal
from tocsin.sealed_inputs import seal, split_inputs
from tocsin.validation import LoadedRunbook, load_runbook_bytes

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun, State


@dataclass(frozen=True)
class RunRequest:
    """A run someone asks for: the runbook as validated, the incident, the inputs given."""

    loaded: LoadedRunbook
    incident: Incident
    inputs: dict[str, Any]

    @property
    def requester(self) -> str:
        """Who asks (the incident carries it, with the channel: ``requested_via``)."""
        return self.incident.requested_by


@dataclass(frozen=True)
class FlowRunRequest:
    """The name, tags and parameters of one flow run of ``run_runbook``."""

    name: str
    tags: list[str]
    parameters: dict[str, Any]


def run_tags(ticket: str, runbook_id: str) -> list[str]:
    """The Prefect tags of a run: the UI filters runs by incident and by runbook with them."""
    return [f"incident:{ticket}", f"runbook:{runbook_id}"]


def flow_run_request(request: RunRequest, journal: Journal) -> FlowRunRequest:
    """The flow run for ``request``; secret inputs are sealed in the journal, and Prefect
    (which stores and serves parameters) gets only a reference to them."""
    loaded, incident = request.loaded, request.incident
    plain, hidden = split_inputs(loaded.runbook, request.inputs)
    return FlowRunRequest(
        name=f"{incident.ticket}-{loaded.runbook.runbook}",
        tags=run_tags(incident.ticket, loaded.runbook.runbook),
        parameters={
            "runbook_source": loaded.text,
            "runbook_name": str(loaded.path),
            "runbook_digest": loaded.digest,
            "incident": asdict(incident),
            "inputs": plain,
            "sealed_inputs": seal(journal, incident.ticket, hidden),
        },
    )


def runbook_from_parameters(
    source: str, name: str, digest: str | None, registry: ActionRegistry
) -> LoadedRunbook:
    """The runbook a flow run was given, validated again; ``RunbookError`` when it does not
    validate, or is not the text validated when the run was requested (``digest``)."""
    loaded = load_runbook_bytes(source.encode("utf-8"), name, registry)
    if digest is not None and loaded.digest != digest:
        raise RunbookError(
            [
                Problem(
                    Location(name, 1, 1),
                    f"this runbook text (sha256 {loaded.digest[:12]}) is not the one validated "
                    f"when the run was requested (sha256 {digest[:12]})",
                    "the flow run's parameters were changed after it was requested; request "
                    "the run again (`tocsin run`), so that it is validated again",
                )
            ]
        )
    return loaded


def run_in_process(flow_run: FlowRunRequest) -> State[Any]:
    """Run the flow in this process until it ends; its final state (see ``outcome_of``)."""
    from prefect import tags
    from prefect.client.schemas.objects import State

    from tocsin.flows.runbook import run_runbook

    with tags(*flow_run.tags):
        state = run_runbook.with_options(flow_run_name=flow_run.name)(
            **flow_run.parameters, return_state=True
        )
    assert isinstance(state, State)  # a sync flow: never awaitable here
    return state


def run_on_deployment(flow_run: FlowRunRequest, deployment: str) -> FlowRun:
    """Queue the flow run on a Prefect deployment (a worker runs it); returns at once."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    started = run_deployment(  # sync call: async_dispatch types it as maybe-awaitable
        deployment,
        parameters=flow_run.parameters,
        flow_run_name=flow_run.name,
        tags=flow_run.tags,
        timeout=0,
        as_subflow=False,
    )
    assert isinstance(started, FlowRun)
    return started


__all__ = [
    "FlowRunRequest",
    "RunRequest",
    "flow_run_request",
    "run_in_process",
    "run_on_deployment",
    "run_tags",
    "runbook_from_parameters",
]
