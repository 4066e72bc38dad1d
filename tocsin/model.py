"""What a runbook is: the v1 format as pydantic models.

The models check structure only (keys, types, enums, durations). Checks that
need the whole runbook or the action registry (references, duplicate ids,
actions and their parameters) live in ``tocsin.validation``. Nothing here
imports Prefect or an integration.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tocsin.durations import DURATION_PATTERN, parse_duration

FORMAT_VERSION: Literal[1] = 1
VERSION_PATTERN = r"^\d+(\.\d+){0,2}$"

Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
RunbookId = Annotated[
    str, StringConstraints(pattern=r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$", max_length=64)
]
ActionName = Annotated[
    str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$", max_length=128)
]
SLACK_USER_ID_PATTERN = r"^[UW][A-Z0-9]{2,}$"
SlackUserId = Annotated[str, StringConstraints(pattern=SLACK_USER_ID_PATTERN)]
SlackUserGroupId = Annotated[str, StringConstraints(pattern=r"^S[A-Z0-9]{2,}$")]
Text = Annotated[str, StringConstraints(min_length=1)]
Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {"type": "string", "pattern": DURATION_PATTERN, "examples": ["30s", "15m", "4h"]}
    ),
]

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_TRUE_WORDS = {"true", "yes", "y", "1", "on"}
_FALSE_WORDS = {"false", "no", "n", "0", "off"}


def is_slack_user_id(identity: str) -> bool:
    """Whether ``identity`` is a Slack user id (U... or W...), the identity approvers have."""
    return re.fullmatch(SLACK_USER_ID_PATTERN, identity) is not None


class _Model(BaseModel):
    # extra="forbid": a misspelt key (`on_falure:`) must be an error, never silently dropped.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class InputType(StrEnum):
    STRING = "string"
    EMAIL = "email"
    BOOLEAN = "boolean"
    INTEGER = "integer"
    LIST = "list"
    ENUM = "enum"


class Source(_Model):
    """Where a procedure comes from: a document (and section) or a URL."""

    title: Text
    document: Text | None = Field(None, description="File name of the source document")
    section: str | None = Field(None, description="Section of the document, like §5.1")
    url: Text | None = None

    @model_validator(mode="after")
    def _names_a_place(self) -> Source:
        if not self.document and not self.url:
            raise PydanticCustomError(
                "source", "a source needs a `document` or a `url` so a reader can find it"
            )
        return self


class InputSpec(_Model):
    """A value the support engineer gives when starting a run (``--set name=value``)."""

    type: InputType
    description: Text
    required: bool | None = Field(
        None, description="Defaults to true when no default is given, false otherwise"
    )
    default: Any = None
    values: list[Text] | None = Field(None, description="Allowed values of an enum input")
    items: Literal["string", "email", "integer"] = Field(
        "string", description="Type of each element of a list input"
    )
    secret: bool = Field(
        False, description="Never shown in plans, logs or the audit trail in clear"
    )

    @property
    def is_required(self) -> bool:
        return self.default is None if self.required is None else self.required

    @model_validator(mode="after")
    def _consistent(self) -> InputSpec:
        if self.type is InputType.ENUM and not self.values:
            raise PydanticCustomError(
                "input", "an enum input needs `values:`, the list of allowed values"
            )
        if self.type is not InputType.ENUM and self.values is not None:
            raise PydanticCustomError("input", "`values:` only applies to `type: enum` inputs")
        if self.required and self.default is not None:
            raise PydanticCustomError(
                "input", "an input with a default is not required; remove `required: true`"
            )
        if self.default is not None:
            try:
                self.default = self.convert(self.default)
            except ValueError as exc:
                raise PydanticCustomError(
                    "input",
                    "default does not match the input's type: {reason}",
                    {"reason": str(exc)},
                ) from None
        return self

    def convert(self, value: Any) -> Any:
        """Check ``value`` (typed, or text from ``--set``) and return it with the input's type."""
        if self.type is InputType.LIST:
            if isinstance(value, str):
                value = [part.strip() for part in value.split(",") if part.strip()]
            if not isinstance(value, list):
                raise ValueError(f"expected a list, got {value!r}")
            return [_convert_scalar(self.items, item) for item in value]
        if self.type is InputType.ENUM:
            text = str(value)
            if text not in (self.values or []):
                raise ValueError(f"{text!r} is not one of {', '.join(self.values or [])}")
            return text
        return _convert_scalar(self.type.value, value)


