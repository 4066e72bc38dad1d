"""A run executes the runbook exactly as it was validated, however it is launched."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from tests.engine_support import settings_journal
from tocsin.action_registry import ActionRegistry
from tocsin.errors import RunbookError
from tocsin.incident import Incident
from tocsin.journal import Journal
from tocsin.launch import RunRequest, flow_run_request, run_in_process
from tocsin.validation import load_runbook

pytestmark = pytest.mark.slow

VALIDATED = """\
runbook: launched
version: 1
title: Launched
summary: Says which text it runs
severity: low
sources: [{title: Test, document: test.txt}]
steps:
  - {id: say, title: Say, action: log, with: {message: "the validated text"}}
"""
CHANGED = VALIDATED.replace("the validated text", "a text nobody validated").replace(
    "id: say", "id: other"
)


@pytest.fixture(scope="module")
def journal(prefect_server: str) -> Iterator[Journal]:
    opened = settings_journal()
    yield opened
    opened.close()


def test_the_run_executes_the_validated_text_when_the_file_changed_since(
    journal: Journal, tmp_path: Path
) -> None:
    from tocsin.flows.runbook import outcome_of

    path = tmp_path / "launched.yaml"
    path.write_bytes(VALIDATED.encode())
    loaded = load_runbook(path, ActionRegistry.discover())
    path.write_bytes(CHANGED.encode())  # edited between `tocsin run` validating it and the run
    incident = Incident(ticket="LAUNCH-1", requested_by="U0REQUESTER", requested_via="test")
    flow_run = flow_run_request(RunRequest(loaded, incident, {}), journal)
    outcome = outcome_of(run_in_process(flow_run))
    assert outcome["status"] == "succeeded"
    assert outcome["steps"] == {"say": "succeeded"}
    run = journal.find_run("LAUNCH-1", "launched")
    assert run is not None and run.runbook_digest == loaded.digest
    said = journal.step(run.id, "say")
    assert said is not None and said.outputs["message"] == "the validated text"
    assert flow_run.tags == ["incident:LAUNCH-1", "runbook:launched"]
    assert flow_run.name == "LAUNCH-1-launched"


def test_the_flow_refuses_a_text_other_than_the_one_validated(
    journal: Journal, tmp_path: Path
) -> None:
    from tocsin.flows.runbook import outcome_of

    path = tmp_path / "launched.yaml"
    path.write_bytes(VALIDATED.encode())
    loaded = load_runbook(path, ActionRegistry.discover())
    incident = Incident(ticket="LAUNCH-2", requested_by="U0REQUESTER", requested_via="test")
    flow_run = flow_run_request(RunRequest(loaded, incident, {}), journal)
    tampered = {**flow_run.parameters, "runbook_source": CHANGED}
    with pytest.raises(RunbookError) as refused:
        outcome_of(run_in_process(type(flow_run)(flow_run.name, flow_run.tags, tampered)))
    assert "is not the one validated when the run was requested" in str(refused.value.problems[0])
    assert journal.find_run("LAUNCH-2", "launched") is None


def test_the_flow_refuses_a_runbook_that_does_not_validate(journal: Journal) -> None:
    from tocsin.flows.runbook import outcome_of, run_runbook

    incident = Incident(ticket="LAUNCH-3", requested_by="U0REQUESTER", requested_via="test")
    state = run_runbook(
        runbook_source=VALIDATED.replace("action: log", "action: no.such_action"),
        runbook_name="broken.yaml",
        incident=asdict(incident),
        inputs={},
        return_state=True,
    )
    with pytest.raises(RunbookError) as refused:
        outcome_of(state)
    assert "unknown action 'no.such_action'" in str(refused.value.problems[0])
    assert journal.find_run("LAUNCH-3", "launched") is None
