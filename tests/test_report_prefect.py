"""The report's Prefect states: read when Prefect answers, said to be unavailable when it does not."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from tests.fake_prefect import FakePrefect
from tocsin.evidence import incident_report
from tocsin.running import journal_for
from tocsin.settings import load_settings

TICKET = "REP-1"


@pytest.fixture
def flow_run_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An incident whose audit trail says one run started, as the flow run it gives."""
    monkeypatch.setenv("TOCSIN_DATA_DIR", str(tmp_path / "data"))
    flow_run = str(uuid4())
    journal = journal_for(load_settings())
    try:
        journal.record(TICKET, "run.started", run_id=1, runbook="contain", flow_run_id=flow_run)
        journal.record(TICKET, "run.finished", run_id=1, status="succeeded", reason="")
    finally:
        journal.close()
    return flow_run


@pytest.fixture
def prefect(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePrefect]:
    with FakePrefect() as fake:
        monkeypatch.setenv("TOCSIN_PREFECT_API_URL", fake.api_url)
        yield fake


def report(fmt: str) -> str:
    return incident_report(load_settings(), TICKET, fmt=fmt, lang="en").decode()


def a_completed_flow_run(flow_run: str) -> dict[str, object]:
    from prefect.client.schemas.objects import FlowRun
    from prefect.states import Completed

    return FlowRun(
        id=flow_run, name="rep-1-contain", flow_id=uuid4(), state=Completed()
    ).model_dump(mode="json")


def test_the_report_shows_the_state_prefect_gives(flow_run_id: str, prefect: FakePrefect) -> None:
    prefect.flow_runs[flow_run_id] = a_completed_flow_run(flow_run_id)
    as_json = json.loads(report("json"))
    assert as_json["prefect_unavailable"] is False
    assert [run["prefect_state"] for run in as_json["runs"]] == ["Completed"]
    assert "| Completed |" in report("md")


def test_a_failing_prefect_is_warned_about_and_the_report_says_it_was_unavailable(
    flow_run_id: str, prefect: FakePrefect, caplog: pytest.LogCaptureFixture
) -> None:
    prefect.failing = True
    with caplog.at_level(logging.WARNING, logger="tocsin.evidence"):
        as_json = json.loads(report("json"))
    assert as_json["prefect_unavailable"] is True
    assert [run["prefect_state"] for run in as_json["runs"]] == [None]
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "tocsin.evidence"]
    assert warning.startswith(f"the Prefect server at {prefect.api_url} could not be read (")
    assert warning.endswith(f"the report shows no Prefect state for flow runs {flow_run_id}")
    assert "| unavailable (Prefect could not be read) |" in report("md")


def test_a_flow_run_prefect_does_not_know_is_unknown_not_unavailable(
    flow_run_id: str, prefect: FakePrefect, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="tocsin.evidence"):
        as_json = json.loads(report("json"))
    assert as_json["prefect_unavailable"] is False
    assert [r.getMessage() for r in caplog.records if r.name == "tocsin.evidence"] == [
        f"the Prefect server at {prefect.api_url} has no flow run {flow_run_id}: the report "
        "shows no Prefect state for it"
    ]
    assert "| unknown |" in report("md")


def test_without_a_running_server_the_report_says_prefect_was_unavailable(
    flow_run_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="tocsin.evidence"):
        assert json.loads(report("json"))["prefect_unavailable"] is True
    assert any("no local Prefect server is running" in r.getMessage() for r in caplog.records)
