"""Runbook text written inline, checked: the YAML document (alias bombs and loops, its size,
its encoding, plain text, anchors and merge keys, words YAML 1.1 reads as booleans,
extension keys) and the rules the malformed fixtures of tests/test_runbook_validation.py do
not show (ids unique across files, parameters checked once rendered, `when:` written with
braces, an escalation group too small for the quorum)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tocsin.action_registry import ActionRegistry
from tocsin.errors import RunbookError
from tocsin.validation import find_runbook_files, load_runbook_bytes, validate_files
from tocsin.yaml_source import MAX_BYTES

REGISTRY = ActionRegistry.discover()


def _runbook_text(steps: str) -> bytes:
    head = (
        "runbook: sample-book\nversion: 1\ntitle: Sample\nsummary: S\nseverity: low\n"
        "sources: [{title: D, document: d.txt}]\n"
    )
    return (head + steps).encode()


def test_an_alias_expansion_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        previous = f"*a{level - 1}"
        lines.append(f"a{level}: &a{level} [{', '.join([previous] * 10)}]")
    bomb = "\n".join(lines).encode() + b"\nsteps: *a8\n"
    with pytest.raises(RunbookError) as caught:
        load_runbook_bytes(bomb, "bomb.yaml", REGISTRY)
    [problem] = caught.value.problems
    assert "expands to more than 50000 values (alias expansion bomb?)" in problem.message


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(RunbookError) as caught:
        load_runbook_bytes(b"steps: &loop\n  - *loop\n", "loop.yaml", REGISTRY)
    assert "recursive alias" in caught.value.problems[0].message


def test_a_huge_document_is_refused_before_parsing() -> None:
    huge = b"summary: '" + b"x" * (MAX_BYTES + 1) + b"'\n"
    with pytest.raises(RunbookError) as caught:
        load_runbook_bytes(huge, "huge.yaml", REGISTRY)
    assert "a runbook may be at most 1024 KiB" in caught.value.problems[0].message


def test_text_that_is_not_utf8_is_refused_with_its_line() -> None:
    with pytest.raises(RunbookError) as caught:
        load_runbook_bytes(b"runbook: x\ntitle: caf\xe9\n", "latin1.yaml", REGISTRY)
    [problem] = caught.value.problems
    assert problem.message == "not UTF-8 text (byte 0xe9 on line 2)"
    assert problem.location.line == 2


def test_a_plain_text_document_is_not_a_runbook() -> None:
    with pytest.raises(RunbookError) as caught:
        load_runbook_bytes(b"Just some notes about the incident.\n", "notes.yaml", REGISTRY)
    assert caught.value.problems[0].message.endswith(
        "not the text 'Just some notes about the incident.'"
    )


def test_anchors_and_merge_keys_work_for_shared_values() -> None:
    text = _runbook_text(
        "steps:\n"
        "  - &note {id: first, title: First, action: log, with: {message: hi}}\n"
        "  - <<: *note\n"
        "    id: second\n"
    )
    loaded = load_runbook_bytes(text, "anchors.yaml", REGISTRY)
    assert [step.id for step in loaded.runbook.steps] == ["first", "second"]
    assert loaded.runbook.steps[1].with_ == {"message": "hi"}


def test_yes_and_no_keys_stay_words() -> None:
    text = _runbook_text(
        "steps:\n  - {id: first, title: First, action: log, with: {message: hi}}\n"
        "inputs:\n  on: {type: string, description: a word that YAML 1.1 reads as true}\n"
    )
    loaded = load_runbook_bytes(text, "words.yaml", REGISTRY)
    assert list(loaded.runbook.inputs) == ["on"]


def test_runbook_ids_must_be_unique_across_files(tmp_path: Path) -> None:
    for name in ("one.yaml", "two.yaml"):
        (tmp_path / name).write_bytes(
            _runbook_text(
                "steps:\n  - {id: first, title: First, action: log, with: {message: hi}}\n"
            )
        )
    files, missing = find_runbook_files([tmp_path])
    report = validate_files(files, REGISTRY)
    assert missing == []
    assert [p.message for p in report.problems] == [
        f"runbook id 'sample-book' is also used by {tmp_path / 'one.yaml'}"
    ]


def test_templated_parameters_are_checked_once_rendered_not_before() -> None:
    text = _runbook_text(
        "inputs:\n  level: {type: enum, values: [info, error], description: L, default: info}\n"
        "steps:\n  - {id: first, title: First, action: log,"
        " with: {message: hi, level: '{{ inputs.level }}'}}\n"
    )
    loaded = load_runbook_bytes(text, "templated.yaml", REGISTRY)
    assert loaded.runbook.steps[0].with_["level"] == "{{ inputs.level }}"


def test_extension_keys_hold_shared_anchors_and_are_ignored() -> None:
    text = _runbook_text(
        "x-note: &note {action: log, with: {message: shared}}\n"
        "steps:\n  - <<: *note\n    id: first\n    title: First\n"
    )
    loaded = load_runbook_bytes(text, "extensions.yaml", REGISTRY)
    assert loaded.runbook.steps[0].with_ == {"message": "shared"}


def test_a_when_condition_written_with_braces_gets_a_dedicated_message() -> None:
    text = _runbook_text(
        "steps:\n  - {id: first, title: First, when: '{{ true }}', action: log, with: {message: hi}}\n"
    )
    with pytest.raises(RunbookError) as caught:
        load_runbook_bytes(text, "when.yaml", REGISTRY)
    assert caught.value.problems[0].message == (
        "a `when:` condition is one expression, without {{ }} or {% %}"
    )


def test_the_escalation_group_must_be_able_to_reach_the_quorum() -> None:
    text = _runbook_text(
        "approver_groups:\n  leads: {users: [U01AAAA, U02BBBB]}\n  managers: {users: [U03CCCC]}\n"
        "steps:\n  - id: gate\n    title: Gate\n    approval: {approvers: leads, prompt: 'Go?', "
        "quorum: 2, on_timeout: escalate, escalate_to: managers}\n"
    )
    with pytest.raises(RunbookError) as caught:
        load_runbook_bytes(text, "escalate.yaml", REGISTRY)
    assert [p.message for p in caught.value.problems] == [
        "quorum 2 can never be met: approver group 'managers' has 1 member(s)"
    ]
