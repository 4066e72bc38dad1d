"""The one seam for actions.

An action is a plain typed function whose first parameter is the ``ActionContext``
and whose other parameters (keyword-only) are what a runbook step gives under
``with:``. The ``@action`` decorator only attaches an ``ActionDefinition`` to the
function; nothing is registered at import time. ``ActionRegistry.discover()``
(``tocsin.action_registry``)
collects the definitions in the action modules of every installed integration (the
``tocsin.integrations`` entry points, built-in ones included: ``tocsin.integration``)
and of the ``action_modules`` setting::

    @action("microsoft.revoke_sessions", destructive=True, idempotent=True,
            describe=lambda user: f"sign {user} out of every Microsoft 365 session")
    def revoke_sessions(
        context: ActionContext,
        *,
        user: Annotated[str, Field(description="UPN or object id")],
    ) -> RevokedSessions: ...
"""

from __future__ import annotations

import inspect
import logging
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator
from pydantic.fields import FieldInfo

from tocsin.errors import (
    ActionError,
    ConfigurationError,
    TemplateError,
    TocsinError,
)
from tocsin.outbound import render_url_template
from tocsin.settings import SecretStore as SecretStore  # re-exported: actions read secrets
from tocsin.settings import Settings
from tocsin.templating import contains_template, render_string, render_value

_log = logging.getLogger("tocsin.actions")
_MARKER = "__tocsin_action__"
_SECRET_MARKER = "x-tocsin-secret"

SecretName = Annotated[
    str,
    Field(
        pattern=r"^[a-z][a-z0-9_]*$",
        description="Name of a secret (set as TOCSIN_SECRET_<NAME>)",
        json_schema_extra={_SECRET_MARKER: True},
    ),
]
"""A parameter that names a secret; the secret's value never appears in the runbook."""


class _UrlTemplateMarker:
    """Annotated metadata marking a URL parameter (kept out of the JSON schema)."""


_URL_TEMPLATE = _UrlTemplateMarker()

UrlTemplate = Annotated[str, _URL_TEMPLATE]
"""A URL parameter: each ``{{ }}`` value in it is percent-encoded when the step is rendered
(``tocsin.outbound.render_url_template``), so an input fills a path segment or a query
value and never moves the request elsewhere."""


@dataclass(frozen=True)
class EscapedValues:
    """Annotated metadata of a text parameter written in a markup (Slack mrkdwn, wiki markup):
    each ``{{ }}`` value rendered into it goes through ``escape``, so an input or an API
    value is shown as text and never becomes a mention, a link or formatting, while the
    markup the runbook's author wrote stays as written."""

    escape: Callable[[str], str]


class _WrittenAsIs:
    """Annotated metadata: the parameter must be written in the runbook, never templated."""


WRITTEN_AS_IS = _WrittenAsIs()
"""Put in a parameter's ``Annotated[...]`` when its value decides where a call goes or which
secret it sends (``service``, ``bearer_token_secret``): an input or an earlier step's
output must not choose it, so a template there fails the step when it is rendered."""


@dataclass(frozen=True)
class ActionContext:
    """What an action receives besides its parameters."""

    incident: str
    step_id: str
    secrets: SecretStore
    settings: Settings
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("tocsin.actions"))
    fingerprint: Callable[[str], str] | None = None
    """The run's keyed HMAC of a value (``hmac-sha256:...``), as the trail writes secrets and
    ``tocsin audit hmac`` recomputes it: how an action names a person (an e-mail address)
    in its outputs without writing it. None outside a run: ``fingerprint_of`` then uses the
    audit key the settings name."""
    progress: Callable[[int, int, str], None] | None = None
    """Called as (done, total, what) by a long action (a mail campaign): the CLI shows a
    progress bar and the incident thread hears of it. None outside a run."""
    history: Callable[[], Sequence[StepSummary]] | None = None
    """The run's steps so far, for an action that writes about what was done (a breach
    notification's measures taken). None outside a run."""
    detected_at: str = ""
    """When the office became aware of the incident (ISO 8601; the regulatory clocks' start)."""
    started_at: str = ""
    """When the run for this incident started (ISO 8601)."""

    def secret(self, name: str) -> str:
        """The value of secret ``name``; a clear error names the variable to set when missing."""
        value = self.secrets.get(name)
        if not value:
            raise ConfigurationError(
                f"secret {name!r} is not set",
                f"set the environment variable TOCSIN_SECRET_{name.upper()}",
            )
        return value

    def fingerprint_of(self, value: str) -> str:
        """The keyed HMAC of ``value`` the audit trail would write (``fingerprint``)."""
        if self.fingerprint is not None:
            return self.fingerprint(value)
        from tocsin.audit import AuditKey

        return AuditKey.load(self.settings.audit_key_path).redact(value)

    def report_progress(self, done: int, total: int, what: str) -> None:
        """Tell people how far a long action has got (``progress``); nothing outside a run."""
        if self.progress is not None:
            self.progress(done, total, what)

    def steps_so_far(self) -> Sequence[StepSummary]:
        """The run's steps until now (``history``); none outside a run."""
        return self.history() if self.history is not None else ()


