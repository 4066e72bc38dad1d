"""Malformed runbooks yield precise, located errors; valid ones load. (Runbook text written
inline, the YAML document and the rules no fixture shows: tests/test_runbook_checks.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from tocsin.action_registry import ActionRegistry
from tocsin.errors import RunbookError
from tocsin.validation import load_runbook, load_runbook_bytes

ROOT = Path(__file__).resolve().parent.parent
INVALID = ROOT / "tests" / "fixtures" / "invalid"
VALID = ROOT / "tests" / "fixtures" / "valid"
SOURCES = ROOT.parent / "shared" / "sources"
REGISTRY = ActionRegistry.discover()

# fixture -> every problem expected: (line, column, message, hint)
EXPECTED: dict[str, list[tuple[int, int, str, str]]] = {
    "01-yaml-syntax.yaml": [
        (
            12,
            1,
            "not valid YAML: found unexpected end of stream (while scanning a quoted scalar that starts on line 10)",
            "check indentation and quoting around this place",
        ),
    ],
    "02-tab-indentation.yaml": [
        (
            9,
            1,
            "not valid YAML: found character '\\t' that cannot start any token (while scanning for the next token)",
            "YAML indents with spaces, never tabs",
        ),
    ],
    "03-not-a-mapping.yaml": [
        (
            1,
            1,
            "a runbook is a mapping of keys (runbook:, title:, steps:, ...), not a list",
            "see docs/runbook-format.md for a complete example",
        ),
    ],
    "04-duplicate-key.yaml": [
        (
            14,
            7,
            "duplicate key 'message' (first defined on line 13)",
            "YAML keeps only the last value silently; remove or rename one of them",
        ),
    ],
    "05-python-tag.yaml": [
        (
            10,
            12,
            "YAML tag !!python/object/apply:os.system is not allowed in a runbook",
            "remove the tag; runbooks hold plain strings, numbers, lists and mappings",
        ),
    ],
    "06-missing-title.yaml": [
        (
            1,
            1,
            "the runbook is missing the required key `title`",
            "every step and the runbook itself have a title a person reads",
        ),
    ],
    "07-unknown-top-level-key.yaml": [
        (
            1,
            1,
            "the runbook is missing the required key `steps`",
            "a runbook needs at least one step",
        ),
        (8, 1, "unknown key `step` in the runbook", "did you mean 'steps'?"),
    ],
    "08-bad-severity.yaml": [
        (
            5,
            11,
            "`severity`: 'hihg' is not one of low, medium, high, critical",
            "did you mean 'high'?",
        ),
    ],
    "09-bad-runbook-id.yaml": [
        (
            1,
            10,
            "`runbook`: 'Sample_Book' is not a valid value here",
            "a runbook id is lowercase words joined by - (mailbox-compromise)",
        ),
    ],
    "10-float-version.yaml": [
        (
            2,
            10,
            '`version`: write the version in quotes (version: "1.0"), or YAML reads it as a number',
            "",
        ),
    ],
    "11-bad-input-type.yaml": [
        (
            9,
            16,
            "`inputs.user.type`: 'mail' is not one of string, email, boolean, integer, list, enum",
            "did you mean 'email'?",
        ),
    ],
    "12-enum-without-values.yaml": [
        (9, 10, "`inputs.scope`: an enum input needs `values:`, the list of allowed values", ""),
    ],
    "13-default-wrong-type.yaml": [
        (
            9,
            18,
            "`inputs.devices_count`: default does not match the input's type: expected a whole number, got 'many'",
            "",
        ),
    ],
    "14-duplicate-step-id.yaml": [
        (
            13,
            9,
            "duplicate step id 'notify' (first used on line 9)",
            "step ids must be unique in a runbook, handlers included",
        ),
    ],
    "15-step-without-kind.yaml": [
        (
            9,
            5,
            "`steps[0]`: step 'first' has no kind: give it exactly one of action, approval, manual or parallel",
            "",
        ),
    ],
    "16-step-with-two-kinds.yaml": [
        (
            12,
            5,
            "`steps[0]`: step 'first' has several kinds (action, manual); a step has exactly one, split it in two",
            "",
        ),
    ],
    "17-unknown-action.yaml": [
        (11, 13, "unknown action 'slack.post_mesage'", "did you mean 'slack.post_message'?"),
    ],
    "18-unknown-parameter.yaml": [
        (
            12,
            11,
            "action log needs the parameter `message`",
            "add `message:` under `with:`; `tocsin actions log` describes it",
        ),
        (12, 12, "`mesage` is not a parameter of log", "did you mean 'message'?"),
    ],
    "19-wrong-parameter-type.yaml": [
        (12, 32, "parameter `level` of log: Input should be 'info', 'warning' or 'error'", ""),
    ],
    "20-missing-parameter.yaml": [
        (
            12,
            11,
            "action log needs the parameter `message`",
            "add `message:` under `with:`; `tocsin actions log` describes it",
        ),
    ],
    "21-template-syntax-error.yaml": [
        (
            12,
            21,
            "template syntax error: unexpected end of template, expected 'end of print statement'.",
            "templates use Jinja syntax: {{ inputs.name }}, {% if ... %}...{% endif %}",
        ),
    ],
    "22-undefined-input.yaml": [
        (14, 21, "`inputs.usr` is not a declared input", "did you mean 'user'?"),
    ],
    "23-unknown-step-reference.yaml": [
        (12, 21, "`steps.frist` is not a step of this runbook", "did you mean 'first'?"),
    ],
    "24-forward-reference.yaml": [
        (
            12,
            21,
            "`steps.second` runs after 'first'; a step can only read steps that ran before it",
            "move the step, or read another step's outputs",
        ),
    ],
    "25-unknown-output.yaml": [
        (
            16,
            21,
            "`steps.first.outputs.count` does not exist: step 'first' has no output 'count'",
            "step 'first' outputs: level, message",
        ),
    ],
    "26-when-undefined.yaml": [
        (
            13,
            11,
            "`inputs.disable_acount` is not a declared input",
            "did you mean 'disable_account'?",
        ),
    ],
    "27-unknown-approver-group.yaml": [
        (
            13,
            27,
            "approver group 'security_lead' is not declared",
            "did you mean 'security_leads'?",
        ),
    ],
    "28-quorum-zero.yaml": [
        (13, 66, "`steps[0].approval.quorum` must be at least 1, not 0", ""),
    ],
    "29-quorum-unreachable.yaml": [
        (
            13,
            66,
            "quorum 3 can never be met: approver group 'security_leads' has 2 member(s)",
            "lower the quorum or add people (or a Slack user group) to the group",
        ),
    ],
    "30-escalate-without-target.yaml": [
        (
            13,
            15,
            "`steps[0].approval`: on_timeout: escalate needs `escalate_to:`, the group to ask next",
            "",
        ),
    ],
    "31-on-failure-unknown-target.yaml": [
        (
            13,
            24,
            "on_failure runs 'page_lead', which is not a handler",
            "declare it under `handlers:`",
        ),
    ],
    "32-unreachable-handler.yaml": [
        (
            14,
            9,
            "handler 'page_lead' is never run: no on_failure runs it",
            "add on_failure: {run: [page_lead]} to a step, or delete the handler",
        ),
    ],
    "33-handler-cycle.yaml": [
        (
            24,
            17,
            "on_failure handlers run each other in a cycle: page_backup -> page_lead -> page_backup",
            "a handler's on_failure must not lead back to itself",
        ),
    ],
    "34-duration-without-unit.yaml": [
        (13, 14, "`steps[0].timeout`: duration 30 has no unit; write 30s, 30m, 30h or 30d", ""),
    ],
    "35-sandbox-escape.yaml": [
        (
            12,
            21,
            "`__mro__` is not reachable: templates cannot reach Python internals",
            "templates read runbook data only: inputs, steps, incident and runbook",
        ),
    ],
    "36-template-include.yaml": [
        (
            15,
            1,
            "`{% include %}` is not allowed in a runbook template",
            "templates cannot read files or other templates; put the text in the runbook",
        ),
    ],
    "37-parallel-sibling-reference.yaml": [
        (
            15,
            25,
            "`steps.right` runs in parallel with 'left', so its outputs are not ready",
            "read it in a step after the parallel block",
        ),
    ],
    "38-parallel-single-branch.yaml": [
        (12, 7, "`steps[0].parallel`: a parallel block needs at least two steps (it has 1)", ""),
    ],
    "39-unknown-incident-field.yaml": [
        (12, 21, "`incident.tiket` does not exist", "did you mean 'ticket'?"),
    ],
    "40-approver-group-empty.yaml": [
        (
            9,
            19,
            "`approver_groups.security_leads`: an approver group needs `users:` or a `usergroup:`",
            "",
        ),
    ],
    "41-bad-slack-user-id.yaml": [
        (
            9,
            28,
            "`approver_groups.security_leads.users[0]`: 'alice' is not a valid value here",
            "Slack user ids start with U or W (U012AB3CD); find them in the person's profile",
        ),
    ],
    "42-retry-on-approval.yaml": [
        (
            14,
            5,
            "`steps[0]`: `timeout:` does not apply to an approval step (only to action, manual or parallel steps); an approval gate's timeout goes inside `approval:`",
            "",
        ),
    ],
    "43-on-failure-word.yaml": [
        (
            13,
            17,
            "`steps[0].on_failure`: on_failure must be abort, continue or {run: [handler ids]}, not 'ignore'",
            "",
        ),
    ],
    "44-multiple-documents.yaml": [
        (
            13,
            1,
            "not valid YAML: but found another document (expected a single document in the stream that starts on line 1)",
            "a runbook file holds exactly one document; remove the `---` separator",
        ),
    ],
    "45-on-failure-runs-main-step.yaml": [
        (
            13,
            24,
            "on_failure runs 'second', which is a main step, not a handler",
            "on_failure can only run steps listed under `handlers:`",
        ),
    ],
    "46-unknown-template-name.yaml": [
        (14, 21, "unknown name `user` in template", "did you mean inputs.user?"),
    ],
    "47-misspelt-step-key.yaml": [
        (13, 5, "unknown key `on_falure` in `steps[0]`", "did you mean 'on_failure'?"),
    ],
    "48-self-reference.yaml": [
        (
            12,
            21,
            "step 'first' reads its own outputs",
            "a step's own outputs are readable only in its undo: and outputs:",
        ),
    ],
    "49-guards-earlier-step.yaml": [
        (
            17,
            67,
            "step 'first' does not come after the gate 'gate'",
            "a gate can only guard steps that run after it",
        ),
    ],
    "50-empty-file.yaml": [
        (1, 1, "the file is empty", "start from `tocsin schema` or docs/runbook-format.md"),
    ],
    "51-clock-unknown-step.yaml": [
        (
            12,
            17,
            "clock 'gdpr_authority' is stopped by 'notify_authorty', which is not a step",
            "did you mean 'notify_authority'?",
        ),
    ],
    "52-bad-phase.yaml": [
        (
            11,
            12,
            "`steps[0].phase`: 'containment' is not one of contain, eradicate, recover, "
            "communicate, notify",
            "did you mean 'contain'?",
        ),
    ],
    "53-nested-too-deep.yaml": [
        (
            13,
            76,
            "values are nested more than 64 levels deep",
            "a runbook needs a handful of levels (steps, a step, its `with:`, a value); "
            "flatten the structure",
        ),
    ],
    "54-alias-text-bomb.yaml": [
        (
            10,
            61,
            "the document expands to more than 2048 KiB of text once its aliases are expanded",
            "each alias repeats its anchor's whole value; write shared values once "
            "or split the runbook",
        ),
    ],
    "55-template-macro.yaml": [
        (
            13,
            16,
            "`{% macro %}` is not allowed in a runbook template",
            "write the text out, or use a filter on a value: {{ inputs.name | upper }}",
        ),
    ],
    "56-unknown-operators-group.yaml": [
        (
            10,
            12,
            "operators names approver group 'responder', which is not declared",
            "did you mean 'responders'?",
        ),
    ],
    "57-evidence-on-manual.yaml": [
        (
            12,
            5,
            "`steps[0]`: `evidence:` does not apply to a manual step (only to action steps)",
            "",
        ),
    ],
}


def test_there_is_one_fixture_per_error_class_and_at_least_25() -> None:
    fixtures = sorted(path.name for path in INVALID.glob("*.yaml"))
    assert fixtures == sorted(EXPECTED)
    assert len(fixtures) >= 25


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_malformed_runbook_yields_its_exact_errors(fixture: str) -> None:
    path = INVALID / fixture
    with pytest.raises(RunbookError) as caught:
        load_runbook(path, REGISTRY)
    found = [(p.location.line, p.location.column, p.message, p.hint) for p in caught.value.problems]
    assert found == EXPECTED[fixture]
    assert all(
        p.location.file == str(path.relative_to(Path.cwd())) or p.location.file == str(path)
        for p in caught.value.problems
    )


def test_problems_print_as_file_line_column_message_and_hint() -> None:
    with pytest.raises(RunbookError) as caught:
        load_runbook_bytes(b"runbook: x\nversion: 1\nseverity: hihg\n", "inline.yaml", REGISTRY)
    printed = [str(problem) for problem in caught.value.problems]
    assert (
        "inline.yaml:3:11: `severity`: 'hihg' is not one of low, medium, high, critical\n"
        "    hint: did you mean 'high'?"
    ) in printed
    assert caught.value.message == f"{len(printed)} problems in inline.yaml"


@pytest.mark.parametrize("path", sorted(VALID.glob("*.yaml")), ids=lambda p: p.name)
def test_valid_fixtures_load(path: Path) -> None:
    loaded = load_runbook(path, REGISTRY)
    assert loaded.runbook.steps
    assert len(loaded.digest) == 64


@pytest.mark.parametrize("path", sorted((ROOT / "runbooks").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_runbooks_are_valid_and_cite_existing_sources(path: Path) -> None:
    loaded = load_runbook(path, REGISTRY)
    if not SOURCES.is_dir():
        pytest.skip(f"the source documents are not beside this checkout ({SOURCES})")
    for source in loaded.runbook.sources:
        if source.document:
            assert (SOURCES / source.document).is_file(), f"{path.name} cites {source.document}"


def test_every_step_kind_and_option_is_loaded_into_the_model() -> None:
    loaded = load_runbook(VALID / "complete-example.yaml", REGISTRY)
    kinds = {step.kind for step, _ in loaded.runbook.iter_steps()}
    assert kinds == {"action", "approval", "manual", "parallel"}
    steps = [step for step, _ in loaded.runbook.iter_steps()]
    assert any(step.when for step in steps)
    assert any(step.retry for step in steps)
    assert any(step.undo for step in steps)
    assert any(step.outputs for step in steps)
    assert any(step.timeout for step in steps)
    assert loaded.runbook.handlers


def test_the_complete_example_in_the_format_doc_is_the_valid_fixture() -> None:
    doc = (ROOT / "docs" / "runbook-format.md").read_text(encoding="utf-8")
    start = doc.index("<!-- complete-example:start -->")
    end = doc.index("<!-- complete-example:end -->")
    block = doc[start:end].split("```yaml\n", 1)[1].rsplit("```", 1)[0]
    assert block == (VALID / "complete-example.yaml").read_text(encoding="utf-8")


def test_the_example_in_the_readme_is_a_valid_runbook() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("```yaml\nrunbook:") + len("```yaml\n")
    block = readme[start : readme.index("```", start)]
    loaded = load_runbook_bytes(block.encode(), "README.md", REGISTRY)
    assert [step.kind for step in loaded.runbook.steps] == ["approval", "action"]
