"""Running runbooks in tests: the flow in a thread, decisions as people make them, bounded waits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tocsin.decisions import submit
from tocsin.gates import WaitRequest
from tocsin.incident import Incident
from tocsin.journal import Journal, RunRecord, StepRecord
from tocsin.settings import load_settings

HEAD = """\
runbook: {runbook_id}
version: 1
title: Engine test
summary: A runbook the engine tests run
severity: low
sources: [{{title: Test, document: test.txt}}]
inputs:
  state: {{type: string, description: Folder for action state}}
approver_groups:
  leads: {{users: [U0LEAD1, U0LEAD2, U0LEAD3]}}
  managers: {{users: [U0BOSS1]}}
"""


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class FlowInThread:
    """A runbook running in a background thread of the test process."""

    journal: Journal
    ticket: str
    runbook_id: str
    thread: threading.Thread | None = None
    result: dict[str, Any] = field(default_factory=dict)
    state_type: str = ""
    error: BaseException | None = None

    def run(self) -> RunRecord:
        record = wait_until(
            lambda: self.journal.find_run(self.ticket, self.runbook_id), what="the run"
        )
        assert isinstance(record, RunRecord)
        return record

    def step(self, step_id: str) -> StepRecord | None:
        found = self.journal.find_run(self.ticket, self.runbook_id)
        return self.journal.step(found.id, step_id) if found else None

    def wait_for_step(self, step_id: str, status: str, timeout: float = 30.0) -> StepRecord:
        def reached() -> StepRecord | None:
            record = self.step(step_id)
            return record if record is not None and record.status == status else None

        found = wait_until(reached, timeout, f"step {step_id} to be {status}")
        assert isinstance(found, StepRecord)
        return found

    def request(self, step_id: str) -> WaitRequest:
        record = self.wait_for_step(step_id, "waiting")
        assert record.request is not None
        return WaitRequest.from_data(record.request)

    def decide(self, step_id: str, kind: str, actor: str, **extra: Any) -> Any:
        return submit(
            self.journal,
            incident=self.ticket,
            step_id=step_id,
            kind=kind,
            actor=actor,
            channel="test",
            **extra,
        )

    def finish(self, timeout: float = 60.0) -> dict[str, Any]:
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the run did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def start_flow(
    journal: Journal,
    runbook_text: str,
    folder: Path,
    *,
    ticket: str,
    inputs: dict[str, Any] | None = None,
    requested_by: str = "U0REQUESTER",
) -> FlowInThread:
    """Write the runbook to ``folder`` and run it in a thread through the real flow."""
    from tocsin.flows.runbook import outcome_of, run_runbook

    runbook_id = runbook_text.split("\n", 1)[0].split(":", 1)[1].strip()
    path = folder / f"{runbook_id}.yaml"
    path.write_text(runbook_text)
    handle = FlowInThread(journal, ticket, runbook_id)
    incident = Incident(ticket=ticket, requested_by=requested_by, requested_via="test")

    def target() -> None:
        try:
            state = run_runbook(
                runbook_source=runbook_text,
                runbook_name=str(path),
                incident=asdict(incident),
                inputs={"state": str(folder), **(inputs or {})},
                return_state=True,
            )
            handle.state_type = str(state.type.value)
            handle.result = outcome_of(state)
        except BaseException as exc:  # handed to the test by finish()
            handle.error = exc

    handle.thread = threading.Thread(target=target, daemon=True)
    handle.thread.start()
    return handle


def settings_journal() -> Journal:
    from tocsin.running import journal_for

    return journal_for(load_settings())
