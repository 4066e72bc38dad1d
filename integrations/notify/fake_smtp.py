"""A real SMTP server on loopback (aiosmtpd) that requires STARTTLS and AUTH, and counts
every message it accepts, per recipient: the tests' and the sandbox's mail relay.

    with FakeSmtpServer(refused_domains={"bad.example"}) as server:
        sender = SmtpSender("127.0.0.1", server.port, username=server.username,
                            password=server.password, ca_bundle=server.ca_bundle)
        ...
        assert server.received_by("anne@example.be") == 1

Misbehaviour for fault tests: ``fail_next(n)`` answers ``451 4.3.0`` to the next ``n``
messages' final dot (nothing kept), ``stall_next(n, s)`` waits ``s`` seconds before
answering them, ``drop_connections()`` closes every open connection as a relay
restarting would. A recipient of a refused domain gets ``550 5.1.1`` at ``RCPT TO``, its
address echoed as real servers do.

It is a ``FakeService`` (``url``, ``port``, ``stop``, ``wait_for``) so that the sandbox
can hold it like the HTTP fakes; its URL is ``smtp://127.0.0.1:<port>``.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tocsin.sandbox.fake_service import FakeService
from tocsin.sandbox.tls import LoopbackCA

DEFAULT_USERNAME = "notices@broker-office.example"
DEFAULT_PASSWORD = "smtp-sandbox-password"


@dataclass(frozen=True)
class ReceivedMail:
    """One message the server accepted: its envelope and its bytes as received."""

    mail_from: str
    recipients: tuple[str, ...]
    data: bytes


class _Session(Session):
    """aiosmtpd's session without its own deprecated ``login_data``, which aiosmtpd itself
    sets on every login (a DeprecationWarning, an error where warnings are errors)."""

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class _Smtp(SMTP):
    def _create_session(self) -> Session:
        return _Session(self.loop)


class _Controller(Controller):
    """aiosmtpd's controller, listening on an ephemeral port and keeping each connection."""

    def __init__(self, fake: FakeSmtpServer, **kwargs: Any) -> None:
        # aiosmtpd looks its hooks up on the handler (and reads every attribute of it)
        super().__init__(_Handler(fake), hostname="127.0.0.1", port=0, **kwargs)
        self.fake = fake

    def factory(self) -> SMTP:
        server = _Smtp(self.handler, **self.SMTP_kwargs)
        with self.fake.lock:
            self.fake._connections.add(server)
        return server

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]  # bound to port 0: the real one
        super()._trigger_server()  # type: ignore[no-untyped-call]