@dataclass(frozen=True)
class StepSummary:
    """One step of the run as an action may read it (``ActionContext.history``)."""

    step_id: str
    title: str
    phase: str
    kind: str
    """action, approval, manual, parallel."""
    action: str | None
    status: str
    """pending, running, succeeded, failed, skipped, done, approved..."""
    finished_at: str = ""
    touches: str = ""
    """What the call touched, in the action's words (the plan's sentence), when known."""
    completed_by: str = ""
    """Who decided or marked the step done, for a person's step."""


class Effect(StrEnum):
    """What an action's read-back found of a call that was interrupted (``Reconciled``)."""

    TOOK_EFFECT = "took_effect"
    DID_NOT = "did_not"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Reconciled:
    """The real state an action's ``reconcile`` read back for an interrupted call.

    ``TOOK_EFFECT`` with the outputs the call would have returned; ``DID_NOT`` (nothing
    changed: running the call again is safe); ``UNKNOWN`` (a person must check). ``found``
    says in a few words what was read, for the audit trail."""

    effect: Effect
    outputs: BaseModel | Mapping[str, Any] | None = None
    found: str = ""

    @classmethod
    def took_effect(cls, outputs: BaseModel | Mapping[str, Any], found: str = "") -> Reconciled:
        return cls(Effect.TOOK_EFFECT, outputs, found)

    @classmethod
    def did_not(cls, found: str = "") -> Reconciled:
        return cls(Effect.DID_NOT, None, found)

    @classmethod
    def unknown(cls, found: str = "") -> Reconciled:
        return cls(Effect.UNKNOWN, None, found)


Describe = Callable[..., str]
Preview = Callable[[Settings, SecretStore, dict[str, Any]], str]
"""Given the settings, the secrets and a call's checked parameters (as a dict): a few lines
showing what the call will do, for the plan and the approval gate (a mail campaign: its
recipient count, how long it will take, the first message in each language). May raise a
``TocsinError``: the plan and the gate then show its message."""


