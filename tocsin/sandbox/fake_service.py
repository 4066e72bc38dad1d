"""The base of every fake service: a real HTTP server on loopback, in a daemon thread.

A fake answers on ``127.0.0.1`` at an ephemeral port, records every request it
receives, and can be told to misbehave for the next few calls (answer with an
error status, or stall), or for a length of time (``outage``: 429 with Retry-After,
then 503, as a service being throttled and then down answers), so that tests see what
a real outage looks like::

    with FakePlatform(token="t0ken", offices=[...]) as platform:
        httpx.get(platform.url + "/api/v1/offices/OF-1", headers=...)
        assert platform.requests[-1].path == "/api/v1/offices/OF-1"

A subclass implements ``handle(request) -> Reply``; it runs in the server's
handler threads, so subclasses guard their state with ``self.lock``.

``start(tls=context)`` serves https instead (``tocsin.sandbox.tls.LoopbackCA`` makes the
context); the TLS handshake happens in the handler thread, so a client that never
finishes it holds up nobody else.
"""

from __future__ import annotations

import json
import logging
import ssl
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self, cast
from urllib.parse import parse_qs, urlsplit

_log = logging.getLogger("tocsin.sandbox")


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    """Header names in lower case."""
    body: bytes
    raw_query: str = ""
    """The query string as sent, undecoded (what a signature covers)."""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        """The body parsed as JSON; ``ValueError`` when it is not JSON."""
        return json.loads(self.body.decode("utf-8"))

    def bearer_token(self) -> str | None:
        """The token of an ``Authorization: Bearer ...`` header, if there is one."""
        value = self.header("authorization") or ""
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return token.strip() or None


