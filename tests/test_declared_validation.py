"""A declaration's mistakes are reported where they are (file:line), like a runbook's; a
broken declaration is skipped with its problems, and every other action still works."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.cli_runner import run_tocsin
from tests.declared_support import declared_settings
from tocsin.action_registry import ActionRegistry
from tocsin.declared.load import load_declaration
from tocsin.errors import Problem, RunbookError

GOOD = """\
service: acme
description: Acme's API
base_url: https://acme.example/api
secrets:
  acme_token: Acme's bearer token
auth:
  type: bearer
  token_secret: acme_token
operations:
  close_account:
    description: Close an account
    method: POST
    path: /accounts/{account}/close
    body:
      reason: "{{ reason }}"
    destructive: true
    parameters:
      account: {type: string}
      reason: {type: string}
"""


def write(folder: Path, text: str, name: str = "acme.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(RunbookError) as caught:
        load_declaration(path)
    return caught.value.problems


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


def test_the_good_declaration_loads(tmp_path: Path) -> None:
    loaded = load_declaration(write(tmp_path, GOOD))
    assert list(loaded.declaration.operations) == ["close_account"]


def test_a_template_with_a_syntax_error_is_located_on_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('reason: "{{ reason }}"', 'reason: "{{ reason }"'))
    problem = only(problems_of(path))
    assert (problem.location.file.endswith("acme.yaml"), problem.location.line) == (True, 15)
    assert "template syntax error" in problem.message
    assert "operations.close_account.body.reason" in problem.message


def test_a_template_reading_an_undeclared_name_is_located(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("{{ reason }}", "{{ secrets.acme_token }}"))
    problem = only(problems_of(path))
    assert problem.location.line == 15
    assert "reads 'secrets', which is not a parameter of the operation" in problem.message
    assert "account, reason" in problem.hint


def test_an_unknown_field_is_located_on_its_key(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("    destructive: true", "    destrutive: true"))
    problems = problems_of(path)
    unknown = next(p for p in problems if "unknown key `destrutive`" in p.message)
    assert unknown.location.line == 16
    assert unknown.hint == "did you mean 'destructive'?"
    # and the required flag it was meant to be is missing: nothing defaults a safety setting
    assert any("missing the required key `destructive`" in p.message for p in problems)


@pytest.mark.parametrize(
    "path",
    [
        "/accounts/../admin/{account}",
        "/accounts/%2e%2e/{account}",
        "https://evil.example/accounts/{account}",
        "//evil.example/accounts/{account}",
        "accounts/{account}",
    ],
)
def test_a_path_that_would_leave_its_place_is_refused_where_it_is(
    tmp_path: Path, path: str
) -> None:
    file = write(tmp_path, GOOD.replace("/accounts/{account}/close", path))
    problem = only(problems_of(file))
    assert problem.location.line == 13
    assert "`path`" in problem.message


def test_a_placeholder_must_fill_a_whole_segment(tmp_path: Path) -> None:
    file = write(tmp_path, GOOD.replace("/accounts/{account}/close", "/accounts/x{account}"))
    problem = only(problems_of(file))
    assert problem.location.line == 13
    assert "a parameter fills a whole segment" in problem.message


def test_a_placeholder_naming_no_parameter_is_refused(tmp_path: Path) -> None:
    file = write(tmp_path, GOOD.replace("{account}/close", "{acount}/close"))
    problem = only(problems_of(file))
    assert "names {acount}, which is not a parameter" in problem.message


def test_an_auth_secret_that_is_not_declared_is_located_on_the_auth(tmp_path: Path) -> None:
    file = write(tmp_path, GOOD.replace("  token_secret: acme_token", "  token_secret: acme_key"))
    problem = only(problems_of(file))
    assert problem.location.line == 8
    assert "the secret 'acme_key', which the declaration does not declare" in problem.message
    assert "TOCSIN_SECRET_ACME_KEY" in problem.hint


def test_a_base_url_with_credentials_is_refused(tmp_path: Path) -> None:
    file = write(tmp_path, GOOD.replace("https://acme.example/api", "https://u:p@acme.example/"))
    problem = only(problems_of(file))
    assert problem.location.line == 3 and "`base_url`" in problem.message


def test_a_broken_declaration_is_skipped_and_the_others_still_load(tmp_path: Path) -> None:
    write(tmp_path, GOOD.replace("    destructive: true", "    destrutive: true"), "broken.yaml")
    write(tmp_path, GOOD.replace("service: acme", "service: other"), "other.yaml")

    registry = ActionRegistry.for_settings(declared_settings({}, folder=tmp_path))

    assert "other.close_account" in registry
    assert "platform.disconnect_office" in registry  # the shipped ones too
    assert "acme.close_account" not in registry
    [skipped] = registry.skipped
    assert {p.location.file.rsplit("/", 1)[-1] for p in skipped.problems} == {"broken.yaml"}


def test_the_cli_names_the_broken_file_and_line_and_still_lists_actions(tmp_path: Path) -> None:
    write(tmp_path, GOOD.replace("    destructive: true", "    destrutive: true"), "broken.yaml")
    env = {"TOCSIN_DECLARED__FOLDER": str(tmp_path)}

    listed = run_tocsin("actions", "--json", env=env)

    assert listed.returncode == 0, listed.stderr
    assert "broken.yaml:16:5: unknown key `destrutive`" in listed.stderr
    assert "(declared integration skipped)" in listed.stderr
    names = {action["name"] for action in json.loads(listed.stdout)}
    assert {"platform.office_status", "firewall.block_range"} <= names

    validated = run_tocsin("validate", str(tmp_path), env=env)
    assert validated.returncode != 0
    assert "broken.yaml:16:5: unknown key `destrutive`" in validated.stdout


def test_tocsin_validate_accepts_the_shipped_declarations() -> None:
    validated = run_tocsin("validate", "integrations/")
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert "ok: 2 declared integrations valid (firewall, platform)" in validated.stdout


def test_a_declared_action_that_exists_already_is_skipped_naming_both(tmp_path: Path) -> None:
    clash = GOOD.replace("service: acme", "service: http").replace("close_account:", "request:")
    write(tmp_path, clash, "http.yaml")

    registry = ActionRegistry.for_settings(declared_settings({}, folder=tmp_path))

    assert registry.get("http.request").module == "tocsin.integrations.http.actions"
    [skipped] = registry.skipped
    [problem] = skipped.problems
    assert problem.location.file.endswith("http.yaml") and problem.location.line == 10
    assert "http.request is already an action of tocsin.integrations.http.actions" in str(problem)


@pytest.mark.parametrize(
    ("parameter", "says"),
    [
        (
            "{type: cidr, required: false, default: 10.0.0.1/8}",
            "the default '10.0.0.1/8' is not a valid cidr",
        ),
        (
            "{type: integer, required: false, default: many}",
            "the default 'many' is not a valid integer",
        ),
        ("{type: string, pattern: '^(?=x)'}", "its pattern cannot be used"),
        ("{type: enum}", "is an enum without `values:`"),
    ],
)
def test_a_parameter_that_cannot_work_is_refused_on_its_line(
    tmp_path: Path, parameter: str, says: str
) -> None:
    file = write(
        tmp_path, GOOD.replace("      reason: {type: string}", f"      reason: {parameter}")
    )
    problem = only(problems_of(file))
    assert problem.location.line == 19
    assert says in problem.message


def test_a_body_value_json_cannot_carry_is_refused(tmp_path: Path) -> None:
    file = write(tmp_path, GOOD.replace('reason: "{{ reason }}"', "limit: .inf"))
    problem = only(problems_of(file))
    assert problem.location.line == 15 and "JSON cannot carry" in problem.message