def _convert_scalar(kind: str, value: Any) -> Any:
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS | _FALSE_WORDS:
            return value.strip().lower() in _TRUE_WORDS
        raise ValueError(f"expected true or false, got {value!r}")
    if kind == "integer":
        if isinstance(value, bool):
            raise ValueError(f"expected a whole number, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
            return int(value)
        raise ValueError(f"expected a whole number, got {value!r}")
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {value!r}")
    if kind == "email" and not EMAIL_PATTERN.match(value.strip()):
        raise ValueError(f"{value!r} is not an email address")
    return value.strip() if kind == "email" else value


class Phase(StrEnum):
    """Where a step stands in the response; the report measures time to contain from it."""

    CONTAIN = "contain"
    ERADICATE = "eradicate"
    RECOVER = "recover"
    COMMUNICATE = "communicate"
    NOTIFY = "notify"


class RegulatoryClock(_Model):
    """A legal deadline that runs from the incident's detection until a step meets it."""

    title: Text = Field(description="What must be done, like: Notify the data-protection authority")
    deadline: Duration = Field(description="Time allowed, like 72h (GDPR art. 33) or 24h")
    starts: Literal["detected", "run_started"] = Field(
        "detected",
        description="detected: from the incident's detection time (--detected-at), "
        "falling back to the run's start; run_started: from the run's start",
    )
    stopped_by: Name = Field(description="Step whose completion meets the deadline")
    source: Text | None = Field(None, description="The rule, like GDPR art. 33(1)")


class ApproverGroup(_Model):
    """People allowed to decide an approval gate: Slack user ids and/or one Slack user group."""

    description: str | None = None
    users: list[SlackUserId] = Field(default_factory=list, description="Slack user ids (U...)")
    usergroup: SlackUserGroupId | None = Field(None, description="Slack user group id (S...)")

    @model_validator(mode="after")
    def _not_empty(self) -> ApproverGroup:
        # Deny by default: an approver group that names nobody would let nobody, or anybody, decide.
        if not self.users and not self.usergroup:
            raise PydanticCustomError(
                "approvers", "an approver group needs `users:` or a `usergroup:`"
            )
        return self


class RetryPolicy(_Model):
    """Try an action again after a failure: ``backoff`` before the first retry, then multiplied."""

    attempts: Annotated[int, Field(ge=1, le=20, description="Total attempts, including the first")]
    backoff: Duration = Field(default=timedelta(seconds=10))
    backoff_factor: Annotated[float, Field(ge=1, le=10)] = 2.0

    def delays_seconds(self) -> list[float]:
        """Seconds to wait before each retry (``attempts - 1`` values)."""
        first = self.backoff.total_seconds()
        return [first * self.backoff_factor**index for index in range(self.attempts - 1)]


class RunHandlers(_Model):
    """``on_failure: {run: [...]}``: run these handler steps, then stop the run."""

    run: Annotated[list[Name], Field(min_length=1)]


def _parse_on_failure(value: Any) -> Any:
    if isinstance(value, str) and value not in ("abort", "continue"):
        raise PydanticCustomError(
            "on_failure",
            "on_failure must be abort, continue or {run: [handler ids]}, not {value}",
            {"value": repr(value)},
        )
    if isinstance(value, dict):
        if set(value) != {"run"}:
            raise PydanticCustomError(
                "on_failure",
                "on_failure as a mapping has one key, run: write on_failure: {run: [handler ids]}",
            )
        targets = value["run"]
        if (
            not isinstance(targets, list)
            or not targets
            or not all(isinstance(t, str) and _NAME.match(t) for t in targets)
        ):
            raise PydanticCustomError(
                "on_failure", "on_failure: run needs a list of handler step ids, like [notify_lead]"
            )
        return RunHandlers(run=targets)
    return value


OnFailure = Annotated[
    Literal["abort", "continue"] | RunHandlers, BeforeValidator(_parse_on_failure)
]


class UndoAction(_Model):
    """The compensating action that reverses a step when a later step fails and the run aborts."""

    action: ActionName
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")


class ApprovalGate(_Model):
    """Wait until ``quorum`` distinct people of an approver group approve."""

    approvers: Name = Field(description="Name of an approver group")
    quorum: Annotated[int, Field(ge=1, le=10)] = 1
    prompt: Text
    timeout: Duration = Field(default=timedelta(hours=4))
    on_timeout: Literal["abort", "continue", "escalate"] = "abort"
    escalate_to: Name | None = Field(
        None, description="Approver group asked when the gate times out"
    )
    guards: list[Name] | None = Field(
        None,
        description="Step ids this decision covers; default: the following steps up to the next gate",
    )

    @model_validator(mode="after")
    def _escalation_consistent(self) -> ApprovalGate:
        if self.on_timeout == "escalate" and not self.escalate_to:
            raise PydanticCustomError(
                "approval", "on_timeout: escalate needs `escalate_to:`, the group to ask next"
            )
        if self.escalate_to and self.on_timeout != "escalate":
            raise PydanticCustomError(
                "approval", "`escalate_to:` is only used with on_timeout: escalate"
            )
        return self


class ManualTask(_Model):
    """A task a person does outside Tocsin, then marks done with the checklist ticked."""

    instructions: Text
    checklist: list[Text] = Field(default_factory=list)
    assignee: Name | None = Field(
        None,
        description="Role expected to do it, like it_partner; when it names an approver group, "
        "only that group's people may mark the task done or reject it",
    )


STEP_KINDS = ("action", "approval", "manual", "parallel")
_KIND_ONLY_KEYS = {
    "with": {"action"},
    "retry": {"action"},
    "undo": {"action"},
    "outputs": {"action"},
    "secret_outputs": {"action"},
    "evidence": {"action"},
    "timeout": {"action", "manual", "parallel"},
    "on_failure": {"action", "manual", "parallel"},
}


class Step(_Model):
    """One step: exactly one of ``action``, ``approval``, ``manual`` or ``parallel``."""

    id: Name
    title: Text
    description: str | None = None
    action: ActionName | None = None
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    approval: ApprovalGate | None = None
    manual: ManualTask | None = None
    parallel: Annotated[list[Step], Field(min_length=2)] | None = None
    when: Text | None = Field(None, description="Expression; the step is skipped when it is false")
    retry: RetryPolicy | None = None
    timeout: Duration | None = None
    on_failure: OnFailure = "abort"
    undo: UndoAction | None = None
    outputs: dict[Name, str] = Field(
        default_factory=dict, description="Extra outputs computed from the action's `result`"
    )
    phase: Phase | None = Field(
        None,
        description="contain, eradicate, recover, communicate or notify; the report's time to "
        "contain runs until the last `contain` step finishes",
    )
    secret_outputs: list[Name] = Field(
        default_factory=list,
        description="Outputs of this step that are secrets (a temporary password): the audit "
        "trail records their keyed HMAC, never the value",
    )
    evidence: bool = Field(
        False,
        description="This step's outputs are evidence read before anything changes (inbox "
        "rules, sign-ins...): the post-incident report shows them, before what changed",
    )

    @model_validator(mode="before")
    @classmethod
    def _one_kind(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        kinds = [kind for kind in STEP_KINDS if kind in data]
        step = f"step {data['id']!r}" if isinstance(data.get("id"), str) else "this step"
        if not kinds:
            raise PydanticCustomError(
                "step_kind",
                "{step} has no kind: give it exactly one of action, approval, manual or parallel",
                {"step": step},
            )
        if len(kinds) > 1:
            raise PydanticCustomError(
                "step_kind",
                "{step} has several kinds ({kinds}); a step has exactly one, split it in two",
                {"step": step, "kinds": ", ".join(kinds), "at_key": kinds[1]},
            )
        kind = kinds[0]
        for key, allowed in _KIND_ONLY_KEYS.items():
            if key in data and kind not in allowed:
                ordered = [k for k in STEP_KINDS if k in allowed]
                where = (
                    ", ".join(ordered[:-1]) + " or " + ordered[-1]
                    if len(ordered) > 1
                    else ordered[0]
                )
                article = "an" if kind[0] in "aeiou" else "a"
                extra = ""
                if key == "timeout" and kind == "approval":
                    extra = "; an approval gate's timeout goes inside `approval:`"
                raise PydanticCustomError(
                    "step_kind",
                    "`{key}:` does not apply to {article} {kind} step (only to {where} steps){extra}",
                    {
                        "key": key,
                        "article": article,
                        "kind": kind,
                        "where": where,
                        "extra": extra,
                        "at_key": key,
                    },
                )
        return data

    @field_validator("parallel", mode="before")
    @classmethod
    def _parallel_branches(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) < 2:
            raise PydanticCustomError(
                "parallel",
                "a parallel block needs at least two steps (it has {count})",
                {"count": len(value)},
            )
        return value

    @property
    def kind(self) -> str:
        for kind in STEP_KINDS:
            if getattr(self, kind) is not None:
                return kind
        raise AssertionError("validated step has a kind")  # pragma: no cover

    @property
    def task_name(self) -> str:
        """The name a person reads in Prefect: ``revoke_sessions`` -> ``revoke-sessions``."""
        return self.id.replace("_", "-")


EXTENSION_PREFIX = "x-"


class Runbook(_Model):
    """A procedure: header, inputs, approver groups, steps and failure handlers.

    Top-level keys starting with ``x-`` are ignored, so that shared values can be
    written once under an anchor (``x-platform: &platform {...}``) and merged with ``<<:``.
    """

    @model_validator(mode="before")
    @classmethod
    def _drop_extensions(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not str(k).startswith(EXTENSION_PREFIX)}
        return data

    format: Literal[1] = Field(1, description="Runbook format version")
    runbook: RunbookId = Field(description="Identifier, like mailbox-compromise")
    version: Annotated[
        str,
        BeforeValidator(lambda v: str(v) if isinstance(v, int) and not isinstance(v, bool) else v),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "integer", "minimum": 0},
                    {"type": "string", "pattern": VERSION_PATTERN},
                ]
            }
        ),
    ] = Field(pattern=VERSION_PATTERN, description="Version of this runbook, like 3 or 1.2.0")
    title: Text
    summary: Text
    severity: Severity
    sources: Annotated[list[Source], Field(min_length=1)]
    inputs: dict[Name, InputSpec] = Field(default_factory=dict)
    approver_groups: dict[Name, ApproverGroup] = Field(default_factory=dict)
    operators: Name | None = Field(
        None,
        description="Approver group that decides manual tasks whose assignee is not a group, "
        "and steps interrupted by a crash that no gate guards (live: nobody else may)",
    )
    steps: Annotated[list[Step], Field(min_length=1)]
    handlers: list[Step] = Field(
        default_factory=list, description="Steps run only by an on_failure: {run: [...]}"
    )
    clocks: dict[Name, RegulatoryClock] = Field(
        default_factory=dict,
        description="Legal deadlines (GDPR 72 h, DORA...) started with the run, stopped by a step",
    )

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        if isinstance(value, float):
            raise PydanticCustomError(
                "version",
                'write the version in quotes (version: "{value}"), or YAML reads it as a number',
                {"value": value},
            )
        return value

    def iter_steps(self) -> Iterator[tuple[Step, tuple[str | int, ...]]]:
        """Every step with its path in the document, parallel branches and handlers included."""

        def walk(
            steps: list[Step], prefix: tuple[str | int, ...]
        ) -> Iterator[tuple[Step, tuple[str | int, ...]]]:
            for index, step in enumerate(steps):
                path = (*prefix, index)
                yield step, path
                if step.parallel:
                    yield from walk(step.parallel, (*path, "parallel"))

        yield from walk(self.steps, ("steps",))
        yield from walk(self.handlers, ("handlers",))

    def step(self, step_id: str) -> Step:
        """The step with this id (KeyError when there is none)."""
        for step, _ in self.iter_steps():
            if step.id == step_id:
                return step
        raise KeyError(step_id)
