"""A plain HTTP call (``http.request``), for services without an integration of their own.

- ``actions``: ``http.request``, its URL rules and errors;
- ``settings``: ``HttpSettings``, the ``http`` slot (``TOCSIN_HTTP__SERVICES__<NAME>``);
- ``checks``: ``tocsin integrations check http`` (each named service answers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from tocsin.integration import Integration
from tocsin.integrations.http.settings import HttpSettings

if TYPE_CHECKING:
    from tocsin.integration import CheckResult
    from tocsin.settings import SecretStore, Settings


def _configured(settings: Settings, secrets: SecretStore) -> bool:
    from tocsin.integrations.http.checks import is_configured

    return is_configured(settings, secrets)


def _check(settings: Settings, secrets: SecretStore) -> Sequence[CheckResult]:
    from tocsin.integrations.http.checks import check

    return check(settings, secrets)


integration: Integration[HttpSettings] = Integration(
    name="http",
    description="Plain HTTP calls (http.request) to named services",
    settings=HttpSettings,
    action_modules=("tocsin.integrations.http.actions",),
    configured=_configured,
    check=_check,
)