class FakeSmtpServer(FakeService):
    """See the module docstring."""

    name = "fake SMTP server"

    def __init__(
        self,
        *,
        username: str = DEFAULT_USERNAME,
        password: str = DEFAULT_PASSWORD,
        refused_domains: Iterable[str] = (),
        mailbox: Path | None = None,
    ) -> None:
        super().__init__()
        self.mailbox = mailbox
        """A folder each accepted message is also written to (``0001.eml``...), to be read."""
        self.username = username
        self.password = password
        self.refused_domains = frozenset(domain.lower() for domain in refused_domains)
        self.ca_bundle: Path | None = None
        """The CA certificate clients must trust (the one given to ``start``, else its own)."""
        self._controller: _Controller | None = None
        self._own_ca: Path | None = None
        self._received: list[ReceivedMail] = []
        self._by_recipient: Counter[str] = Counter()
        self._arrivals: list[float] = []
        self._failing = 0
        self._failure = "451 4.3.0 Temporary failure, try again later"
        self._stalling = 0
        self._stall_seconds = 0.0
        self._connections: set[SMTP] = set()
        self._losing = 0
        self.refused_logins = 0

    # -- life cycle ---------------------------------------------------------------------------

    def start(self, tls: ssl.SSLContext | None = None, ca_bundle: Path | None = None) -> Self:
        """Listen on an ephemeral loopback port; STARTTLS with ``tls`` (its CA in
        ``ca_bundle``), else with a certificate of a CA of its own."""
        if self._controller is not None:
            raise RuntimeError(f"{self.name} is already running at {self.url}")
        if tls is None:
            self._own_ca = Path(tempfile.mkdtemp(prefix="tocsin-fake-smtp-"))
            ca = LoopbackCA.create(self._own_ca / "tls")
            tls, ca_bundle = ca.server_context(), ca.ca_bundle
        self.ca_bundle = ca_bundle
        controller = _Controller(
            self,
            server_hostname="smtp.sandbox.invalid",
            tls_context=tls,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            authenticator=_Handler(self).authenticate,
            timeout=60,
        )
        try:
            controller.start()
        except BaseException:
            self.stop()  # its own CA's folder too
            raise
        self._controller = controller
        return self

    def stop(self) -> None:
        """Stop serving and close every connection; safe to call twice."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()
        with self.lock:
            self._connections.clear()
        if self._own_ca is not None:
            shutil.rmtree(self._own_ca, ignore_errors=True)
            self._own_ca = None

    @property
    def port(self) -> int:
        if self._controller is None:
            raise RuntimeError(f"{self.name} is not running: call start() first")
        return int(self._controller.port)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    # -- inspection ---------------------------------------------------------------------------

    def received_by(self, address: str) -> int:
        """How many messages were accepted for ``address`` (case-insensitive)."""
        with self.lock:
            return self._by_recipient[address.lower()]

    def count(self) -> int:
        """How many messages were accepted."""
        with self.lock:
            return len(self._received)

    def messages(self) -> list[ReceivedMail]:
        """A copy of every message accepted, in order."""
        with self.lock:
            return list(self._received)

    def arrivals(self) -> list[float]:
        """When each message was accepted (``time.monotonic()``), in order."""
        with self.lock:
            return list(self._arrivals)

    def recipients(self) -> Counter[str]:
        """How many messages each address received."""
        with self.lock:
            return Counter(self._by_recipient)

    def reset(self) -> None:
        """Forget what was received and any pending fault."""
        with self.lock:
            super().reset()
            self._received.clear()
            self._by_recipient.clear()
            self._arrivals.clear()
            self._failing = self._stalling = self._losing = 0
            self.refused_logins = 0

    # -- misbehaviour -------------------------------------------------------------------------

    def fail_next(
        self,
        count: int,
        status: int = 451,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer ``status`` (451 4.3.0) to the next ``count`` messages' final dot; ``body``:
        the reply's text."""
        with self.lock:
            self._failing = count
            self._failure = f"{status} {body or '4.3.0 Temporary failure, try again later'}"

    def stall_next(self, count: int, seconds: float = 30.0) -> None:
        """Wait ``seconds`` before answering the next ``count`` messages' final dot."""
        with self.lock:
            self._stalling, self._stall_seconds = count, seconds

    def lose_reply_next(self, count: int) -> None:
        """Keep the next ``count`` messages but close the connection instead of answering
        250: the client cannot know whether they left (a relay crashing after queueing)."""
        with self.lock:
            self._losing = count

    def drop_connections(self) -> int:
        """Close every open client connection (a relay restarting); how many there were."""
        controller = self._controller
        with self.lock:
            open_ones = [c for c in self._connections if c.transport is not None]
            self._connections.clear()
        if controller is None:
            return 0
        for connection in open_ones:
            transport = connection.transport
            if transport is not None:
                controller.loop.call_soon_threadsafe(transport.close)
        return len(open_ones)


class _Handler:
    """aiosmtpd's handler hooks (run in the server's event loop), on the fake's state."""

    def __init__(self, fake: FakeSmtpServer) -> None:
        self.fake = fake

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if (
            isinstance(data, LoginPassword)
            and data.login.decode("utf-8", "replace") == self.fake.username
            and data.password.decode("utf-8", "replace") == self.fake.password
        ):
            return AuthResult(success=True)
        with self.fake.lock:
            self.fake.refused_logins += 1
        # handled=False: aiosmtpd answers 535 itself (handled=True would leave the client waiting).
        return AuthResult(success=False, handled=False)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        domain = address.rpartition("@")[2].lower()
        if domain in self.fake.refused_domains:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.fake.lock:
            stall = self.fake._stall_seconds if self.fake._stalling > 0 else 0.0
            self.fake._stalling = max(0, self.fake._stalling - 1)
        if stall:
            await asyncio.sleep(stall)
        with self.fake._changed:
            if self.fake._failing > 0:
                self.fake._failing -= 1
                return self.fake._failure
            content = envelope.original_content or envelope.content or b""
            data = content if isinstance(content, bytes) else content.encode("utf-8")
            received = ReceivedMail(
                mail_from=envelope.mail_from or "",
                recipients=tuple(envelope.rcpt_tos),
                data=data,
            )
            self.fake._received.append(received)
            self.fake._arrivals.append(time.monotonic())
            if self.fake.mailbox is not None:
                (self.fake.mailbox / f"{len(self.fake._received):04d}.eml").write_bytes(data)
            for recipient in received.recipients:
                self.fake._by_recipient[recipient.lower()] += 1
            self.fake._changed.notify_all()
            if self.fake._losing > 0 and server.transport is not None:
                self.fake._losing -= 1
                server.transport.close()  # aiosmtpd writes no reply to a closed transport
            return f"250 2.0.0 OK: queued as {len(self.fake._received)}"
