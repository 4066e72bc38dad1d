"""A client campaign against the local SMTP server: ≥ 90 % of the configured rate, and no
duplicate after a crash.

The SMTP server (aiosmtpd, STARTTLS and AUTH required, as in the tests and the sandbox)
runs in this process; each campaign runs in a child process of its own, as a flow would,
with its delivery ledger in a temporary SQLite journal:

- throughput: a campaign paced at RATE messages per minute for about SECONDS seconds;
  the rate achieved (messages accepted by the server per minute of the campaign) and its
  share of RATE (goal: ≥ 90 %);
- crash: a campaign to CRASH_COUNT recipients as fast as it can go, killed with SIGKILL
  once the server has half of them, then run again to its end; the duplicates by the
  server's own count (goal: 0), the recipients never reached (0), and the recipients in
  doubt (a message at the final dot when the process died: reported, never sent twice).

Usage: .venv/bin/python bench/mail_campaign.py [RATE] [SECONDS] [CRASH_COUNT]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tocsin.integrations.notify.campaign import Campaign, CampaignItem  # noqa: E402
from tocsin.integrations.notify.fake_smtp import (  # noqa: E402
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    FakeSmtpServer,
)
from tocsin.integrations.notify.ledger import ledger_at  # noqa: E402
from tocsin.integrations.notify.pacing import Pacer  # noqa: E402
from tocsin.integrations.notify.smtp import SmtpSender  # noqa: E402
from tocsin.mail import OutgoingMail  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import Figure  # noqa: E402

GOAL = 0.90
UNPACED = 1_000_000.0


@dataclass(frozen=True)
class Throughput:
    rate: float
    count: int
    sent: int
    achieved: float

    @property
    def share(self) -> float:
        return self.achieved / self.rate

    @property
    def ok(self) -> bool:
        return self.sent == self.count and GOAL <= self.share <= 1.02


@dataclass(frozen=True)
class Crash:
    count: int
    killed_at: int
    duplicates: int
    never: int
    in_doubt: int

    @property
    def ok(self) -> bool:
        return self.duplicates == 0 and self.never == 0 and self.killed_at < self.count


def address(number: int) -> str:
    return f"client{number:05d}@clients.example"


def message(number: int) -> OutgoingMail:
    """A client notice of a realistic size (about 2 kB of text and HTML)."""
    to = address(number)
    text = (
        "Madame, Monsieur,\n\nUne boîte aux lettres de notre cabinet a été compromise. "
        "Nous ne vous demanderons jamais de changer de coordonnées bancaires par e-mail.\n"
    ) * 6
    return OutgoingMail(
        to=to,
        subject="Information importante concernant votre dossier",
        text=text,
        html="<p>" + text.replace("\n", "<br>") + "</p>",
        message_id=f"<{hashlib.sha256(to.encode()).hexdigest()[:32]}@broker-office.example>",
        from_address="notices@broker-office.example",
        from_name="Courtage Dupont",
        reply_to="incident@broker-office.example",
        language="fr",
    )


def child(arguments: Sequence[str]) -> None:
    """One campaign (``--child``): its outcome as JSON on stdout."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--journal", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca-bundle", type=Path, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True)
    given = parser.parse_args(arguments)
    sender = SmtpSender(
        "127.0.0.1",
        given.port,
        username=DEFAULT_USERNAME,
        password=DEFAULT_PASSWORD,
        ca_bundle=given.ca_bundle,
    )

    def build(number: int) -> CampaignItem:
        key = "hmac-sha256:" + hashlib.sha256(address(number).encode()).hexdigest()
        return CampaignItem(recipient=key, row=number, build=lambda: message(number))

    try:
        with ledger_at(given.journal) as ledger:
            outcome = Campaign(
                ledger,
                "INC-BENCH",
                "tell_clients",
                sender,
                Pacer(given.rate),
                retries=3,
                retry_delay_seconds=0.1,
            ).run([build(n) for n in range(1, given.count + 1)])
    finally:
        sender.close()
    print(
        json.dumps(
            {
                "sent": outcome.sent,
                "already_sent": outcome.already_sent,
                "in_doubt": [row for row, _ in outcome.in_doubt],
                "refused": len(outcome.refused),
                "elapsed_seconds": outcome.elapsed_seconds,
            }
        )
    )


def command(server: FakeSmtpServer, journal: str, count: int, rate: float) -> list[str]:
    assert server.ca_bundle is not None
    return [
        sys.executable,
        __file__,
        "--child",
        "--journal",
        journal,
        "--port",
        str(server.port),
        "--ca-bundle",
        str(server.ca_bundle),
        "--count",
        str(count),
        "--rate",
        str(rate),
    ]


