"""Tocsin's integrations: one module per service, each a set of ``@action`` functions.

Installed as ``tocsin.integrations`` (see the README's architecture notes). An
integration never imports ``tocsin.flows``.
"""