@dataclass(frozen=True)
class ActionDefinition:
    """Everything Tocsin knows about one action."""

    name: str
    description: str
    destructive: bool
    idempotent: bool
    function: Callable[..., Any]
    parameters: type[BaseModel]
    result: type[BaseModel] | None
    secrets: tuple[str, ...] = ()
    describe: Describe | None = None
    read_only_when: Callable[..., bool] | None = None
    sensitive: frozenset[str] = frozenset()
    communicates: str | None = None
    needs_approval: bool = False
    """A call cannot be undone and must wait for a person's decision: validation warns
    when a step calls it without an approval gate covering the step."""
    preview: Preview | None = None
    annex: str | None = None
    """The name of an output holding a Markdown document (a draft notification to an
    authority) that the post-incident report adds as an annex."""
    reconcile: Callable[..., Reconciled] | None = None
    """Reads back whether an interrupted call took effect (``Reconciled``); called like the
    action itself, with the context and the same parameters."""

    @property
    def module(self) -> str:
        return self.function.__module__

    @property
    def output_names(self) -> frozenset[str] | None:
        """Names of the outputs the action returns, or None when they are not declared."""
        if self.result is None:
            return None
        return frozenset(self.result.model_fields)

    def secret_parameters(self) -> list[str]:
        """Names of the parameters whose value is the name of a secret."""
        return [
            name for name, info in self.parameters.model_fields.items() if _is_secret_name(info)
        ]

    def url_parameters(self) -> list[str]:
        """Names of the parameters that are URLs, rendered with their values percent-encoded."""
        return [
            name
            for name, info in self.parameters.model_fields.items()
            if _URL_TEMPLATE in info.metadata
            or any(
                _URL_TEMPLATE in getattr(member, "__metadata__", ())
                for member in typing.get_args(info.annotation)
            )
        ]

    def render_parameters(
        self, with_: Mapping[str, Any], context: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Render a step's ``with:`` for this action: URL parameters encode their values."""
        for name, info in self.parameters.model_fields.items():
            if WRITTEN_AS_IS in info.metadata and contains_template(with_.get(name)):
                raise TemplateError(
                    f"`{name}` of {self.name} is templated ({with_[name]!r}), but it decides "
                    "where the call goes or which secret it sends, so an input or a step's "
                    "output must not choose it",
                    f"write the {name} itself in the runbook",
                )
        urls = self.url_parameters()
        escapes = self.escaped_parameters()
        rendered: dict[str, Any] = {}
        for name, value in with_.items():
            if name in urls and isinstance(value, str):
                rendered[name] = render_url_template(value, context)
            elif name in escapes and isinstance(value, str):
                try:
                    rendered[name] = render_string(value, context, escape=escapes[name])
                except TemplateError as exc:
                    raise TemplateError(f"`{name}`: {exc.message}", exc.hint) from None
            else:
                rendered[name] = render_value(value, context)
        return rendered

    def escaped_parameters(self) -> dict[str, Callable[[str], str]]:
        """Text parameters whose templated values are escaped for their markup."""
        found: dict[str, Callable[[str], str]] = {}
        for name, info in self.parameters.model_fields.items():
            for meta in info.metadata:
                if isinstance(meta, EscapedValues):
                    found[name] = meta.escape
        return found

    def secrets_needed(self, parameters: Mapping[str, Any]) -> list[str]:
        """Every secret a call with these parameters reads."""
        named = [parameters[name] for name in self.secret_parameters() if parameters.get(name)]
        return sorted({*self.secrets, *(str(value) for value in named)})

    def check_parameters(self, parameters: Mapping[str, Any]) -> BaseModel:
        """Validate ``with:`` values; raise ``ActionError`` listing every wrong parameter."""
        try:
            return self.parameters.model_validate(dict(parameters))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or 'with'}: {error['msg']}"
                for error in exc.errors()
            )
            raise ActionError(
                self.name,
                f"wrong parameters: {problems}",
                f"see `tocsin actions {self.name}` for the parameters it takes",
            ) from None

    def preview_call(
        self, settings: Settings, secrets: SecretStore, parameters: BaseModel
    ) -> str | None:
        """The action's preview of a call (``preview``), or its error's message; None when
        the action has no preview."""
        if self.preview is None:
            return None
        try:
            return self.preview(settings, secrets, dict(_public_values(parameters)))
        except TocsinError as exc:
            return f"cannot preview: {exc.message}" + (f" ({exc.hint})" if exc.hint else "")

    def describe_call(self, parameters: BaseModel) -> str:
        """A sentence saying what a call would touch, for the plan."""
        values = dict(_public_values(parameters))
        if self.describe is None:
            return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in values.items())})"
        return str(_call_with_declared(self.describe, values))

    def changes_anything(self, parameters: BaseModel) -> bool:
        """Whether this call is destructive (a destructive action may have read-only calls, like GET)."""
        if not self.destructive:
            return False
        if self.read_only_when is None:
            return True
        return not _call_with_declared(self.read_only_when, dict(_public_values(parameters)))

    def reconcile_call(
        self, context: ActionContext, parameters: Mapping[str, Any]
    ) -> tuple[Effect, dict[str, Any], str]:
        """Ask the action's ``reconcile`` whether an interrupted call took effect: the effect,
        the outputs (checked against the declared ones when it took effect) and what was
        read. Raises ``ActionError`` when the action has none or its answer is malformed."""
        if self.reconcile is None:
            raise ActionError(self.name, "has no way to read back whether a call took effect")
        checked = self.check_parameters(parameters)
        answer = self.reconcile(context, **dict(_public_values(checked)))
        if not isinstance(answer, Reconciled):
            raise ActionError(
                self.name, f"its reconcile returned {type(answer).__name__}, expected Reconciled"
            )
        if answer.effect is not Effect.TOOK_EFFECT:
            return answer.effect, {}, answer.found
        outputs = answer.outputs
        if isinstance(outputs, BaseModel):
            data = outputs.model_dump(mode="json")
        else:
            data = dict(outputs or {})
        if self.result is not None:
            try:
                data = self.result.model_validate(data).model_dump(mode="json")
            except ValidationError as exc:
                raise ActionError(
                    self.name,
                    f"its reconcile gave outputs that do not fit: {exc.errors()[0]['msg']}",
                ) from None
        return answer.effect, data, answer.found

    def invoke(self, context: ActionContext, parameters: Mapping[str, Any]) -> dict[str, Any]:
        """Check the parameters, call the action and return its outputs as plain data."""
        checked = self.check_parameters(parameters)
        outcome = self.function(context, **dict(_public_values(checked)))
        if outcome is None:
            return {}
        if isinstance(outcome, BaseModel):
            return outcome.model_dump(mode="json")
        if isinstance(outcome, dict):
            return outcome
        raise ActionError(self.name, f"returned {type(outcome).__name__}, expected outputs")


def _call_with_declared(function: Callable[..., Any], values: dict[str, Any]) -> Any:
    """Call ``function`` with the values it declares (all of them if it takes ``**kwargs``)."""
    accepted = inspect.signature(function).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        values = {k: v for k, v in values.items() if k in accepted}
    return function(**values)


