"""Shared test set-up: every test runs with its own empty Tocsin config and data folders."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture(scope="session")
def prefect_server(isolated_tocsin_home: None) -> Iterator[str]:
    """One local Prefect server for the whole test session, started the way `tocsin run` does."""
    from tocsin.embedded import stop_server, using_prefect
    from tocsin.settings import load_settings

    os.environ["TOCSIN_ACTION_MODULES"] = '["tests.engine_actions"]'
    # ...and subprocesses (tocsin run, approve) must be able to import that module too.
    root = str(Path(__file__).resolve().parent.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "WARNING"
    settings = load_settings()
    # The test process's Prefect clients use it for the whole session (the gateway's threads,
    # flows run in threads); subprocesses find it in the data folder as `tocsin` commands do.
    with using_prefect(settings) as url:
        yield url
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=10)  # send the last run logs before the server goes away
    stop_server(settings)
