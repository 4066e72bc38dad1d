"""The tocsin command, run as a subprocess the way a support engineer runs it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.cli_runner import ROOT, run_tocsin

INVALID = ROOT / "tests" / "fixtures" / "invalid"
MAILBOX = "runbooks/mailbox-compromise.yaml"
OFFICE = "runbooks/office-compromise.yaml"


def test_help_lists_the_commands() -> None:
    result = run_tocsin("--help")
    assert result.returncode == 0
    for command in ("validate", "plan", "list", "actions", "schema"):
        assert command in result.stdout


def test_help_does_not_import_prefect_or_pydantic() -> None:
    import subprocess
    import sys

    probe = (
        "import sys; from tocsin.cli import build_parser; build_parser().format_help(); "
        "print(sorted(m for m in ('prefect', 'pydantic', 'jinja2', 'httpx') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_validate_shipped_runbooks_prints_a_one_line_summary() -> None:
    result = run_tocsin("validate", "runbooks/")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("\n") == 1
    assert result.stdout.startswith("ok: ")
    assert "mailbox-compromise" in result.stdout


def test_validate_reports_every_problem_with_file_line_and_column(tmp_path: Path) -> None:
    for name in ("22-undefined-input.yaml", "04-duplicate-key.yaml"):
        shutil.copy(INVALID / name, tmp_path / name)
    result = run_tocsin("validate", str(tmp_path))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert (
        f"{tmp_path}/04-duplicate-key.yaml:14:7: duplicate key 'message' (first defined on line 13)"
        in lines
    )
    assert (
        f"{tmp_path}/22-undefined-input.yaml:14:21: `inputs.usr` is not a declared input" in lines
    )
    assert "    hint: did you mean 'user'?" in lines
    assert lines[-1] == "2 problems in 2 of 2 files"
    assert "Traceback" not in result.stdout + result.stderr


def test_validate_a_missing_path_is_a_usage_error() -> None:
    result = run_tocsin("validate", "no/such/runbook.yaml")
    assert result.returncode == 2
    assert "error: no such file or folder: no/such/runbook.yaml" in result.stderr


def test_validate_refuses_binary_input_clearly(tmp_path: Path) -> None:
    binary = tmp_path / "photo.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    result = run_tocsin("validate", str(binary))
    assert result.returncode == 1
    assert f"{binary}:1:1: this is a binary file, not a YAML runbook" in result.stdout


def test_plan_shows_ordered_steps_with_resolved_parameters_and_what_they_touch() -> None:
    result = run_tocsin(
        "plan",
        OFFICE,
        "--ticket",
        "INC-7",
        "--set",
        "office_id=OF-1042",
        "--set",
        "office_name=Courtage Dupont",
        "--set",
        "devices=PC-1,PC-2",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Plan for office-compromise" in out
    assert "Incident INC-7" in out
    assert "plan only: nothing is called" in out
    assert "DESTRUCTIVE" in out
    assert "would touch: disconnect office OF-1042 from the platform" in out
    assert "would touch: block 198.51.100.0/24 (office OF-1042) on the firewall" in out
    assert "cannot be undone: approved at gate approve_disconnect" in out
    assert "approval gate" in out
    assert "\x1b[" not in out  # plain when piped
    numbers = [
        line.split(".")[0] for line in out.splitlines() if line[:1].isdigit() and ". " in line[:5]
    ]
    assert numbers == [str(n) for n in range(1, len(numbers) + 1)]


def test_plan_is_coloured_in_a_terminal() -> None:
    result = run_tocsin(
        "plan",
        MAILBOX,
        "--set",
        "user=alice@broker.example",
        env={"FORCE_COLOR": "1", "TERM": "xterm-256color"},
    )
    assert result.returncode == 0, result.stderr
    assert "\x1b[" in result.stdout


def test_plan_shows_values_known_only_at_run_time_as_placeholders() -> None:
    result = run_tocsin("plan", OFFICE, "--json", "--set", "office_id=OF-1")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["missing_inputs"] == ["office_name"] or "office_name" in plan["missing_inputs"]
    rendered = json.dumps(plan["steps"])
    assert "<inputs.office_name>" in rendered
    assert "<steps." in rendered


def test_plan_by_runbook_id_with_json_output() -> None:
    result = run_tocsin(
        "plan",
        "mailbox-compromise",
        "--json",
        "--ticket",
        "INC-9",
        "--set",
        "user=alice@broker.example",
    )
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["runbook_id"] == "mailbox-compromise"
    assert plan["ticket"] == "INC-9"
    assert plan["inputs"]["user"] == "alice@broker.example"
    assert [step["number"] for step in plan["steps"]][0] == "1"


def test_plan_with_wrong_inputs_exits_2_with_every_problem() -> None:
    result = run_tocsin("plan", MAILBOX, "--set", "user=not-an-email", "--set", "usr=x")
    assert result.returncode == 2
    assert "user: 'not-an-email' is not an email address" in result.stderr
    assert "unknown input 'usr'" in result.stderr
    assert "Traceback" not in result.stderr


def test_plan_with_a_malformed_ticket_is_refused() -> None:
    result = run_tocsin("plan", MAILBOX, "--ticket", "incident 4")
    assert result.returncode == 2
    assert "error: 'incident 4' is not a ticket key" in result.stderr
    assert (
        "hint: ticket keys are a project code, a dash and a number, like INC-1234" in result.stderr
    )


def test_plan_of_an_unknown_runbook_id_suggests_the_closest() -> None:
    result = run_tocsin("plan", "mailbox-compromis")
    assert result.returncode == 2
    assert "no runbook with id 'mailbox-compromis'" in result.stderr
    assert "did you mean 'mailbox-compromise'?" in result.stderr


def test_plan_of_a_malformed_runbook_lists_its_problems() -> None:
    result = run_tocsin("plan", str(INVALID / "24-forward-reference.yaml"))
    assert result.returncode == 1
    assert "24-forward-reference.yaml:12:21: `steps.second` runs after 'first'" in result.stderr


def test_list_shows_runbooks_with_title_and_inputs() -> None:
    result = run_tocsin("list")
    assert result.returncode == 0, result.stderr
    assert "mailbox-compromise" in result.stdout
    assert "--set user=…  email, required" in result.stdout
    assert "office-compromise" in result.stdout


def test_list_flags_broken_runbooks(tmp_path: Path) -> None:
    shutil.copy(INVALID / "14-duplicate-step-id.yaml", tmp_path / "broken.yaml")
    shutil.copy(ROOT / MAILBOX, tmp_path / "mailbox.yaml")
    result = run_tocsin("list", str(tmp_path))
    assert result.returncode == 1
    assert "broken.yaml: 1 problem(s)" in result.stdout
    assert result.stdout.splitlines()[-1] == "1 runbook, 1 with problems"


def test_actions_lists_parameters_types_and_destructive_flag() -> None:
    result = run_tocsin("actions")
    assert result.returncode == 0, result.stderr
    assert "http.request  (destructive, not idempotent)" in result.stdout
    assert "log  (read-only/harmless, idempotent)" in result.stdout
    assert "message: text, required — Text to write" in result.stdout


def test_actions_json_describes_one_action() -> None:
    result = run_tocsin("actions", "slack.post_message", "--json")
    assert result.returncode == 0, result.stderr
    [described] = json.loads(result.stdout)
    assert described["name"] == "slack.post_message"
    assert described["secrets"] == ["slack_bot_token"]
    assert {p["name"] for p in described["parameters"]} >= {"channel", "text"}
    assert described["outputs"] == ["channel", "ts"]


def test_actions_unknown_name_suggests() -> None:
    result = run_tocsin("actions", "http.reqest")
    assert result.returncode == 1
    assert "unknown action 'http.reqest'" in result.stderr
    assert "did you mean 'http.request'?" in result.stderr


def test_schema_is_written_to_a_file(tmp_path: Path) -> None:
    target = tmp_path / "schema" / "runbook.schema.json"
    result = run_tocsin("schema", "-o", str(target))
    assert result.returncode == 0, result.stderr
    schema = json.loads(target.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "Step" in schema["$defs"]


def test_no_command_prints_help_and_exits_2() -> None:
    result = run_tocsin()
    assert result.returncode == 2
    assert "usage: tocsin" in result.stdout


@pytest.mark.parametrize("flag", ["--version"])
def test_version(flag: str) -> None:
    result = run_tocsin(flag)
    assert result.returncode == 0
    assert result.stdout.startswith("tocsin ")


def test_output_cut_short_by_a_pipe_is_not_an_error() -> None:
    import subprocess

    from tests.cli_runner import TOCSIN

    # The reader goes away before tocsin writes (like `tocsin schema | head -1` on a big output).
    process = subprocess.Popen(
        [str(TOCSIN), "schema"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    errors = process.stderr.read()
    process.stderr.close()
    assert process.wait(timeout=60) == 0
    assert "internal error" not in errors and "BrokenPipe" not in errors


# the demo's choice of runbook ------------------------------------------------------------------


def test_demo_list_names_each_runbook_the_sandbox_can_run() -> None:
    listed = run_tocsin("demo", "--list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert any(re.match(r"^mailbox-compromise +Outlook mailbox phished", line) for line in lines)
    assert any(
        re.match(r"^office-compromise +Broker office hacked .*\(default\)$", line) for line in lines
    )
    assert any(re.match(r"^workstation-malware +Office PC infected", line) for line in lines)


def test_demo_of_an_unknown_runbook_says_which_it_can_run() -> None:
    refused = run_tocsin("demo", "leaver-acount")
    assert refused.returncode == 2
    assert "the demo cannot run 'leaver-acount'" in refused.stderr
    assert "mailbox-compromise, office-compromise" in refused.stderr
