"""``SmtpSender``: the ``smtp`` mail sender, over one SMTP connection (STARTTLS or TLS, AUTH).

The transaction is written by hand rather than with ``smtplib.SMTP.sendmail`` so that the
point of no return is known: ``MAIL FROM``, ``RCPT TO``, ``DATA`` and the whole message go
out, then ``committing()`` is called, then the final ``<CRLF>.<CRLF>``. A server keeps
nothing of a message whose final dot never came, so a process killed before
``committing()`` cannot have delivered it; one killed after may have (in doubt: SMTP has
no way to ask whether a message left, so ``reconcile`` answers None).

Replies: 250 after the dot is sent; a 4xx or a dropped connection is worth retrying; a 5xx
to ``RCPT`` or ``DATA`` refuses that recipient for good, with the server's words (any
address in them replaced); a 5xx to ``MAIL FROM`` or a refused login means nothing will be
sent, a ``ConfigurationError`` saying what to fix.
"""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formataddr, formatdate
from pathlib import Path
from typing import Literal

from tocsin.errors import ConfigurationError, IntegrationError
from tocsin.integrations.notify import SMTP_PASSWORD, integration
from tocsin.integrations.notify.campaign import UnconfirmedSend
from tocsin.mail import OutgoingMail, SendOutcome, SendResult
from tocsin.settings import SecretStore, Settings

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
_ADDRESS = re.compile(r"[^\s<>()\[\]\"',;:@]+@[^\s<>()\[\]\"',;:]+")
_LEADING_DOT = re.compile(rb"(?m)^\.")
_LINE_END = re.compile(rb"\r\n|\r|\n")
Security = Literal["starttls", "tls", "none"]


def _without_addresses(text: str) -> str:
    """A server's reply with any address it echoes replaced (the trail keeps no address)."""
    return _ADDRESS.sub("[address]", text)


def _reply(code: int, text: bytes | str) -> str:
    words = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return _without_addresses(f"{code} {' '.join(words.split())}".strip())[:400]


def mime_message(mail: OutgoingMail) -> bytes:
    """The message as it goes on the wire: text and HTML alternatives, CRLF line ends."""
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = formataddr((mail.from_name, mail.from_address))
    message["To"] = mail.to
    if mail.reply_to:
        message["Reply-To"] = mail.reply_to
    message["Subject"] = mail.subject
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = mail.message_id
    if mail.language:
        message["Content-Language"] = mail.language
    for name, value in mail.headers.items():
        message[name] = value
    message.set_content(mail.text)
    if mail.html is not None:
        message.add_alternative(mail.html, subtype="html")
    return message.as_bytes()


def data_without_final_dot(message: bytes) -> bytes:
    """The DATA payload, dot-stuffed, up to but without the ``<CRLF>.<CRLF>`` ending it."""
    wire = _LEADING_DOT.sub(b"..", _LINE_END.sub(b"\r\n", message))
    return wire.removesuffix(b"\r\n")


