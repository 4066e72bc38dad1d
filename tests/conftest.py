"""Shared test set-up: every test runs with its own empty Tocsin config and data folders."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def isolated_tocsin_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep the user's own ~/.config/tocsin and TOCSIN_* settings out of the tests."""
    home = tmp_path_factory.mktemp("tocsin-home")
    saved = dict(os.environ)
    for key in list(os.environ):
        if key.startswith("TOCSIN_"):
            del os.environ[key]
    os.environ["XDG_CONFIG_HOME"] = str(home / "config")
    os.environ["XDG_DATA_HOME"] = str(home / "data")
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    yield
    os.environ.clear()
    os.environ.update(saved)
