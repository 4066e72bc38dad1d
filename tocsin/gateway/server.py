"""Serving the gateway with uvicorn, with its limits; in a background thread for the demo,
tests and benchmarks."""

from __future__ import annotations

import threading
import time
from typing import Any

from tocsin.errors import ConfigurationError
from tocsin.settings import GatewaySettings

MAX_HEADER_BYTES = 16 * 1024
"""Request line and headers, at most (uvicorn's h11 parser refuses more with 400)."""


def server_config(
    app: Any, settings: GatewaySettings, host: str, port: int, *, own_process: bool = True
) -> Any:
    """uvicorn's configuration for the gateway, with its limits: the h11 parser (which,
    unlike httptools, bounds the request line and headers: ``MAX_HEADER_BYTES``), at most
    ``gateway.max_connections`` connections and requests at once (503 past that), idle
    connections closed after 5 s. Bodies are bounded by the application itself.

    uvicorn configures Python's logging only when the gateway has its process to itself:
    its ``dictConfig`` shuts down every existing handler, and in a shared process (a
    thread beside a Prefect run) that deadlocks on a handler another thread holds."""
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http="h11",
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=5,
        log_level="warning",
        log_config=LOGGING_CONFIG if own_process else None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
    )


class GatewayServer:
    """The gateway served by uvicorn in a background thread (the demo, tests, benchmarks)::

    with GatewayServer(gateway.app) as server:
        httpx.post(server.url + "/slack/interactions", ...)
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        settings: GatewaySettings | None = None,
    ) -> None:
        import socket

        import uvicorn

        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((host, port))
            self.host, self.port = self.socket.getsockname()[:2]
            config = server_config(
                app, settings or GatewaySettings(), self.host, self.port, own_process=False
            )
            self.server = uvicorn.Server(config)
        except BaseException:
            self.socket.close()
            raise
        self.thread = threading.Thread(
            target=self.server.run,
            kwargs={"sockets": [self.socket]},
            name=f"gateway:{self.port}",
            daemon=True,
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> GatewayServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise ConfigurationError(f"the gateway did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["MAX_HEADER_BYTES", "GatewayServer", "server_config"]
