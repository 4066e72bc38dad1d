"""Prefect's distributed setup with Tocsin on it, started on one machine.

The README's "Scaling out" section gives the commands a provider copies to several
machines: Prefect API servers sharing one PostgreSQL database and exchanging events
through Redis (``prefect-redis``), one process of Prefect's background services, process
workers polling the ``tocsin`` work pool, and stateless ``tocsin gateway`` processes
behind one URL, all on Tocsin's journal in PostgreSQL. ``LocalScaleOut`` runs exactly those
commands as child processes of this one, for the tests, the benchmarks and for trying the
setup before spreading it over machines::

    with LocalScaleOut(folder, databases, environment=sandbox.environment()) as cluster:
        cluster.api_urls, cluster.gateway_urls   # where to send requests

Every process it starts, it stops.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx

from tocsin.errors import ConfigurationError

CHECKOUT = Path(__file__).resolve().parent.parent
"""The Tocsin checkout: ``prefect deploy`` reads its ``prefect.yaml``; workers run from it."""

WORK_POOL = "tocsin"
DEPLOYMENT = "run-runbook/tocsin"


@dataclass(frozen=True)
class ScaleOutDatabases:
    """Where the shared state lives: Prefect's database, Tocsin's journal, Redis."""

    prefect_url: str
    """``postgresql+asyncpg://…`` of the database the Prefect API servers share."""
    journal_url: str
    """``postgresql+psycopg://…`` of Tocsin's journal (runs, decisions, the audit trail)."""
    redis_url: str
    """``redis://…/N`` of Prefect's messaging (events, the causal ordering, leases)."""
    docket_url: str
    """``redis://…/M`` that coordinates Prefect's background services."""


TRIAL_CLAIM_KEY = "tocsin-trial-claim"
"""Marks a Redis database a trial setup has taken (with the trial's name, for two hours)."""


@contextmanager
def trial_databases(
    admin_url: str = "postgresql://root@127.0.0.1:5432/postgres",
    redis: str = "redis://127.0.0.1:6379",
    redis_candidates: range = range(2, 16),
) -> Iterator[ScaleOutDatabases]:
    """Two new PostgreSQL databases (Prefect's, the journal) on the server ``admin_url``
    reaches, and two empty Redis databases taken among ``redis_candidates``: a trial setup's
    shared state, dropped and emptied at the end (the tests and benchmarks use it). Two
    trials at once (a test and a benchmark) each get their own."""
    import psycopg
    import redis as redis_client

    suffix = secrets.token_hex(4)
    names = (f"tocsin_trial_prefect_{suffix}", f"tocsin_trial_journal_{suffix}")
    server = admin_url.split("@", 1)[-1].rsplit("/", 1)[0]
    try:
        admin = psycopg.connect(admin_url, autocommit=True)
    except psycopg.OperationalError as exc:
        raise ConfigurationError(
            f"cannot reach PostgreSQL at {server}: {exc}".strip(),
            "start it (python3 dev.py test starts the local one when it is not running)",
        ) from None
    taken: list[int] = []
    try:
        for number in redis_candidates:
            if len(taken) == 2:
                break
            client = redis_client.Redis.from_url(f"{redis}/{number}")
            try:
                # Ours only if nobody else's: claimed first, then found holding the claim alone.
                if client.set(TRIAL_CLAIM_KEY, suffix, nx=True, ex=7200):
                    if client.dbsize() == 1:
                        taken.append(number)
                    else:
                        client.delete(TRIAL_CLAIM_KEY)
            finally:
                client.close()
        if len(taken) < 2:
            raise ConfigurationError(
                f"no two empty Redis databases among {redis_candidates.start}-"
                f"{redis_candidates.stop - 1} at {redis} for a trial setup",
                "another trial may be running; or empty unused databases (redis-cli -n N flushdb)",
            )
        for name in names:
            admin.execute(f'CREATE DATABASE "{name}"')
        user = admin_url.split("://", 1)[1].split("@", 1)[0]
        yield ScaleOutDatabases(
            prefect_url=f"postgresql+asyncpg://{user}@{server}/{names[0]}",
            journal_url=f"postgresql+psycopg://{user}@{server}/{names[1]}",
            redis_url=f"{redis}/{taken[0]}",
            docket_url=f"{redis}/{taken[1]}",
        )
    finally:
        for name in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
        for number in taken:
            client = redis_client.Redis.from_url(f"{redis}/{number}")
            try:
                client.flushdb()
            finally:
                client.close()


def prefect_server_environment(databases: ScaleOutDatabases) -> dict[str, str]:
    """The variables every Prefect API server and services process of the setup needs."""
    return {
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": databases.prefect_url,
        # Several servers on one database: migrate once, before they start.
        "PREFECT_SERVER_DATABASE_MIGRATE_ON_START": "false",
        "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_REDIS_MESSAGING_URL": databases.redis_url,
        "PREFECT_SERVER_DOCKET_URL": databases.docket_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


@dataclass
class _Child:
    name: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]


