"""Tocsin's built-in integrations: one package per service, each the whole of it.

A package holds the service's actions, its settings model (a slot of the one settings
object), the secrets it reads, its client, its fake server for the sandbox and the
tests and, where it has them, its announcer and approver directory; its ``__init__``
exposes the ``Integration`` object (``tocsin.integration``) that ``pyproject.toml``
declares under the ``tocsin.integrations`` entry points, as a third-party package would.

Installed as ``tocsin.integrations`` (see the README's architecture notes). An
integration never imports ``tocsin.flows``.
"""