@dataclass(frozen=True)
class Reply:
    """What a fake answers: a status, a JSON-serialisable body (or raw bytes) and headers."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        """The body as bytes and every header to send, Content-Type included."""
        headers = dict(self.headers)
        if isinstance(self.body, bytes):
            body, content_type = self.body, "application/octet-stream"
        else:
            body = b"" if self.body is None else json.dumps(self.body).encode("utf-8")
            content_type = "application/json; charset=utf-8"
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = content_type
        headers["Content-Length"] = str(len(body))
        return body, headers


@dataclass
class _Fault:
    remaining: int
    reply: Reply | None = None
    stall_seconds: float = 0.0


@dataclass
class _Outage:
    began: float
    until: float
    """``time.monotonic()`` at which the service answers again."""
    replies: tuple[Reply, ...]


class FakeService:
    """A local HTTP server speaking some real service's API; see the module docstring."""

    name = "fake service"

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._changed = threading.Condition(self.lock)
        self._requests: list[ReceivedRequest] = []
        self._faults: list[_Fault] = []
        self._outage: _Outage | None = None
        self.outage_replies = 0
        """How many requests an outage answered with an error instead of handling them."""
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------

    def start(self, tls: ssl.SSLContext | None = None) -> Self:
        """Listen on an ephemeral loopback port and serve in a daemon thread (https with ``tls``)."""
        if self._server is not None:
            raise RuntimeError(f"{self.name} is already running at {self.url}")
        self._stopping.clear()
        server = _Server(("127.0.0.1", 0), _Handler)
        server.service = self
        server.tls = tls
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}:{server.server_port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release stalled requests and close the socket; safe to call twice."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()  # also waits for the handler threads
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{self.name} is not running: call start() first")
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (``https://`` when served with TLS), without a trailing slash."""
        scheme = "https" if self._server is not None and self._server.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    # -- inspection ---------------------------------------------------------

    @property
    def requests(self) -> list[ReceivedRequest]:
        """A copy of every request received since the start or the last ``reset()``."""
        with self.lock:
            return list(self._requests)

    def wait_for(self, condition: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait until ``condition()`` (checked whenever a request arrives) holds, up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def reset(self) -> None:
        """Forget received requests and pending faults; subclasses also restore their data."""
        with self.lock:
            self._requests.clear()
            self._faults.clear()
            self._outage = None
            self.outage_replies = 0

    # -- misbehaviour -------------------------------------------------------

    def fail_next(
        self,
        count: int,
        status: int = 503,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next ``count`` requests with ``status`` instead of handling them."""
        reply = Reply(
            status,
            body if body is not None else {"error": HTTPStatus(status).phrase},
            headers or {},
        )
        with self.lock:
            self._faults.append(_Fault(count, reply=reply))

    def stall_next(self, count: int, seconds: float = 30.0) -> None:
        """Hold the next ``count`` requests for ``seconds`` (or until ``stop()``), then handle them."""
        with self.lock:
            self._faults.append(_Fault(count, stall_seconds=seconds))

    def outage(
        self,
        seconds: float,
        statuses: Sequence[int] = (429, 503),
        retry_after: int | None = 5,
    ) -> None:
        """For the next ``seconds``, answer every request without handling it, the time split
        evenly between ``statuses`` in order (429 then 503 by default: throttled, then
        down), each with ``Retry-After: retry_after`` when given."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        replies = tuple(
            Reply(status, {"error": HTTPStatus(status).phrase}, headers) for status in statuses
        )
        if not replies:
            raise ValueError("an outage answers with at least one status")
        with self.lock:
            began = time.monotonic()
            self._outage = _Outage(began, began + seconds, replies)

    @property
    def in_outage(self) -> bool:
        """Whether an ``outage`` is still answering errors."""
        with self.lock:
            return self._outage is not None and time.monotonic() < self._outage.until

    def _outage_reply(self) -> Reply | None:
        """The error an ongoing outage answers with (under ``self.lock``), else None."""
        outage = self._outage
        if outage is None:
            return None
        moment = time.monotonic()
        if moment >= outage.until:
            self._outage = None
            return None
        share = (outage.until - outage.began) / len(outage.replies)
        self.outage_replies += 1
        return outage.replies[min(len(outage.replies) - 1, int((moment - outage.began) / share))]

    # -- for subclasses -----------------------------------------------------

    def handle(self, request: ReceivedRequest) -> Reply:
        """Answer one request; runs in a handler thread."""
        raise NotImplementedError

    def _receive(self, request: ReceivedRequest) -> Reply | None:
        """Record the request, then answer it; None when the server is stopping."""
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()
            down = self._outage_reply()
            if down is not None:
                return down
            fault = self._faults[0] if self._faults else None
            if fault is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.pop(0)
        if fault is not None and fault.stall_seconds > 0:
            if self._stopping.wait(fault.stall_seconds):
                return None
        elif fault is not None and fault.reply is not None:
            return fault.reply
        return self.handle(request)


class _Server(ThreadingHTTPServer):
    service: FakeService
    tls: ssl.SSLContext | None = None
    # socketserver's default backlog of 5 drops the connections of a burst, and their
    # clients retry a second later: a real service answers them at once.
    request_queue_size = 128

    def get_request(self) -> tuple[Any, Any]:
        connection, address = super().get_request()
        if self.tls is None:
            return connection, address
        # The handshake is made by the handler thread on its first read, not here.
        wrapped = self.tls.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
        return wrapped, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ssl.SSLError | ConnectionError):
            # A client refusing the certificate (a test of exactly that) is not a fake's bug.
            _log.debug("TLS connection from %s failed: %s", client_address, error)
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so stop() never waits on an idle keep-alive client.
    protocol_version = "HTTP/1.0"
    server_version = "TocsinSandbox/1"

    def do_GET(self) -> None:
        self._answer()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def _answer(self) -> None:
        service = cast(_Server, self.server).service
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        request = ReceivedRequest(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=self.rfile.read(length) if length > 0 else b"",
            raw_query=split.query,
        )
        try:
            reply = service._receive(request)
        except Exception:  # a bug in a fake must show as a 500, not a hung client
            _log.exception("%s failed on %s %s", service.name, request.method, request.path)
            reply = Reply(500, {"error": "the fake service failed; see the test log"})
        if reply is None:
            return
        body, headers = reply.encoded()
        try:
            self.send_response(reply.status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test); nothing left to answer

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s: " + format, self.address_string(), *args)