@dataclass
class LocalScaleOut:
    """API servers, one services process, workers and gateways on this machine (see module)."""

    folder: Path
    databases: ScaleOutDatabases
    environment: Mapping[str, str] = field(default_factory=dict)
    """``TOCSIN_*`` settings and secrets of workers and gateways (the same for all)."""
    api_servers: int = 2
    workers: int = 2
    gateways: int = 2
    start_timeout: float = 180.0
    api_urls: list[str] = field(default_factory=list, init=False)
    gateway_urls: list[str] = field(default_factory=list, init=False)
    _children: list[_Child] = field(default_factory=list, init=False)

    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- what the README's commands do ----------------------------------------------

    def _start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        server_env = self._env(prefect_server_environment(self.databases))
        self._once("prefect-database-upgrade", ["server", "database", "upgrade", "-y"], server_env)
        for number in range(self.api_servers):
            port = _free_port()
            url = f"http://127.0.0.1:{port}/api"
            self._spawn(
                f"prefect-api-{number + 1}",
                [_tool("prefect"), "server", "start", "--no-services"]
                + ["--host", "127.0.0.1", "--port", str(port)],
                server_env,
            )
            self.api_urls.append(url)
            # One at a time: each registers Prefect's block types at start-up, and two doing
            # it at once on one database collide (a unique constraint; the second exits).
            self._wait(f"the Prefect API server at {url}", partial(_answers, f"{url}/ready"))
        self._spawn(
            "prefect-services", [_tool("prefect"), "server", "services", "start"], server_env
        )
        first = self._client_env(self.api_urls[0])
        self._once(
            "prefect-work-pool",
            ["work-pool", "create", WORK_POOL, "--type", "process", "--overwrite"],
            first,
        )
        self._once("prefect-deploy", ["--no-prompt", "deploy", "--name", "tocsin"], first)
        for number in range(self.workers):
            api = self.api_urls[number % len(self.api_urls)]
            self._spawn(
                f"worker-{number + 1}",
                [_tool("prefect"), "worker", "start", "--pool", WORK_POOL]
                + ["--name", f"{self.folder.name}-worker-{number + 1}"],
                self._client_env(api),
            )
        for number in range(self.gateways):
            api = self.api_urls[number % len(self.api_urls)]
            port = _free_port()
            self._spawn(
                f"gateway-{number + 1}",
                [_tool("tocsin"), "gateway", "--host", "127.0.0.1", "--port", str(port)],
                {**self._client_env(api), "TOCSIN_GATEWAY__DEPLOYMENT": DEPLOYMENT},
            )
            self.gateway_urls.append(f"http://127.0.0.1:{port}")
        for url in self.gateway_urls:
            self._wait(f"the gateway at {url}", partial(_answers, f"{url}/healthz"))
        self._wait(f"{self.workers} workers polling the {WORK_POOL} pool", self._workers_online)

    def _workers_online(self) -> bool:
        try:
            answer = httpx.post(
                f"{self.api_urls[0]}/work_pools/{WORK_POOL}/workers/filter", json={}, timeout=5
            )
        except httpx.HTTPError:
            return False
        online = [w for w in answer.json() if w.get("status") == "ONLINE"]
        return answer.status_code == 200 and len(online) >= self.workers

    # -- processes -------------------------------------------------------------------

    def _env(self, extra: Mapping[str, str]) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("PREFECT_", "TOCSIN_"))
        }
        env.update(self.environment)
        env.update(
            {
                "PREFECT_HOME": str(self.folder / "prefect-home"),
                "TOCSIN_JOURNAL_URL": self.databases.journal_url,
                "PWD": str(CHECKOUT),
            }
        )
        env.update(extra)
        return env

    def _client_env(self, api_url: str) -> dict[str, str]:
        return self._env(
            {
                "PREFECT_API_URL": api_url,
                "TOCSIN_PREFECT_API_URL": api_url,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            }
        )

    def _once(self, name: str, arguments: list[str], env: Mapping[str, str]) -> None:
        log = self.folder / f"{name}.log"
        with log.open("wb") as sink:
            done = subprocess.run(
                [_tool("prefect"), *arguments],
                cwd=CHECKOUT,
                env=dict(env),
                stdout=sink,
                stderr=subprocess.STDOUT,
                timeout=self.start_timeout,
                check=False,
            )
        if done.returncode != 0:
            raise ConfigurationError(
                f"`prefect {' '.join(arguments)}` failed (exit {done.returncode}): {_tail(log)}",
                f"its whole output is in {log}",
            )

    def _spawn(self, name: str, command: list[str], env: Mapping[str, str]) -> None:
        log = (self.folder / f"{name}.log").open("ab")
        process = subprocess.Popen(
            command,
            cwd=CHECKOUT,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # stopped with its children (a worker's flow runs)
        )
        self._children.append(_Child(name, process, log))

    def _wait(self, what: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not ready():
            for child in self._children:
                if child.process.poll() is not None:
                    raise ConfigurationError(
                        f"{child.name} stopped (exit {child.process.returncode}) while waiting "
                        f"for {what}: {_tail(self.folder / f'{child.name}.log')}",
                        f"its whole output is in {self.folder / f'{child.name}.log'}",
                    )
            if time.monotonic() > deadline:
                raise ConfigurationError(
                    f"{what} not ready after {self.start_timeout:.0f} s",
                    f"the logs of each process are in {self.folder}",
                )
            time.sleep(0.5)

    def stop(self, name: str) -> None:
        """Stop one of the processes (a fault test's outage), waiting for it to end."""
        for child in self._children:
            if child.name == name:
                _stop(child)
                return
        raise KeyError(name)

    def close(self) -> None:
        """Stop every process started, the last started first."""
        while self._children:
            _stop(self._children.pop())


def _stop(child: _Child) -> None:
    if child.process.poll() is None:
        try:
            os.killpg(child.process.pid, signal.SIGTERM)
            child.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait(timeout=10)
        except ProcessLookupError:
            pass
    # A worker's flow runs are in its process group: none outlives it.
    try:
        os.killpg(child.process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    child.log.close()


def _tool(name: str) -> str:
    """A command installed beside this Python (the virtual environment's ``prefect``)."""
    return str(Path(sys.executable).parent / name)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _tail(log: Path, lines: int = 8) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no output)"


__all__ = [
    "DEPLOYMENT",
    "WORK_POOL",
    "LocalScaleOut",
    "ScaleOutDatabases",
    "prefect_server_environment",
    "trial_databases",
]
