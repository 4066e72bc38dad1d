"""``tocsin integrations``: which integrations are installed and set up, and whether their
credentials and permissions work, verified without changing anything.

Each integration says whether it is configured (``Integration.configured``) and checks
itself (``Integration.check``, a list of ``CheckResult``); this module runs those hooks,
turns whatever they raise into a problem line (a check never ends in a traceback) and
says what the whole comes to. The CLI prints it (``tocsin.cli.integrations``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from tocsin.errors import TocsinError
from tocsin.integration import CheckResult, Integration, installed_integrations

if TYPE_CHECKING:
    from tocsin.settings import SecretStore, Settings


class CheckState(StrEnum):
    """What checking one integration came to."""

    OK = "ok"
    PROBLEM = "problem"
    NOT_CONFIGURED = "not configured"
    NOTHING_TO_CHECK = "nothing to check"
    NOT_CHECKED = "not checked"
    """Configured, and only listed (``tocsin integrations list``)."""


@dataclass(frozen=True)
class SecretState:
    """A declared secret and whether it is set (its value is never read out)."""

    name: str
    variable: str
    description: str
    set: bool


@dataclass(frozen=True)
class IntegrationState:
    """One installed integration: whether it is configured, its secrets, and its checks."""

    name: str
    description: str
    configured: bool
    secrets: Sequence[SecretState]
    results: Sequence[CheckResult] = ()
    state: CheckState = CheckState.NOT_CONFIGURED
    has_check: bool = False
    needs_setup: bool = True
    """False for an integration with neither settings nor secrets (``core``)."""

    def as_data(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "configured": self.configured,
            "state": self.state.value,
            "ok": self.state is not CheckState.PROBLEM,
            "secrets": [
                {"name": s.name, "variable": s.variable, "set": s.set} for s in self.secrets
            ],
            "checks": [
                {"check": r.check, "ok": r.ok, "message": r.message, "hint": r.hint}
                for r in self.results
            ],
        }


@dataclass(frozen=True)
class CheckReport:
    """Every integration looked at; ``ok`` when no configured one has a problem."""

    integrations: Sequence[IntegrationState] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(i.state is not CheckState.PROBLEM for i in self.integrations)

    def as_data(self) -> dict[str, Any]:
        return {"ok": self.ok, "integrations": [i.as_data() for i in self.integrations]}


def secret_states(integration: Integration[Any], secrets: SecretStore) -> tuple[SecretState, ...]:
    """The integration's declared secrets and whether each is set."""
    return tuple(
        SecretState(d.name, d.variable, d.description, bool(secrets.get(d.name)))
        for d in integration.secrets
    )


def describe(
    integration: Integration[Any], settings: Settings, secrets: SecretStore
) -> IntegrationState:
    """What ``tocsin integrations`` lists of one integration: nothing is called."""
    configured = _configured(integration, settings, secrets)
    return IntegrationState(
        name=integration.name,
        description=integration.description,
        configured=configured,
        secrets=secret_states(integration, secrets),
        has_check=integration.check is not None,
        needs_setup=bool(integration.settings or integration.secrets or integration.configured),
        state=CheckState.NOT_CHECKED if configured else CheckState.NOT_CONFIGURED,
    )


def check_integration(
    integration: Integration[Any],
    settings: Settings,
    secrets: SecretStore,
    *,
    asked_for: bool = False,
    debug: bool = False,
) -> IntegrationState:
    """Run the integration's check; one that is not configured is reported so, and checked
    anyway (a problem, since it cannot work) when ``asked_for`` by name. ``debug``: a bug in
    the check raises instead of becoming a problem line."""
    base = describe(integration, settings, secrets)
    if not base.configured and not asked_for:
        return base
    if integration.check is None:
        return replace(base, state=CheckState.NOTHING_TO_CHECK)
    try:
        results = tuple(integration.check(settings, secrets))
    except TocsinError as exc:
        results = (CheckResult.problem("check", exc),)
    except Exception as exc:  # a plug-in's bug must not hide the other integrations' checks
        if debug:
            raise
        results = (
            CheckResult(
                "check",
                False,
                f"the check itself failed: {type(exc).__name__}: {exc}",
                f"a bug of the {integration.name} integration; rerun with --debug for the traceback",
            ),
        )
    problem = not base.configured or any(not r.ok for r in results)
    if not base.configured and all(r.ok for r in results):
        results = (
            CheckResult(
                "configured",
                False,
                "not configured",
                f"set the {integration.name} settings (docs/integrations.md)",
            ),
            *results,
        )
    return replace(base, results=results, state=CheckState.PROBLEM if problem else CheckState.OK)


def check_all(
    settings: Settings,
    secrets: SecretStore,
    integrations: Sequence[Integration[Any]] | None = None,
    *,
    asked_for: bool = False,
    debug: bool = False,
) -> CheckReport:
    """Check ``integrations`` (default: every installed one); ``asked_for``: they were named,
    so one not configured is a problem."""
    chosen = installed_integrations() if integrations is None else integrations
    return CheckReport(
        tuple(
            check_integration(i, settings, secrets, asked_for=asked_for, debug=debug)
            for i in chosen
        )
    )


def list_all(settings: Settings, secrets: SecretStore) -> CheckReport:
    """Every installed integration, configured or not, with its secrets; nothing is called."""
    return CheckReport(tuple(describe(i, settings, secrets) for i in installed_integrations()))


def integrations_named(names: Sequence[str]) -> tuple[Integration[Any], ...]:
    """The installed integrations ``names`` (all when none is); ``InputError`` for a name
    none has, listing those installed."""
    from tocsin.errors import InputError

    installed = installed_integrations()
    if not names:
        return installed
    by_name = {i.name: i for i in installed}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise InputError(
            f"no installed integration is named {', '.join(repr(n) for n in unknown)}",
            f"installed: {', '.join(sorted(by_name))}",
        )
    return tuple(by_name[n] for n in names)


def _configured(integration: Integration[Any], settings: Settings, secrets: SecretStore) -> bool:
    try:
        return integration.is_configured(settings, secrets)
    except TocsinError:
        return True  # it has settings, wrong ones: its check says what
