"""Templates render runbook data and nothing else: sandbox escapes fail, types are kept."""

from __future__ import annotations

from typing import Any

import pytest

from tocsin.errors import TemplateError
from tocsin.templating import evaluate_condition, parse_template, render_string, render_value

CONTEXT: dict[str, Any] = {
    "inputs": {"user": "alice@broker.example", "devices": ["PC-1", "PC-2"], "count": 3},
    "incident": {"ticket": "INC-42", "title": "Phished mailbox"},
    "runbook": {"id": "mailbox-compromise", "version": "1"},
    "steps": {
        "revoke": {"outputs": {"count": 2, "items": ["a"], "keys": "k"}, "status": "succeeded"}
    },
}


def test_inputs_incident_and_step_outputs_render_into_text() -> None:
    text = "Reset {{ inputs.user }} for {{ incident.ticket }}: {{ steps.revoke.outputs.count }} sessions"
    assert render_string(text, CONTEXT) == "Reset alice@broker.example for INC-42: 2 sessions"


def test_a_lone_expression_keeps_its_type() -> None:
    assert render_string("{{ steps.revoke.outputs.count }}", CONTEXT) == 2
    assert render_string("  {{ inputs.devices }} ", CONTEXT) == ["PC-1", "PC-2"]
    assert render_string("{{ inputs.count > 2 }}", CONTEXT) is True


def test_nested_values_are_rendered() -> None:
    value = {"to": ["{{ inputs.user }}"], "body": {"ticket": "{{ incident.ticket }}", "n": 1}}
    assert render_value(value, CONTEXT) == {
        "to": ["alice@broker.example"],
        "body": {"ticket": "INC-42", "n": 1},
    }


def test_output_names_that_match_dict_methods_are_outputs_not_methods() -> None:
    assert render_string("{{ steps.revoke.outputs.items }}", CONTEXT) == ["a"]
    assert render_string("{{ steps.revoke.outputs.keys }}", CONTEXT) == "k"


def test_an_input_containing_template_syntax_is_data_rendered_once() -> None:
    context = {**CONTEXT, "inputs": {"user": "{{ incident.ticket.__class__ }}"}}
    assert (
        render_string("user: {{ inputs.user }}", context) == "user: {{ incident.ticket.__class__ }}"
    )


def test_undefined_values_fail_with_the_name_that_is_missing() -> None:
    with pytest.raises(TemplateError) as caught:
        render_string("{{ inputs.usr }}", CONTEXT)
    assert "usr" in caught.value.message
    with pytest.raises(TemplateError):
        render_string("hello {{ steps.revoke.outputs.missing }}", CONTEXT)


@pytest.mark.parametrize(
    "template",
    [
        "{{ incident.ticket.__class__ }}",
        "{{ incident.ticket.__class__.__mro__[1].__subclasses__() }}",
        "{{ inputs['__class__'] }}",
        "{{ inputs.devices.__len__() }}",
        "{{ render_string.__globals__ }}",
        "{{ lipsum.__globals__['os'] }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ joiner.__init__.__globals__ }}",
        "{{ namespace.__init__.__globals__ }}",
        "{{ self._TemplateReference__context }}",
        "{{ config }}",
        "{{ request.application.__globals__ }}",
        "{{ '{0.__class__}'.format(incident.ticket) }}",
        "{{ inputs.devices.append('x') }}",
        "{{ 'a' * 100000000 }}",
        "{{ [1] * 100000000 }}",
        "{{ 10 ** 100000 }}",
    ],
)
def test_sandbox_escape_attempts_fail(template: str) -> None:
    with pytest.raises(TemplateError):
        render_string(template, CONTEXT)


@pytest.mark.parametrize(
    "template,message",
    [
        ("{{ incident.ticket.__class__ }}", "`__class__` is not reachable"),
        ("{{ inputs['_secret'] }}", "`_secret` is not reachable"),
        ("{% include '/etc/passwd' %}", "`{% include %}` is not allowed"),
        ("{% import 'os' as os %}", "`{% import %}` is not allowed"),
        ("{% extends 'base.html' %}", "`{% extends %}` is not allowed"),
        ("{% from 'x' import y %}", "`{% from ... import %}` is not allowed"),
    ],
)
def test_validator_refuses_escape_attempts_before_anything_runs(
    template: str, message: str
) -> None:
    issues = parse_template(template).issues
    assert issues and issues[0].message.startswith(message)


def test_references_are_collected_with_their_paths() -> None:
    parsed = parse_template(
        "{% for d in inputs.devices %}{{ d }} {{ loop.index }}{% endfor %}"
        "{{ steps.revoke.outputs.count }} {{ steps['revoke'].status }}"
    )
    assert {ref.dotted() for ref in parsed.references} == {
        "inputs.devices",
        "steps.revoke.outputs.count",
        "steps.revoke.status",
    }
    assert parsed.issues == ()


def test_when_conditions_evaluate_to_booleans() -> None:
    assert evaluate_condition("inputs.count > 2 and steps.revoke.status == 'succeeded'", CONTEXT)
    assert not evaluate_condition("'PC-9' in inputs.devices", CONTEXT)


def test_a_when_condition_is_one_expression_without_braces() -> None:
    issues = parse_template("{{ inputs.count }}", expression=True).issues
    assert issues and issues[0].message.startswith("a `when:` condition is one expression")
