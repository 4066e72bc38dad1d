"""What the notify sending tests share: the local SMTP server (STARTTLS and AUTH), a sender
pointed at it, messages built directly, recipients named by a keyed HMAC, and a campaign
run in a child process that a test may kill (``python -m tests.notify_support ...``)."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tocsin.integrations.notify.campaign import Campaign, CampaignItem, CampaignOutcome
from tocsin.integrations.notify.fake_smtp import FakeSmtpServer
from tocsin.integrations.notify.ledger import ledger_at
from tocsin.integrations.notify.pacing import Pacer
from tocsin.integrations.notify.smtp import SmtpSender
from tocsin.mail import MailSender, OutgoingMail

REFUSED_DOMAIN = "no-such-mailbox.example"
FROM = "notices@broker-office.example"
_KEY = b"notify tests' audit key"
INCIDENT = "INC-1500"
STEP = "tell_clients"
ROOT = Path(__file__).resolve().parent.parent


def fingerprint(address: str) -> str:
    """The recipient's key in the ledger, as a run's audit key would make it."""
    return "hmac-sha256:" + hmac.new(_KEY, address.lower().encode(), hashlib.sha256).hexdigest()


def client(number: int) -> str:
    return f"client{number:05d}@clients.example"


def outgoing(to: str, number: int = 1, *, subject: str = "Votre dossier") -> OutgoingMail:
    """A message as notify.clients builds one (text and HTML, a stable Message-ID)."""
    return OutgoingMail(
        to=to,
        subject=subject,
        text=f"Bonjour,\n\nMessage {number}.\n.\nNe communiquez jamais vos mots de passe.\n",
        html=f"<p>Bonjour,</p><p>Message {number}.</p>",
        message_id=f"<{number:08d}.{hashlib.sha256(to.encode()).hexdigest()[:16]}@broker-office.example>",
        from_address=FROM,
        from_name="Courtage Dupont",
        reply_to="incident@broker-office.example",
        language="fr",
    )


@contextmanager
def smtp_server() -> Iterator[FakeSmtpServer]:
    """The SMTP server, its own CA, refusing every address of ``REFUSED_DOMAIN``."""
    with FakeSmtpServer(refused_domains={REFUSED_DOMAIN}) as server:
        yield server


def sender_for(server: FakeSmtpServer, **overrides: Any) -> SmtpSender:
    values: dict[str, Any] = {
        "username": server.username,
        "password": server.password,
        "ca_bundle": server.ca_bundle,
        "timeout_seconds": 10.0,
    }
    values.update(overrides)
    return SmtpSender("127.0.0.1", server.port, **values)


def items_for(addresses: Sequence[str]) -> list[CampaignItem]:
    """One item per address, row 1 first, each building its message on demand."""

    def builder(address: str, number: int) -> Callable[[], OutgoingMail]:
        return lambda: outgoing(address, number)

    return [
        CampaignItem(recipient=fingerprint(address), row=row, build=builder(address, row))
        for row, address in enumerate(addresses, start=1)
    ]


def run_campaign(
    journal_url: str,
    sender: MailSender,
    addresses: Sequence[str],
    *,
    rate: float = 1_000_000.0,
    retries: int = 3,
    retry_delay_seconds: float = 0.05,
    progress: Callable[[int, int, str], None] | None = None,
    pacer: Pacer | None = None,
) -> CampaignOutcome:
    with ledger_at(journal_url) as ledger:
        return Campaign(
            ledger,
            INCIDENT,
            STEP,
            sender,
            pacer or Pacer(rate),
            retries=retries,
            retry_delay_seconds=retry_delay_seconds,
            progress=progress,
        ).run(items_for(addresses))


def child_command(
    journal_url: str, server: FakeSmtpServer, count: int, rate: float = 1_000_000.0
) -> list[str]:
    """The command line of a campaign to ``count`` clients in a process of its own."""
    assert server.ca_bundle is not None
    return [
        sys.executable,
        "-m",
        "tests.notify_support",
        "--journal",
        journal_url,
        "--port",
        str(server.port),
        "--ca-bundle",
        str(server.ca_bundle),
        "--count",
        str(count),
        "--rate",
        str(rate),
    ]


def main(arguments: Sequence[str] | None = None) -> None:
    """Run a campaign to client00001.. through the local server; its outcome as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--journal", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca-bundle", type=Path, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, default=1_000_000.0)
    given = parser.parse_args(arguments)
    from tocsin.integrations.notify.fake_smtp import DEFAULT_PASSWORD, DEFAULT_USERNAME

    sender = SmtpSender(
        "127.0.0.1",
        given.port,
        username=DEFAULT_USERNAME,
        password=DEFAULT_PASSWORD,
        ca_bundle=given.ca_bundle,
    )
    try:
        outcome = run_campaign(
            given.journal,
            sender,
            [client(n) for n in range(1, given.count + 1)],
            rate=given.rate,
        )
    finally:
        sender.close()
    print(
        json.dumps(
            {
                "sent": outcome.sent,
                "already_sent": outcome.already_sent,
                "refused": outcome.refused,
                "in_doubt": outcome.in_doubt,
                "elapsed_seconds": outcome.elapsed_seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
