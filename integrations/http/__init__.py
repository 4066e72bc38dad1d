"""A plain HTTP call (``http.request``), for services without an integration of their own.

- ``actions``: ``http.request``, its URL rules and errors;
- ``settings``: ``HttpSettings``, the ``http`` slot (``TOCSIN_HTTP__SERVICES__<NAME>``).
"""

from __future__ import annotations

from tocsin.integration import Integration
from tocsin.integrations.http.settings import HttpSettings

integration: Integration[HttpSettings] = Integration(
    name="http",
    description="Plain HTTP calls (http.request) to named services",
    settings=HttpSettings,
    action_modules=("tocsin.integrations.http.actions",),
)
