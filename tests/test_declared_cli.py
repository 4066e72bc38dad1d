"""Declared operations are actions like the others: `tocsin actions`, `tocsin plan`, the
JSON Schema and the sandbox all see them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from tests.cli_runner import run_tocsin
from tocsin.action_registry import ActionRegistry
from tocsin.actions import ActionContext
from tocsin.integrations.firewall.fake import FakeFirewall
from tocsin.integrations.platform.fake import FakePlatform
from tocsin.sandbox.assembly import Sandbox
from tocsin.schema import schema_text
from tocsin.settings import load_settings

RUNBOOK = """\
runbook: block-office-range
version: "1"
title: Block an office's address range
summary: Cut an office off at the firewall.
severity: high
sources:
  - title: Firewall procedure
    url: https://intranet.example/firewall
inputs:
  office_id: {type: string, description: The office}
  cidr: {type: string, description: Its range}
steps:
  - id: block
    title: Block the office's range
    action: firewall.block_range
    with:
      office_id: "{{ inputs.office_id }}"
      cidr: "{{ inputs.cidr }}"
"""


def test_tocsin_actions_lists_every_shipped_operation_with_its_flags() -> None:
    listed = run_tocsin("actions", "--json")
    assert listed.returncode == 0, listed.stderr
    actions = {item["name"]: item for item in json.loads(listed.stdout)}
    assert {
        "platform.disconnect_office",
        "platform.reconnect_office",
        "platform.revoke_office_passwords",
        "platform.issue_office_access",
        "platform.office_status",
        "firewall.block_range",
        "firewall.unblock_range",
        "firewall.block_status",
    } <= set(actions)
    block = actions["firewall.block_range"]
    assert (block["destructive"], block["idempotent"], block["secrets"]) == (
        True,
        True,
        ["firewall_hmac_key"],
    )
    assert block["module"] == "integrations/firewall.yaml"
    assert {p["name"] for p in block["parameters"]} == {"office_id", "cidr", "comment"}
    assert actions["platform.reconnect_office"]["needs_approval"] is True
    assert actions["platform.office_status"]["destructive"] is False


def test_the_plan_describes_a_declared_step_with_its_sentence(tmp_path: Path) -> None:
    runbook = tmp_path / "block.yaml"
    runbook.write_text(RUNBOOK, encoding="utf-8")

    planned = run_tocsin(
        "plan", str(runbook), "--ticket", "INC-7",
        "--set", "office_id=OF-7", "--set", "cidr=203.0.113.0/24",
    )  # fmt: skip

    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "would touch: block 203.0.113.0/24 (office OF-7) on the firewall" in planned.stdout
    assert "firewall_hmac_key (TOCSIN_SECRET_FIREWALL_HMAC_KEY)" in planned.stdout


def test_validate_refuses_a_wrong_parameter_of_a_declared_action(tmp_path: Path) -> None:
    runbook = tmp_path / "block.yaml"
    runbook.write_text(RUNBOOK.replace("      cidr:", "      cdir:"), encoding="utf-8")
    validated = run_tocsin("validate", str(runbook))
    assert validated.returncode != 0
    assert "block.yaml:18" in validated.stdout and "cdir" in validated.stdout


def test_the_json_schema_knows_the_declared_parameters() -> None:
    schema = json.loads(schema_text(ActionRegistry.discover()))
    validator = Draft202012Validator(schema)

    def errors(with_: dict[str, Any]) -> list[str]:
        document = _minimal()
        document["steps"][0]["with"] = with_
        return [error.message for error in validator.iter_errors(document)]

    assert errors({"office_id": "OF-7", "cidr": "203.0.113.0/24"}) == []
    assert errors({"office_id": "OF-7", "cdir": "203.0.113.0/24"}) != []


def _minimal() -> dict[str, Any]:
    return {
        "runbook": "sample-book",
        "version": 1,
        "title": "Sample",
        "summary": "Sample",
        "severity": "low",
        "sources": [{"title": "Doc", "document": "d.txt"}],
        "steps": [{"id": "first", "title": "First", "action": "firewall.block_range", "with": {}}],
    }


def test_the_sandbox_points_the_declared_services_at_their_fakes() -> None:
    registry = ActionRegistry.discover()
    with Sandbox(load_settings()) as sandbox:
        firewall = sandbox.fake("firewall", FakeFirewall)
        platform = sandbox.fake("platform", FakePlatform)
        run = ActionContext("INC-1", "step", sandbox.secrets, sandbox.settings)

        blocked = registry.get("firewall.block_range").invoke(
            run, {"office_id": "OF-1042", "cidr": "203.0.113.0/24"}
        )
        office = registry.get("platform.office_status").invoke(run, {"office_id": "OF-1042"})

    assert blocked["status_code"] == 201
    assert firewall.active_blocks("OF-1042") == ["203.0.113.0/24"]
    assert office["status"] == "connected"
    assert platform.requests[-1].path == "/api/v1/offices/OF-1042"