def _is_secret_name(info: FieldInfo) -> bool:
    """True for ``SecretName`` and ``SecretName | None`` fields."""
    candidates: list[Any] = [info]
    for member in typing.get_args(info.annotation):
        candidates.extend(getattr(member, "__metadata__", ()))
    return any(
        isinstance(item, FieldInfo)
        and isinstance(item.json_schema_extra, dict)
        and bool(item.json_schema_extra.get(_SECRET_MARKER))
        for item in candidates
    )


def _public_values(model: BaseModel) -> Iterator[tuple[str, Any]]:
    for name in type(model).model_fields:
        yield name, getattr(model, name)


F = TypeVar("F", bound=Callable[..., Any])


def action(
    name: str,
    *,
    destructive: bool,
    idempotent: bool = False,
    description: str | None = None,
    secrets: Iterable[str] = (),
    describe: Describe | None = None,
    check: Callable[[Any], None] | None = None,
    read_only_when: Callable[..., bool] | None = None,
    sensitive: Iterable[str] = (),
    communicates: str | None = None,
    needs_approval: bool = False,
    preview: Preview | None = None,
    annex: str | None = None,
    reconcile: Callable[..., Reconciled] | None = None,
) -> Callable[[F], F]:
    """Mark a function as the action ``name``; see the module docstring.

    ``sensitive`` names the parameters and outputs whose values are secrets (a temporary
    password, a token): the audit trail records their keyed HMAC, never the value.
    ``communicates`` names the channel (slack, email, sms, ticket...) when each call sends
    a message to people; the audit trail counts them (an output ``sent`` gives the count
    of a call that sends several).
    ``needs_approval`` marks an action whose call cannot be undone (a device wipe): a
    runbook step calling it should be covered by an approval gate that does not let it
    run on timeout, and ``tocsin validate`` warns where one is not.
    ``preview`` shows what a call will do in more than a sentence (``Preview``): the plan
    prints it under the step and an approval gate guarding the step shows it.
    ``annex`` names an output that the report adds as an annex (a Markdown document).
    ``reconcile`` reads back the real state when a call was interrupted by a crash (a
    device's isolation, a certificate's status): it takes the same context and parameters
    and returns a ``Reconciled``; on resume Tocsin settles the step with it where it can.

    ``check`` receives the validated parameters and raises ``ValueError`` when they do
    not fit together; it runs wherever parameters are checked, validation included.
    ``read_only_when`` receives the parameters and tells when a call of a destructive
    action changes nothing (an HTTP GET), so the plan does not flag it.
    """

    def decorate(function: F) -> F:
        parameters, result = _models_from_signature(name, function, check)
        doc = inspect.getdoc(function) or ""
        definition = ActionDefinition(
            name=name,
            description=description or doc.split("\n\n")[0].replace("\n", " "),
            destructive=destructive,
            idempotent=idempotent,
            function=function,
            parameters=parameters,
            result=result,
            secrets=tuple(secrets),
            describe=describe,
            read_only_when=read_only_when,
            sensitive=frozenset(sensitive),
            communicates=communicates,
            needs_approval=needs_approval,
            preview=preview,
            annex=annex,
            reconcile=reconcile,
        )
        if annex is not None and (result is None or annex not in result.model_fields):
            raise TypeError(f"action {name}: annex names no output: {annex}")
        unknown = (
            definition.sensitive
            - set(parameters.model_fields)
            - set(result.model_fields if result is not None else ())
        )
        if unknown:
            raise TypeError(
                f"action {name}: sensitive names no parameter or output: {', '.join(sorted(unknown))}"
            )
        setattr(function, _MARKER, definition)
        return function

    return decorate


def _models_from_signature(
    name: str, function: Callable[..., Any], check: Callable[[Any], None] | None = None
) -> tuple[type[BaseModel], type[BaseModel] | None]:
    hints = typing.get_type_hints(function, include_extras=True)
    signature = inspect.signature(function)
    params = list(signature.parameters.values())
    if not params or params[0].name != "context":
        raise TypeError(f"action {name}: the first parameter must be `context: ActionContext`")
    fields: dict[str, Any] = {}
    for param in params[1:]:
        if param.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise TypeError(f"action {name}: parameter {param.name!r} must be keyword-only")
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (hints[param.name], default)
    model_name = "".join(part.title() for part in name.replace("_", ".").split(".")) + "Parameters"
    validators: dict[str, Any] = {}
    if check is not None:

        def _check_together(model: BaseModel) -> BaseModel:
            check(model)
            return model

        validators["check_together"] = model_validator(mode="after")(_check_together)
    parameters = create_model(
        model_name, __config__=ConfigDict(extra="forbid"), __validators__=validators, **fields
    )
    returned = hints.get("return")
    result = returned if isinstance(returned, type) and issubclass(returned, BaseModel) else None
    return parameters, result
