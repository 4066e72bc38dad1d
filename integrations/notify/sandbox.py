"""notify in the sandbox: a real SMTP server on loopback (STARTTLS and AUTH required) that
keeps every message, settings that send through it as the office "Courtage Dupont", and a
list of 20 fake clients (French, Dutch and English) to run a campaign to."""

from __future__ import annotations

import contextlib
import csv
import shutil
import tempfile
from pathlib import Path

from tocsin.integration import SandboxSeed, SandboxService
from tocsin.integrations.notify import SMTP_PASSWORD
from tocsin.integrations.notify.fake_smtp import FakeSmtpServer

SANDBOX_USERNAME = "notices@broker-office.example"
SANDBOX_PASSWORD = "sandbox-smtp-password"
CLIENTS_FILE = "clients.csv"
CLIENTS: tuple[tuple[str, str, str], ...] = (
    ("marie.lambert@example.be", "Marie Lambert", "fr"),
    ("jan.peeters@example.be", "Jan Peeters", "nl"),
    ("sophie.dubois@example.fr", "Sophie Dubois", "fr"),
    ("pieter.janssens@example.be", "Pieter Janssens", "nl"),
    ("emma.wilson@example.com", "Emma Wilson", "en"),
    ("luc.martin@example.be", "Luc Martin", "fr"),
    ("an.maes@example.be", "An Maes", "nl"),
    ("camille.bernard@example.fr", "Camille Bernard", "fr"),
    ("tom.claes@example.be", "Tom Claes", "nl"),
    ("oliver.smith@example.com", "Oliver Smith", "en"),
    ("julie.lefebvre@example.be", "Julie Lefebvre", "fr"),
    ("els.wouters@example.be", "Els Wouters", "nl"),
    ("nicolas.petit@example.fr", "Nicolas Petit", "fr"),
    ("koen.willems@example.be", "Koen Willems", "nl"),
    ("grace.taylor@example.com", "Grace Taylor", "en"),
    ("isabelle.leroy@example.be", "Isabelle Leroy", "fr"),
    ("sarah.goossens@example.be", "Sarah Goossens", "nl"),
    ("antoine.moreau@example.fr", "Antoine Moreau", "fr"),
    ("bart.mertens@example.be", "Bart Mertens", "nl"),
    ("james.brown@example.com", "James Brown", "en"),
)


def write_clients(folder: Path) -> Path:
    """The sandbox's client list (email, name, language) as ``clients.csv`` in ``folder``."""
    path = folder / CLIENTS_FILE
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(("email", "name", "language"))
        writer.writerows(CLIENTS)
    return path


class SandboxSmtpServer(FakeSmtpServer):
    """The sandbox's server, which tidies the sandbox's folders when it stops: the client
    list it wrote, and the received mail and drafts folders if nothing was put in them
    (those that hold something stay for their reader)."""

    def __init__(self, *, clients_folder: Path, drafts: Path, mailbox: Path) -> None:
        super().__init__(username=SANDBOX_USERNAME, password=SANDBOX_PASSWORD, mailbox=mailbox)
        self.clients_folder, self.drafts = clients_folder, drafts

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.clients_folder, ignore_errors=True)
        for folder in (self.drafts, self.mailbox):
            if folder is not None:
                with contextlib.suppress(OSError):
                    folder.rmdir()


def start(seed: SandboxSeed) -> SandboxService:
    """Start the SMTP server (with the sandbox's CA when it has one) and write the clients."""
    # Each folder made 0700 by mkdtemp.
    recipients = Path(tempfile.mkdtemp(prefix="tocsin-sandbox-recipients-"))
    write_clients(recipients)
    drafts = Path(tempfile.mkdtemp(prefix="tocsin-sandbox-drafts-"))
    mailbox = Path(tempfile.mkdtemp(prefix="tocsin-sandbox-mail-"))
    server = SandboxSmtpServer(clients_folder=recipients, drafts=drafts, mailbox=mailbox)
    try:
        if seed.server_tls is not None and seed.ca_bundle is not None:
            server.start(tls=seed.server_tls, ca_bundle=seed.ca_bundle)
        else:
            server.start()
        return _service(server, recipients, drafts, mailbox)
    except BaseException:
        server.stop()  # and its folders
        raise


def _service(
    server: FakeSmtpServer, recipients: Path, drafts: Path, mailbox: Path
) -> SandboxService:
    assert server.ca_bundle is not None
    notify: dict[str, object] = {
        "transport": "smtp",
        "smtp_host": "127.0.0.1",
        "smtp_port": server.port,
        "smtp_username": SANDBOX_USERNAME,
        "smtp_security": "starttls",
        "ca_bundle": str(server.ca_bundle),
        "from_address": "notices@broker-office.example",
        "from_name": "Courtage Dupont",
        "reply_to": "incident@broker-office.example",
        "office_name": "Courtage Dupont",
        "office_phone": "+32 2 555 01 00",
        "office_language": "fr",
        "messages_per_minute": 600,
        "recipients_folder": str(recipients),
        "staff_list": "staff@broker-office.example",
        "staff_channel": "#office-staff",
        "drafts_folder": str(drafts),
    }
    return SandboxService(
        server,
        settings={"notify": notify},
        secrets={SMTP_PASSWORD: SANDBOX_PASSWORD},
        notes=[
            f"Mail goes to a local SMTP server at 127.0.0.1:{server.port} (STARTTLS, user "
            f"{SANDBOX_USERNAME}), which delivers none: nothing leaves this machine. Each "
            f"message it receives is written to {mailbox} (0001.eml...: open one with a mail "
            "client, or read it as text)",
            f"Client list: {recipients / CLIENTS_FILE} ({len(CLIENTS)} fake clients, fr/nl/en: "
            "recipients_file: clients.csv); drafts for the authorities go to " + str(drafts),
        ],
    )
