"""A toy integration, defined in the test tree as a third-party package would be.

``tests/test_integrations.py`` installs it with nothing but an entry point (a dist-info
folder on ``sys.path``) and checks that its action runs in a runbook, that its settings
slot is read from ``TOCSIN_TOY__...``, that the sandbox starts its fake and points it
there, that ``tocsin gateway`` serves its route and that ``tocsin integrations check``
runs its check (``checks.py``): adding an integration touches its own
folder only. With ``TOCSIN_TOY__TICKET_DESK`` set it is also the ticket system, with
ServiceNow-style keys (``tickets.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.toy_integration.settings import ToySettings
from tocsin.integration import DeclaredSecret, Integration

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tocsin.gateway import Gateway
    from tocsin.integration import CheckResult, GatewayPart, SandboxSeed, SandboxService
    from tocsin.settings import SecretStore, Settings
    from tocsin.tickets import TicketKeys, TicketSystem

TOKEN_SECRET = "toy_token"


def _sandbox(seed: SandboxSeed) -> SandboxService:
    from tests.toy_integration.fake import start

    return start(seed)


def _gateway(gateway: Gateway) -> GatewayPart:
    from tests.toy_integration.gateway import gateway_part

    return gateway_part(gateway)


def _check(settings: Settings, secrets: SecretStore) -> Sequence[CheckResult]:
    from tests.toy_integration.checks import check

    return check(settings, secrets)


def _tickets(settings: Settings, secrets: SecretStore) -> TicketSystem | None:
    from tests.toy_integration.tickets import ToyDesk

    desk = integration.settings_of(settings).ticket_desk
    return ToyDesk.from_settings(desk, secrets) if desk else None


def _ticket_keys(settings: Settings) -> TicketKeys | None:
    from tests.toy_integration.tickets import SERVICENOW_STYLE_KEYS

    return SERVICENOW_STYLE_KEYS if integration.settings_of(settings).ticket_desk else None


integration: Integration[ToySettings] = Integration(
    name="toy",
    description="A toy bell that answers when rung",
    settings=ToySettings,
    secrets=(DeclaredSecret(TOKEN_SECRET, "Bearer token the bell accepts"),),
    action_modules=("tests.toy_integration.actions",),
    sandbox=_sandbox,
    gateway=_gateway,
    ticket_system=_tickets,
    ticket_keys=_ticket_keys,
    check=_check,
)
