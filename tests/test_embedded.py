"""Tocsin's Prefect server: found or started, and passed to Prefect, never left in ``os.environ``."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from tests.fake_prefect import FakePrefect
from tocsin.embedded import ensure_server, prefect_home, using_prefect
from tocsin.settings import load_settings


@pytest.fixture
def configured_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePrefect]:
    """A Prefect server named in the settings (TOCSIN_PREFECT_API_URL), answering its health check."""
    with FakePrefect() as fake:
        monkeypatch.setenv("TOCSIN_PREFECT_API_URL", fake.api_url)
        yield fake


def api_url_seen(in_a_new_thread: bool = False) -> str | None:
    """The API URL a Prefect client of this process would use, here or in a thread of its own."""
    from prefect.settings import PREFECT_API_URL

    if not in_a_new_thread:
        return PREFECT_API_URL.value()
    seen: list[str | None] = []
    thread = threading.Thread(target=lambda: seen.append(PREFECT_API_URL.value()))
    thread.start()
    thread.join(timeout=10)
    return seen[0]


def test_prefect_uses_the_server_within_the_block_and_the_environment_never_changes(
    configured_server: FakePrefect,
) -> None:
    environment = dict(os.environ)
    before = api_url_seen()
    with using_prefect(load_settings()) as url:
        assert url == configured_server.api_url
        assert dict(os.environ) == environment
        assert api_url_seen() == url
        # ...also in threads started without a copy of this context (the gateway's).
        assert api_url_seen(in_a_new_thread=True) == url
    assert api_url_seen() == before
    assert api_url_seen(in_a_new_thread=True) == before
    assert dict(os.environ) == environment


def test_deciding_from_the_cli_leaves_the_environment_as_it_found_it(
    configured_server: FakePrefect, capsys: pytest.CaptureFixture[str]
) -> None:
    from tocsin.cli import main

    environment = dict(os.environ)
    before = api_url_seen()
    assert main(["approve", "ENV-1", "gate", "--as", "U0LEAD1"]) == 1
    assert "no run of ENV-1 has a step 'gate'" in capsys.readouterr().err
    assert [r.path for r in configured_server.requests] == ["/api/health"]  # it was asked
    assert dict(os.environ) == environment
    assert api_url_seen() == before


def test_finding_tocsins_own_server_changes_no_environment(prefect_server: str) -> None:
    from prefect.settings import PREFECT_HOME

    settings = load_settings()
    environment = dict(os.environ)
    assert ensure_server(settings) == prefect_server  # found running, not started again
    with using_prefect(settings) as url:
        assert url == prefect_server
        assert PREFECT_HOME.value() == prefect_home(settings)
    assert dict(os.environ) == environment