def throughput(server: FakeSmtpServer, folder: Path, rate: float, seconds: float) -> Throughput:
    count = max(2, round(rate * seconds / 60))
    server.reset()
    done = subprocess.run(
        command(server, f"sqlite:///{folder / 'throughput.db'}", count, rate),
        capture_output=True,
        text=True,
        check=True,
    )
    outcome = json.loads(done.stdout)
    stamps = server.arrivals()
    span = stamps[-1] - stamps[0] if len(stamps) > 1 else 0.0
    # n messages paced at the rate span (n - 1) intervals.
    achieved = (len(stamps) - 1) * 60 / span if span > 0 else float("inf")
    share = achieved / rate
    print(
        f"throughput: {outcome['sent']:,} of {count:,} messages sent in "
        f"{outcome['elapsed_seconds']:.1f} s (campaign, ledger included); at the server "
        f"{achieved:,.0f}/min for a limit of {rate:,.0f}/min: {share:.1%} (goal ≥ {GOAL:.0%})"
    )
    return Throughput(rate=rate, count=count, sent=outcome["sent"], achieved=achieved)


def crash(server: FakeSmtpServer, folder: Path, count: int) -> Crash:
    server.reset()
    journal = f"sqlite:///{folder / 'crash.db'}"
    first = subprocess.Popen(command(server, journal, count, UNPACED), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while server.count() < count // 2 and first.poll() is None and time.monotonic() < deadline:
        server.wait_for(lambda: server.count() >= count // 2, timeout=0.5)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = server.count()
    started = time.monotonic()
    done = subprocess.run(
        command(server, journal, count, UNPACED), capture_output=True, text=True, check=True
    )
    resumed_in = time.monotonic() - started
    outcome = json.loads(done.stdout)
    received = server.recipients()
    duplicates = sum(times - 1 for times in received.values() if times > 1)
    in_doubt = [address(row) for row in outcome["in_doubt"]]
    missing_in_doubt = [a for a in in_doubt if not received[a]]
    never = count - len(received) - len(missing_in_doubt)
    print(
        f"crash: killed with {killed_at:,} of {count:,} received; resumed in {resumed_in:.1f} s "
        f"({outcome['already_sent']:,} found sent, {outcome['sent']:,} sent); "
        f"duplicates {duplicates} (goal 0), never reached {never}, in doubt {len(in_doubt)} "
        f"({len(missing_in_doubt)} of them not received)"
    )
    return Crash(count, killed_at, duplicates, never, len(in_doubt))


def campaigns(rate: float, seconds: float, crash_count: int) -> tuple[Throughput, Crash]:
    """Both campaigns against one SMTP server, printing the figures."""
    with tempfile.TemporaryDirectory() as temporary, FakeSmtpServer() as server:
        folder = Path(temporary)
        return throughput(server, folder, rate, seconds), crash(server, folder, crash_count)


def measure(quick: bool = False) -> list[Figure]:
    rate, seconds, crash_count = (1_200.0, 10.0, 200) if quick else (1_200.0, 30.0, 2_000)
    paced, exact = campaigns(rate, seconds, crash_count)
    return [
        Figure(
            "mail_campaign",
            f"client campaign paced at {rate:,.0f} messages/min for {seconds:.0f} s "
            "(local SMTP, STARTTLS, AUTH)",
            f"{paced.sent:,} of {paced.count:,} sent; {paced.achieved:,.0f}/min at the server "
            f"({paced.share:.1%} of the limit)",
            goal=f"≥ {GOAL:.0%} of the configured limit, all sent",
            met=paced.ok,
        ),
        Figure(
            "mail_campaign",
            f"{crash_count:,} recipients, SIGKILL half-way, resumed",
            f"killed at {exact.killed_at:,}: {exact.duplicates} duplicates, {exact.never} "
            f"never reached, {exact.in_doubt} in doubt",
            goal="0 duplicates, 0 missed",
            met=exact.ok,
        ),
    ]


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
        return 0
    rate = float(sys.argv[1]) if len(sys.argv) > 1 else 1_200.0
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 30.0
    crash_count = int(sys.argv[3]) if len(sys.argv) > 3 else 2_000
    paced, exact = campaigns(rate, seconds, crash_count)
    print("PASS" if paced.ok and exact.ok else "FAIL")
    return 0 if paced.ok and exact.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
