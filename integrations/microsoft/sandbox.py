"""Microsoft 365 in the sandbox: a tenant whose user (the run's ``user`` input, or
alice@broker-office.example) was phished, where a colleague who left the office
(erik@..., ``fake_leaver``) still has an active account, and the office PCs the run names
(``devices`` or ``device``) are onboarded in Defender for Endpoint; and the settings and
secret that reach it."""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from tocsin.integration import DemoRun, SandboxSeed, SandboxService
from tocsin.integrations.microsoft import CLIENT_SECRET
from tocsin.integrations.microsoft.fake import (
    KNOWN_GOOD_AUTHENTICATOR,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_TENANT_ID,
    SANDBOX_USER,
    FakeMicrosoft,
    compromised_tenant,
)
from tocsin.integrations.microsoft.fake_devices import office_workstation
from tocsin.integrations.microsoft.fake_entra import GENUINE_ROLE
from tocsin.integrations.microsoft.fake_exchange import GENUINE_DELEGATE_LOCAL
from tocsin.integrations.microsoft.fake_leaver import (
    LEAVER_DEPARTED_DAYS_AGO,
    LEAVER_LOCAL,
    add_leaver,
    colleague_of,
    leaver_of,
)
from tocsin.integrations.microsoft.fake_mail import add_mailbox

# An office PC's platform id (PC-1): the only names seeded as Defender machines.
_PC_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def demo_runs() -> Mapping[str, DemoRun]:
    """``tocsin demo mailbox-compromise``: the phished user, and what they confirm is theirs
    (their Authenticator, the Zoom consent, their Reports Reader role, their assistant);
    ``tocsin demo leaver-account``: the colleague who left, their mailbox to a colleague."""
    domain = SANDBOX_USER.split("@")[-1]
    departed = (datetime.now(UTC) - timedelta(days=LEAVER_DEPARTED_DAYS_AGO)).date()
    return {
        "mailbox-compromise": DemoRun(
            "Outlook mailbox phished (demo)",
            {
                "user": SANDBOX_USER,
                "keep_auth_methods": [KNOWN_GOOD_AUTHENTICATOR],
                "keep_apps": ["Zoom"],
                "keep_admin_roles": [GENUINE_ROLE],
                "keep_delegates": [f"{GENUINE_DELEGATE_LOCAL}@{domain}"],
                "entra_id_p2": True,
                # The notify sandbox's sample list, as review_sent_items would have saved it.
                "clients_file": "clients.csv",
                "compromised_since": (datetime.now(UTC) - timedelta(days=2)).date().isoformat(),
                "people_concerned": 20,
            },
        ),
        "leaver-account": DemoRun(
            "Colleague left the office (demo)",
            {
                "user": leaver_of(domain),
                "departure_date": departed.isoformat(),
                "colleague": colleague_of(domain),
                "colleague_send_as": True,
            },
        ),
    }


def start(seed: SandboxSeed) -> SandboxService:
    """Start the fake identity platform and Graph with one compromised mailbox."""
    given = seed.inputs.get("user")
    user = given if isinstance(given, str) and "@" in given else SANDBOX_USER
    domain = user.rsplit("@", 1)[-1]
    if user.lower() == leaver_of(domain):  # the leaver runbook: the phished user stays alice
        user = f"{SANDBOX_USER.split('@')[0]}@{domain}"
    tenant = add_mailbox(
        add_leaver(compromised_tenant(user), domain), f"notices@{domain}", "Office notices"
    )
    now = datetime.now(UTC)
    workstations = office_workstations(seed)
    tenant.machines.extend(office_workstation(name, domain, now) for name in workstations)
    fake = FakeMicrosoft(tenant).start(tls=seed.server_tls)
    microsoft: dict[str, object] = {
        "tenant_id": SANDBOX_TENANT_ID,
        "client_id": SANDBOX_CLIENT_ID,
        "authority_host": fake.url,
        "graph_url": fake.url,
        "defender_url": fake.url,
        "exchange_url": fake.url,
        # notify.transport = graph sends from this shared mailbox of the fake tenant
        "mail_sender": f"notices@{domain}",
    }
    # The sandbox's secure channel for temporary passwords: a 0700 folder of its own.
    passwords = tempfile.mkdtemp(prefix="tocsin-sandbox-passwords-")
    atexit.register(_remove_if_empty, passwords)  # a password written stays for its reader
    microsoft["password_folder"] = passwords
    if seed.ca_bundle is not None:
        microsoft["ca_bundle"] = str(seed.ca_bundle)
    return SandboxService(
        fake,
        settings={"microsoft": microsoft},
        secrets={CLIENT_SECRET: SANDBOX_CLIENT_SECRET},
        notes=[
            f"Microsoft 365 tenant {SANDBOX_TENANT_ID} at {fake.url}: {user} was phished "
            "(attacker inbox rules, hidden rule, phone method, app consent, admin role, "
            "mailbox delegate, POP and IMAP on, sign-ins from abroad; their laptop onboarded "
            "in Defender for Endpoint and enrolled in Intune); "
            f"{leaver_of(domain)} left the office but his account, role, consent, mailbox "
            f"and devices are still active ({LEAVER_LOCAL}'s mail goes to "
            f"{colleague_of(domain)}); temporary passwords go to {passwords}"
            + (
                f"; the office's PCs {', '.join(workstations)} are onboarded in Defender"
                if workstations
                else ""
            )
        ],
    )


def office_workstations(seed: SandboxSeed) -> list[str]:
    """The office PCs the run names (``devices``, a list or ``PC-1,PC-2``, or ``device``),
    which the fake's Defender for Endpoint then knows."""
    given = seed.inputs.get("devices") or seed.inputs.get("device")
    items: Sequence[object] = (
        given.split(",") if isinstance(given, str) else given if isinstance(given, list) else ()
    )
    names = [str(item).strip() for item in items]
    return [name for name in names if _PC_NAME.match(name)]


def _remove_if_empty(folder: str) -> None:
    with contextlib.suppress(OSError):
        os.rmdir(folder)
