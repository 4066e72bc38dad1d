"""The smtp mail sender against a real SMTP server on loopback (STARTTLS and AUTH required),
and notify's sandbox."""

from __future__ import annotations

import csv
import email
import email.policy
import shutil
import socket
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.engine_support import wait_until
from tests.notify_support import REFUSED_DOMAIN, outgoing, sender_for, smtp_server
from tocsin.errors import ConfigurationError, IntegrationError
from tocsin.integration import SandboxSeed
from tocsin.integrations.notify import SMTP_PASSWORD, integration
from tocsin.integrations.notify.campaign import UnconfirmedSend
from tocsin.integrations.notify.fake_smtp import FakeSmtpServer
from tocsin.integrations.notify.sandbox import CLIENTS_FILE, start
from tocsin.integrations.notify.smtp import SmtpSender
from tocsin.mail import SendOutcome
from tocsin.sandbox.assembly import Sandbox
from tocsin.settings import StaticSecrets, load_settings, with_values


@pytest.fixture(scope="module")
def started() -> Iterator[FakeSmtpServer]:
    with smtp_server() as server:
        yield server


@pytest.fixture
def server(started: FakeSmtpServer) -> FakeSmtpServer:
    started.reset()
    return started


def nothing(*_: object) -> None:
    return None


def parsed(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_a_message_arrives_once_with_its_text_html_and_headers(server: FakeSmtpServer) -> None:
    sender = sender_for(server)
    try:
        result = sender.send(outgoing("anne@example.be", 7), nothing)
    finally:
        sender.close()
    assert result.outcome is SendOutcome.SENT
    assert result.detail.startswith("250")
    assert server.received_by("Anne@Example.be") == 1 and server.count() == 1
    received = server.messages()[0]
    assert received.mail_from == "notices@broker-office.example"
    message = parsed(received.data)
    assert message["From"] == "Courtage Dupont <notices@broker-office.example>"
    assert message["Reply-To"] == "incident@broker-office.example"
    assert message["Message-ID"] == outgoing("anne@example.be", 7).message_id
    assert message["Date"] and message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    # A line holding a single dot survives dot-stuffing.
    assert "Message 7.\n.\n" in text.get_content().replace("\r\n", "\n")
    assert "<p>Message 7.</p>" in html.get_content()


def test_committing_comes_before_the_final_dot_and_a_crash_there_delivers_nothing(
    server: FakeSmtpServer,
) -> None:
    seen: list[int] = []

    def committing() -> None:
        assert wait_until(lambda: server.count() == 0, timeout=1, what="nothing received yet")
        seen.append(server.count())

    sender = sender_for(server)
    try:
        assert sender.send(outgoing("bea@example.be", 1), committing).outcome is SendOutcome.SENT
        assert seen == [0] and server.count() == 1

        class Killed(Exception):
            pass

        def crash() -> None:
            raise Killed  # the process dies at the point of no return, before the dot

        with pytest.raises(Killed):
            sender.send(outgoing("carl@example.be", 2), crash)
        # The sender carries on over a new connection; the cut message never arrived.
        assert sender.send(outgoing("dora@example.be", 3), nothing).outcome is SendOutcome.SENT
    finally:
        sender.close()
    assert server.received_by("carl@example.be") == 0
    assert server.received_by("dora@example.be") == 1 and server.count() == 2


def test_starttls_is_required_and_the_certificate_checked(server: FakeSmtpServer) -> None:
    in_clear = sender_for(server, security="none")
    with pytest.raises(ConfigurationError, match="AUTH"):
        in_clear.send(outgoing("eve@example.be"), nothing)
    unauthenticated = sender_for(server, security="none", username=None, password=None)
    with pytest.raises(ConfigurationError, match="requires a login"):
        unauthenticated.send(outgoing("eve@example.be"), nothing)
    untrusted = sender_for(server, ca_bundle=None)
    with pytest.raises(ConfigurationError, match="not trusted") as caught:
        untrusted.check()
    assert "TOCSIN_NOTIFY__CA_BUNDLE" in caught.value.hint
    with pytest.raises(ConfigurationError, match="not this machine"):
        SmtpSender("smtp.example.be", 25, security="none")
    assert server.count() == 0


def test_a_wrong_password_is_a_configuration_error_and_nothing_is_sent(
    server: FakeSmtpServer,
) -> None:
    sender = sender_for(server, password="not the password")
    with pytest.raises(ConfigurationError, match="refused the login") as caught:
        sender.send(outgoing("fred@example.be"), nothing)
    assert "TOCSIN_NOTIFY__SMTP_USERNAME" in caught.value.hint
    assert SMTP_PASSWORD in caught.value.hint
    assert "not the password" not in caught.value.message + caught.value.hint
    assert server.refused_logins >= 1 and server.count() == 0  # smtplib tries each mechanism


def test_a_refused_address_is_refused_with_the_reply_but_not_the_address(
    server: FakeSmtpServer,
) -> None:
    sender = sender_for(server)
    try:
        refused = sender.send(outgoing(f"gina@{REFUSED_DOMAIN}"), nothing)
        after = sender.send(outgoing("hugo@example.be"), nothing)
    finally:
        sender.close()
    assert refused.outcome is SendOutcome.REFUSED
    assert refused.detail.startswith("550 5.1.1")
    assert "gina" not in refused.detail and REFUSED_DOMAIN not in refused.detail
    assert after.outcome is SendOutcome.SENT  # the connection was reset, not lost
    assert server.count() == 1


def test_a_temporary_failure_is_worth_a_retry(server: FakeSmtpServer) -> None:
    server.fail_next(1)
    sender = sender_for(server)
    try:
        first = sender.send(outgoing("ines@example.be"), nothing)
        second = sender.send(outgoing("ines@example.be"), nothing)
    finally:
        sender.close()
    assert first.outcome is SendOutcome.RETRY and first.detail.startswith("451 4.3.0")
    assert second.outcome is SendOutcome.SENT
    assert server.received_by("ines@example.be") == 1


def test_a_reply_lost_after_the_final_dot_is_unconfirmed_not_a_plain_retry(
    server: FakeSmtpServer,
) -> None:
    server.lose_reply_next(1)
    sender = sender_for(server)
    try:
        lost = sender.send(outgoing("lea@example.be", 1), nothing)
        after = sender.send(outgoing("max@example.be", 2), nothing)
    finally:
        sender.close()
    assert isinstance(lost, UnconfirmedSend) and lost.outcome is SendOutcome.UNCONFIRMED
    assert server.received_by("lea@example.be") == 1  # it did leave: sending again would repeat it
    assert after.outcome is SendOutcome.SENT


def test_a_dropped_connection_is_opened_again(server: FakeSmtpServer) -> None:
    sender = sender_for(server)
    try:
        assert sender.send(outgoing("jo@example.be", 1), nothing).outcome is SendOutcome.SENT
        assert server.drop_connections() == 1
        assert sender.send(outgoing("kim@example.be", 2), nothing).outcome is SendOutcome.SENT
    finally:
        sender.close()
    assert server.received_by("jo@example.be") == server.received_by("kim@example.be") == 1


def test_the_sender_is_built_from_the_settings_and_checked(server: FakeSmtpServer) -> None:
    with pytest.raises(ConfigurationError) as missing:
        SmtpSender.from_settings(load_settings(), StaticSecrets({}))
    assert "TOCSIN_NOTIFY__SMTP_HOST" in missing.value.hint
    settings = with_values(
        load_settings(),
        {
            "notify": {
                "smtp_host": "127.0.0.1",
                "smtp_port": server.port,
                "smtp_username": server.username,
                "ca_bundle": str(server.ca_bundle),
            }
        },
    )
    with pytest.raises(ConfigurationError, match="no password") as no_password:
        SmtpSender.from_settings(settings, StaticSecrets({}))
    assert "TOCSIN_SECRET_SMTP_PASSWORD" in no_password.value.hint
    sender = SmtpSender.from_settings(settings, StaticSecrets({SMTP_PASSWORD: server.password}))
    assert sender.describe() == f"SMTP 127.0.0.1:{server.port} (STARTTLS) as {server.username}"
    assert server.password not in repr(sender)
    sender.check()
    assert server.count() == 0 and server.refused_logins == 0
    assert sender.reconcile(outgoing("x@example.be")) is None and not sender.can_reconcile
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    with pytest.raises(IntegrationError, match="cannot be reached"):
        SmtpSender(
            "127.0.0.1", closed, username="u", password="p", ca_bundle=server.ca_bundle
        ).check()


def test_the_sandbox_serves_a_relay_the_notify_settings_reach() -> None:
    service = start(SandboxSeed())
    try:
        fake = service.fake
        assert isinstance(fake, FakeSmtpServer)
        assert service.secrets.keys() == {SMTP_PASSWORD}
        settings = with_values(load_settings(), service.settings)
        notify = integration.settings_of(settings)
        assert notify.smtp_security == "starttls" and notify.messages_per_minute == 600
        assert notify.from_address == "notices@broker-office.example"
        assert notify.office_language == "fr" and notify.staff_channel == "#office-staff"
        assert notify.recipients_folder is not None and notify.drafts_folder is not None
        with (notify.recipients_folder / CLIENTS_FILE).open(encoding="utf-8") as file:
            rows = list(csv.DictReader(file))
        assert len(rows) == 20 and {row["language"] for row in rows} == {"fr", "nl", "en"}
        assert all(row["email"].split("@")[1].startswith("example.") for row in rows)
        assert notify.drafts_folder.stat().st_mode & 0o077 == 0
        sender = SmtpSender.from_settings(settings, StaticSecrets(service.secrets))
        try:
            sent = sender.send(outgoing(rows[0]["email"]), nothing)
        finally:
            sender.close()
        assert sent.outcome is SendOutcome.SENT and fake.received_by(rows[0]["email"]) == 1
        assert fake.mailbox is not None and (fake.mailbox / "0001.eml").exists()
        assert any(str(fake.mailbox) in note for note in service.notes)
    finally:
        service.fake.stop()
    notify = service.settings["notify"]
    assert not Path(notify["recipients_folder"]).exists()  # made up here: removed
    assert not Path(notify["drafts_folder"]).exists()  # left empty: removed
    assert fake.mailbox is not None and (fake.mailbox / "0001.eml").exists()  # kept to be read
    shutil.rmtree(fake.mailbox)


def test_the_assembled_sandbox_serves_the_relay_with_its_own_ca(tmp_path: Path) -> None:
    with Sandbox(load_settings(data_dir=tmp_path)) as sandbox:
        fake = sandbox.fake("notify", FakeSmtpServer)
        assert fake.ca_bundle is not None and fake.ca_bundle.is_relative_to(tmp_path)
        sender = SmtpSender.from_settings(sandbox.settings, sandbox.secrets)
        try:
            sender.check()
        finally:
            sender.close()
        assert fake.refused_logins == 0
        assert fake.mailbox is not None
    assert not fake.mailbox.exists()  # nothing was received: nothing left behind