class SmtpSender:
    """One SMTP connection, reused from message to message (opened again when dropped)."""

    name = "smtp"
    concurrency = 1
    can_reconcile = False

    def __init__(
        self,
        host: str,
        port: int = 587,
        *,
        username: str | None = None,
        password: str | None = None,
        security: Security = "starttls",
        ca_bundle: Path | None = None,
        timeout_seconds: float = 30.0,
    ) -> None:
        if security == "none" and host.lower().strip("[]") not in LOOPBACK:
            raise ConfigurationError(
                f"notify.smtp_security is none but {host} is not this machine: the password "
                "and every client's message would cross the network in clear",
                "set TOCSIN_NOTIFY__SMTP_SECURITY to starttls (port 587) or tls (port 465)",
            )
        if username and not password:
            raise ConfigurationError(
                f"no password for the SMTP user {username}",
                f"set the secret {SMTP_PASSWORD} (TOCSIN_SECRET_{SMTP_PASSWORD.upper()})",
            )
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.security = security
        self.ca_bundle = ca_bundle
        self.timeout_seconds = timeout_seconds
        self._smtp: smtplib.SMTP | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, secrets: SecretStore) -> SmtpSender:
        """The sender the ``notify`` settings and the ``smtp_password`` secret describe."""
        notify = integration.settings_of(settings)
        if not notify.smtp_host:
            raise ConfigurationError(
                "notify.transport is smtp but no SMTP relay is set",
                "set TOCSIN_NOTIFY__SMTP_HOST (and TOCSIN_NOTIFY__SMTP_PORT, "
                "TOCSIN_NOTIFY__SMTP_USERNAME, the secret smtp_password)",
            )
        return cls(
            notify.smtp_host,
            notify.smtp_port,
            username=notify.smtp_username,
            password=secrets.get(SMTP_PASSWORD),
            security=notify.smtp_security,
            ca_bundle=notify.ca_bundle,
            timeout_seconds=notify.timeout_seconds,
        )

    def __repr__(self) -> str:
        return f"SmtpSender({self.host}:{self.port}, {self.security}, user={self.username!r})"

    def describe(self) -> str:
        security = {"starttls": "STARTTLS", "tls": "TLS", "none": "no TLS"}[self.security]
        who = f" as {self.username}" if self.username else ""
        return f"SMTP {self.host}:{self.port} ({security}){who}"

    # -- the connection ---------------------------------------------------------------------

    @property
    def _where(self) -> str:
        return f"the SMTP relay {self.host}:{self.port}"

    def _tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context()  # the system's CAs, host name checked
        if self.ca_bundle is not None:
            try:
                context.load_verify_locations(cafile=str(self.ca_bundle))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigurationError(
                    f"cannot read the CA bundle {self.ca_bundle}: {exc}",
                    "set TOCSIN_NOTIFY__CA_BUNDLE to a readable PEM file of CA certificates",
                ) from None
        return context

    def _open(self) -> smtplib.SMTP:
        """Connect, STARTTLS and log in; ``ConfigurationError`` for what no retry will fix."""
        context = self._tls()
        smtp: smtplib.SMTP
        try:
            if self.security == "tls":
                smtp = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout_seconds, context=context
                )
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout_seconds)
            try:
                # The message and its final dot go in two writes: without this, Nagle's
                # algorithm holds the dot back until the server's delayed ACK (40 ms a message).
                if smtp.sock is not None:
                    smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                smtp.ehlo()
                if self.security == "starttls":
                    if not smtp.has_extn("starttls"):
                        raise ConfigurationError(
                            f"{self._where} does not offer STARTTLS",
                            "check notify.smtp_host and smtp_port (587 offers STARTTLS; use "
                            "smtp_security tls for port 465)",
                        )
                    smtp.starttls(context=context)
                    smtp.ehlo()
                if self.username:
                    assert self._password is not None
                    smtp.login(self.username, self._password)
            except BaseException:
                smtp.close()
                raise
        except ssl.SSLCertVerificationError as exc:
            raise ConfigurationError(
                f"the certificate of {self._where} is not trusted: {exc.verify_message}",
                "if the relay uses an internal CA, set TOCSIN_NOTIFY__CA_BUNDLE to its PEM file; "
                "check notify.smtp_host is the name on the certificate",
            ) from None
        except smtplib.SMTPAuthenticationError as exc:
            raise ConfigurationError(
                f"{self._where} refused the login of {self.username}: "
                f"{_reply(exc.smtp_code, exc.smtp_error)}",
                f"check TOCSIN_NOTIFY__SMTP_USERNAME and the secret {SMTP_PASSWORD} "
                f"(TOCSIN_SECRET_{SMTP_PASSWORD.upper()})",
            ) from None
        except smtplib.SMTPNotSupportedError:
            raise ConfigurationError(
                f"{self._where} offers no login (AUTH) on this connection",
                "check notify.smtp_security (the relay may offer AUTH only after STARTTLS)",
            ) from None
        return smtp

    def _drop(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.close()
            finally:
                self._smtp = None

    def check(self) -> None:
        """Connect, STARTTLS, log in and QUIT, sending nothing."""
        try:
            smtp = self._open()
        except (OSError, smtplib.SMTPException) as exc:
            raise IntegrationError(
                "notify",
                self._where,
                f"cannot be reached: {type(exc).__name__}: {exc}",
                "check TOCSIN_NOTIFY__SMTP_HOST and TOCSIN_NOTIFY__SMTP_PORT, and that this "
                "machine may connect to it",
                retryable=True,
            ) from None
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()

    def close(self) -> None:
        with self._lock:
            if self._smtp is not None:
                try:
                    self._smtp.quit()
                except (OSError, smtplib.SMTPException):
                    pass
                self._drop()

    # -- sending ----------------------------------------------------------------------------

    def reconcile(self, mail: OutgoingMail) -> bool | None:
        """SMTP cannot say whether a message left."""
        return None

    def send(self, mail: OutgoingMail, committing: Callable[[], None]) -> SendResult:
        payload = data_without_final_dot(mime_message(mail))
        with self._lock:
            for _ in range(2):  # a reused connection the server dropped: once more, afresh
                fresh = self._smtp is None
                try:
                    if self._smtp is None:
                        self._smtp = self._open()
                    return self._transaction(self._smtp, mail, payload, committing)
                except _Dropped as dropped:
                    self._drop()
                    if dropped.committed:
                        return UnconfirmedSend(
                            detail=f"{self._where} closed the connection before confirming "
                            f"the message: {dropped.reason}"
                        )
                    if fresh:
                        return SendResult(SendOutcome.RETRY, dropped.reason)
                except (OSError, smtplib.SMTPException) as exc:
                    self._drop()
                    return SendResult(
                        SendOutcome.RETRY, f"cannot reach {self._where}: {type(exc).__name__}"
                    )
                except BaseException:
                    self._drop()  # mid-transaction: the server discards the message
                    raise
            return SendResult(SendOutcome.RETRY, f"{self._where} keeps closing the connection")

    def _transaction(
        self,
        smtp: smtplib.SMTP,
        mail: OutgoingMail,
        payload: bytes,
        committing: Callable[[], None],
    ) -> SendResult:
        committed = False
        try:
            code, text = smtp.mail(mail.from_address)
            if code != 250:
                self._reset(smtp)
                if code == 530:
                    raise ConfigurationError(
                        f"{self._where} requires a login before sending: {_reply(code, text)}",
                        "set TOCSIN_NOTIFY__SMTP_USERNAME and the secret smtp_password, and "
                        "TOCSIN_NOTIFY__SMTP_SECURITY to starttls or tls",
                    )
                if code >= 500:
                    raise ConfigurationError(
                        f"{self._where} refuses to send from {mail.from_address}: "
                        f"{_reply(code, text)}",
                        "set TOCSIN_NOTIFY__FROM_ADDRESS to an address the SMTP user may send "
                        "as (Exchange: a mailbox the user has SendAs on)",
                    )
                return SendResult(SendOutcome.RETRY, _reply(code, text))
            code, text = smtp.rcpt(mail.to)
            if code not in (250, 251):
                return self._refused_or_retry(smtp, code, text)
            smtp.putcmd("data")
            code, text = smtp.getreply()
            if code != 354:
                return self._refused_or_retry(smtp, code, text)
            smtp.send(payload)
            committing()
            committed = True
            smtp.send(b"\r\n.\r\n")
            code, text = smtp.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise _Dropped(f"{type(exc).__name__}: {exc}", committed) from None
        if code == 250:
            return SendResult(SendOutcome.SENT, _reply(code, text))
        return self._refused_or_retry(smtp, code, text, after_data=True)

    def _refused_or_retry(
        self, smtp: smtplib.SMTP, code: int, text: bytes, *, after_data: bool = False
    ) -> SendResult:
        if not after_data:
            self._reset(smtp)
        if code == -1:  # smtplib's "connection closed" reply
            raise _Dropped("the connection was closed", after_data)
        if 400 <= code < 500:
            return SendResult(SendOutcome.RETRY, _reply(code, text))
        return SendResult(SendOutcome.REFUSED, _reply(code, text))

    def _reset(self, smtp: smtplib.SMTP) -> None:
        try:
            smtp.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()


class _Dropped(Exception):
    def __init__(self, reason: str, committed: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.committed = committed
