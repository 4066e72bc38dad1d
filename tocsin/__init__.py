"""Tocsin: incident-response runbooks for broker offices, run as Prefect flows.

The public surface is these names; import them from here rather than from the modules
(which may move). ``tests/test_public_api.py`` guards the list.

- Writing an action: ``action``, ``ActionContext``, ``SecretName``, ``UrlTemplate``,
  ``EscapedValues``, ``WRITTEN_AS_IS``.
- The error tree: ``TocsinError`` and its subclasses (see ``tocsin.errors``: a decision
  refused, a step failed, a run stopped...), ``Problem`` and ``Location`` for runbook problems.
- Writing an integration: ``Integration``, ``DeclaredSecret`` (``tocsin.integration`` has
  the hooks' argument and result types).

Importing ``tocsin`` stays cheap (no Prefect, no pydantic) so that the CLI starts fast:
each name is imported from its module on first use (PEP 562).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_HOMES: dict[str, str] = {
    "action": "tocsin.actions",
    "ActionContext": "tocsin.actions",
    "SecretName": "tocsin.actions",
    "UrlTemplate": "tocsin.actions",
    "EscapedValues": "tocsin.actions",
    "WRITTEN_AS_IS": "tocsin.actions",
    "TocsinError": "tocsin.errors",
    "RunbookError": "tocsin.errors",
    "InputError": "tocsin.errors",
    "TemplateError": "tocsin.errors",
    "ActionError": "tocsin.errors",
    "IntegrationError": "tocsin.errors",
    "UnknownActionError": "tocsin.errors",
    "ConfigurationError": "tocsin.errors",
    "DecisionRefused": "tocsin.errors",
    "StepFailed": "tocsin.errors",
    "RunStopped": "tocsin.errors",
    "Problem": "tocsin.errors",
    "Location": "tocsin.errors",
    "Integration": "tocsin.integration",
    "DeclaredSecret": "tocsin.integration",
}

__all__ = ["__version__", *_HOMES]

if TYPE_CHECKING:
    from tocsin.actions import (
        WRITTEN_AS_IS as WRITTEN_AS_IS,
    )
    from tocsin.actions import (
        ActionContext as ActionContext,
    )
    from tocsin.actions import (
        EscapedValues as EscapedValues,
    )
    from tocsin.actions import (
        SecretName as SecretName,
    )
    from tocsin.actions import (
        UrlTemplate as UrlTemplate,
    )
    from tocsin.actions import (
        action as action,
    )
    from tocsin.errors import (
        ActionError as ActionError,
    )
    from tocsin.errors import (
        ConfigurationError as ConfigurationError,
    )
    from tocsin.errors import (
        DecisionRefused as DecisionRefused,
    )
    from tocsin.errors import (
        InputError as InputError,
    )
    from tocsin.errors import (
        IntegrationError as IntegrationError,
    )
    from tocsin.errors import (
        Location as Location,
    )
    from tocsin.errors import (
        Problem as Problem,
    )
    from tocsin.errors import (
        RunbookError as RunbookError,
    )
    from tocsin.errors import (
        RunStopped as RunStopped,
    )
    from tocsin.errors import (
        StepFailed as StepFailed,
    )
    from tocsin.errors import (
        TemplateError as TemplateError,
    )
    from tocsin.errors import (
        TocsinError as TocsinError,
    )
    from tocsin.errors import (
        UnknownActionError as UnknownActionError,
    )
    from tocsin.integration import (
        DeclaredSecret as DeclaredSecret,
    )
    from tocsin.integration import (
        Integration as Integration,
    )


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'tocsin' has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value  # the next look-up is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
