"""A runbook calling declared actions through the real flow (Prefect on loopback), the way
`tocsin run` does: the firewall blocks the range, a later step reads the rule back, and the
key signing the requests appears nowhere in the journal or the audit trail."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from tests.engine_support import settings_journal, start_flow
from tocsin.integrations.firewall.fake import FakeFirewall
from tocsin.journal import Journal

KEY = "fw-run-key-7d3c1b9e0a"
RUNBOOK = """\
runbook: declared-firewall-run
version: 1
title: Block an office's range
summary: A declared action, then another reading its output
severity: low
sources: [{title: Test, document: test.txt}]
inputs:
  state: {type: string, description: Folder for action state}
  office_id: {type: string, description: The office}
  cidr: {type: string, description: Its address range}
steps:
  - id: block
    title: Block the range
    action: firewall.block_range
    with:
      office_id: "{{ inputs.office_id }}"
      cidr: "{{ inputs.cidr }}"
      comment: "incident {{ incident.ticket }}"
  - id: check
    title: List the office's blocks
    action: firewall.block_status
    with:
      office_id: "{{ inputs.office_id }}"
"""


@pytest.fixture(scope="module")
def journal(prefect_server: str) -> Iterator[Journal]:
    opened = settings_journal()
    yield opened
    opened.close()


@pytest.fixture
def firewall(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeFirewall]:
    with FakeFirewall(key=KEY) as fake:
        monkeypatch.setenv("TOCSIN_DECLARED__BASE_URLS__FIREWALL", f"{fake.url}/api/v2")
        monkeypatch.setenv("TOCSIN_SECRET_FIREWALL_HMAC_KEY", KEY)
        yield fake


@pytest.mark.slow
def test_a_runbook_blocks_a_range_through_the_declared_firewall(
    journal: Journal, firewall: FakeFirewall, tmp_path: Path
) -> None:
    handle = start_flow(
        journal, RUNBOOK, tmp_path, ticket="DECL-1",
        inputs={"office_id": "OF-7", "cidr": "203.0.113.0/24"},
    )  # fmt: skip
    handle.finish()

    assert handle.result["status"] == "succeeded", handle.result
    assert firewall.active_blocks("OF-7") == ["203.0.113.0/24"]
    block = handle.step("block")
    check = handle.step("check")
    assert block is not None and check is not None
    assert block.outputs is not None and block.outputs["rule_id"] == "R-0001"
    assert check.outputs is not None and check.outputs["count"] == 1
    assert check.outputs["blocks"][0]["comment"] == "incident DECL-1"
    trail = json.dumps([asdict(r) for r in journal.audit_records("DECL-1")], default=str)
    assert "firewall.block_range" in trail
    assert KEY not in trail and KEY not in json.dumps([asdict(block), asdict(check)], default=str)
