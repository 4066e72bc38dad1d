"""What a flow run of a runbook is started with, whoever starts it (CLI, deployment, gateway)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tocsin.incident import Incident
from tocsin.journal import Journal
from tocsin.sealed_inputs import seal, split_inputs
from tocsin.validation import LoadedRunbook


@dataclass(frozen=True)
class FlowRunRequest:
    """The name, tags and parameters of one flow run of ``run_runbook``."""

    name: str
    tags: list[str]
    parameters: dict[str, Any]


def flow_run_request(
    loaded: LoadedRunbook, incident: Incident, given_inputs: dict[str, Any], journal: Journal
) -> FlowRunRequest:
    """Secret inputs are sealed in the journal: Prefect gets only a reference to them."""
    plain, hidden = split_inputs(loaded.runbook, given_inputs)
    return FlowRunRequest(
        name=f"{incident.ticket}-{loaded.runbook.runbook}",
        tags=[f"incident:{incident.ticket}", f"runbook:{loaded.runbook.runbook}"],
        parameters={
            "runbook_source": loaded.path.read_text(encoding="utf-8"),
            "runbook_name": str(loaded.path),
            "incident": asdict(incident),
            "inputs": plain,
            "sealed_inputs": seal(journal, incident.ticket, hidden),
        },
    )


__all__ = ["FlowRunRequest", "flow_run_request"]
