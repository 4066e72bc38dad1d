"""Tocsin's own Prefect server: local, on SQLite under Tocsin's data folder, started once and reused.

Nothing touches the user's global Prefect profile: ``PREFECT_HOME`` points into
``data_dir/prefect``. The server runs in the background after the command that
started it exits, so that the next ``tocsin`` command (``approve`` from another
terminal, say) finds it at once; ``tocsin server stop`` ends it. With the
``prefect_api_url`` setting, Tocsin uses that server instead and starts nothing.

The settings are passed, never left behind in ``os.environ``: processes Tocsin starts
(the server) get them as an explicit environment (``prefect_environment``), and this
process's Prefect clients get them for the length of a ``with using_prefect(settings):``
block, through Prefect's own ``temporary_settings``.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tocsin.errors import ConfigurationError
from tocsin.private_paths import private_file, private_folder
from tocsin.settings import Settings

START_TIMEOUT_SECONDS = 90.0
# The server outlives the command that started it; holding its Popen keeps Python from
# warning that a child process is still running when the object is collected.
_started: list[subprocess.Popen[bytes]] = []


def prefect_home(settings: Settings) -> Path:
    return settings.data_dir / "prefect"


def _state_file(settings: Settings) -> Path:
    return prefect_home(settings) / "server.json"


def prefect_environment(settings: Settings, api_url: str) -> dict[str, str]:
    """The variables that point Prefect at Tocsin's server and keep it to itself."""
    home = prefect_home(settings)
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_UI_API_URL": api_url,
        # SQLite serialises writers: under a burst (100 incidents started at once) the server
        # answers 503 when a write waits longer than its busy timeout, and the client gives up
        # after its retries. Wait longer and retry more rather than lose a run (measured by
        # bench/concurrent_incidents.py: 21 of 100 runs lost with Prefect's defaults, none with these).
        "PREFECT_API_DATABASE_TIMEOUT": "30",
        "PREFECT_CLIENT_MAX_RETRIES": "10",
    }


def is_healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def running_server(settings: Settings) -> tuple[str, int] | None:
    """The URL and process id of Tocsin's server when it is up."""
    state = _state_file(settings)
    if not state.exists():
        return None
    try:
        data = json.loads(state.read_text())
        url, pid = str(data["api_url"]), int(data["pid"])
    except (ValueError, KeyError, OSError):
        return None
    return (url, pid) if is_healthy(url) else None


def ensure_server(settings: Settings) -> str:
    """The URL of the Prefect server runs use: the configured one, else Tocsin's own, started
    if needed. This process's environment is left as it is (see ``using_prefect``)."""
    if settings.prefect_api_url:
        url = settings.prefect_api_url
        if not is_healthy(url):
            raise ConfigurationError(
                f"the Prefect server at {url} does not answer",
                "start it (prefect server start) or unset TOCSIN_PREFECT_API_URL to use Tocsin's own",
            )
        return url
    home = prefect_home(settings)
    private_file(home / "prefect.db")  # in a 0700 folder, mode 0600: it holds the run inputs
    with (home / "server.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two commands starting at once share one server
        found = running_server(settings)
        return found[0] if found else _start(settings)


@contextmanager
def using_prefect(settings: Settings) -> Iterator[str]:
    """Start or find the server (``ensure_server``); in the block, this process's Prefect
    clients use it. Yields its URL."""
    url = ensure_server(settings)
    with prefect_pointed_at(settings, url):
        yield url


@contextmanager
def prefect_pointed_at(settings: Settings, api_url: str) -> Iterator[None]:
    """In the block, this process's Prefect clients use the server at ``api_url``.

    In the thread that enters the block and in contexts copied from it (Prefect's own
    threads copy theirs), through ``temporary_settings``; and in threads started without a
    copy (the gateway's pools), through Prefect's process-wide default, put back at the
    end. Enter it once per command, not from several threads at a time.
    """
    variables = _client_variables(settings, api_url)
    _import_prefect(variables)
    import prefect.settings
    from prefect.context import SettingsContext, _temporary_global_settings_context

    updates: dict[Any, str] = {getattr(prefect.settings, name): v for name, v in variables.items()}
    with prefect.settings.temporary_settings(updates=updates):
        entered = SettingsContext.get()
        assert entered is not None  # temporary_settings has just entered one
        with _temporary_global_settings_context(entered):
            yield


def _client_variables(settings: Settings, api_url: str) -> dict[str, str]:
    if settings.prefect_api_url:
        # Someone else's server: only where it is; the rest is that installation's own.
        return {"PREFECT_API_URL": api_url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    return prefect_environment(settings, api_url)


_READ_AT_IMPORT = ("PREFECT_HOME", "PREFECT_SERVER_ANALYTICS_ENABLED")


def _import_prefect(variables: dict[str, str]) -> None:
    """Import Prefect with its home in Tocsin's data folder, and put the environment back.

    Prefect reads where its home is (and so which profiles file applies) from the
    environment only, once, when it is first imported: imported without it, it would
    create ~/.prefect and apply the user's own profile to Tocsin's runs. Everything else
    is given through ``temporary_settings``.
    """
    if "prefect" in sys.modules:
        return
    wanted = {name: variables[name] for name in _READ_AT_IMPORT if name in variables}
    if "PREFECT_HOME" in wanted:
        # Prefect makes its home without the parents, and only warns when it cannot.
        private_folder(Path(wanted["PREFECT_HOME"]))
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        import prefect.context  # noqa: F401  (builds Prefect's settings from the environment)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start(settings: Settings) -> str:
    home = prefect_home(settings)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    log_path = home / "server.log"
    env = {**os.environ, **prefect_environment(settings, url)}
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise ConfigurationError(
                f"the local Prefect server stopped while starting (exit {process.returncode}):\n{tail}",
                f"see {log_path}",
            )
        if is_healthy(url):
            _started.append(process)
            _state_file(settings).write_text(json.dumps({"api_url": url, "pid": process.pid}))
            return url
        time.sleep(0.25)
    process.terminate()
    raise ConfigurationError(
        f"the local Prefect server did not start within {START_TIMEOUT_SECONDS:.0f} s",
        f"see {log_path}",
    )


def stop_server(settings: Settings) -> bool:
    """Stop Tocsin's server; False when none was running."""
    found = running_server(settings)
    _state_file(settings).unlink(missing_ok=True)
    if found is None:
        return False
    try:
        os.killpg(found[1], signal.SIGTERM)
    except ProcessLookupError:
        return False
    for process in [p for p in _started if p.pid == found[1]]:
        process.wait(timeout=30)
        _started.remove(process)
    return True
