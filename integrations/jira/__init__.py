"""Jira as Tocsin's ticket system: runs start from a ticket and report back to it.

- ``settings``: ``JiraSettings``, the ``jira`` slot (``TOCSIN_JIRA__URL``...);
- ``client``: ``JiraTickets``, the ``TicketSystem`` over REST API v2 (comments, attachments,
  signed webhooks), and ``jira_text`` (a value as literal wiki markup);
- ``anchors``: the audit heads commented on the ticket, read back for verify;
- ``checks``: ``tocsin integrations check jira`` (who the credentials are, the webhook secret);
- ``fake``: ``FakeJira``, the site on loopback; ``sandbox``: the fake with the run's ticket.

Its announcer is the core's ``TicketAnnouncer`` (``tocsin.ticket_updates``), written
against the ``TicketSystem`` seam, given ``JiraTickets``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from tocsin.integration import DeclaredSecret, Integration
from tocsin.integrations.jira.settings import JiraSettings

if TYPE_CHECKING:
    from tocsin.announce import Announcer
    from tocsin.audit import AnchorPlace
    from tocsin.gateway import Gateway
    from tocsin.integration import (
        AnnouncerContext,
        CheckResult,
        GatewayPart,
        HeadsQuery,
        SandboxSeed,
        SandboxService,
    )
    from tocsin.settings import SecretStore, Settings
    from tocsin.tickets import TicketKeys, TicketSystem


def _tickets(settings: Settings, secrets: SecretStore) -> TicketSystem | None:
    from tocsin.integrations.jira.client import JiraTickets

    if not integration.settings_of(settings).url:
        return None
    return JiraTickets.from_settings(settings, secrets)


def _ticket_keys(settings: Settings) -> TicketKeys | None:
    from tocsin.tickets import JIRA_KEYS

    return JIRA_KEYS if integration.settings_of(settings).url else None  # as _tickets


def _announcer(context: AnnouncerContext) -> Announcer | None:
    from tocsin.ticket_updates import TicketAnnouncer

    tickets = _tickets(context.settings, context.secrets)
    if tickets is None:
        return None
    attach = integration.settings_of(context.settings).attach_report
    return TicketAnnouncer(tickets, context.report if attach else None)


def _published_heads(query: HeadsQuery) -> list[AnchorPlace]:
    from tocsin.integrations.jira.anchors import published_heads

    return published_heads(query)


def _sandbox(seed: SandboxSeed) -> SandboxService:
    from tocsin.integrations.jira.sandbox import start

    return start(seed)


def _configured(settings: Settings, secrets: SecretStore) -> bool:
    return bool(integration.settings_of(settings).url)  # as _tickets


def _check(settings: Settings, secrets: SecretStore) -> Sequence[CheckResult]:
    from tocsin.integrations.jira.checks import check

    return check(settings, secrets)


def _gateway(gateway: Gateway) -> GatewayPart:
    from tocsin.integrations.jira.webhook import gateway_part

    return gateway_part(gateway)


integration: Integration[JiraSettings] = Integration(
    name="jira",
    description="Jira: runs started from tickets, progress comments, the report attached",
    settings=JiraSettings,
    secrets=(
        DeclaredSecret(
            "jira_api_token",
            "Jira Cloud: an API token of jira.user; Data Center: a personal access token",
        ),
        DeclaredSecret(
            "jira_webhook_secret",
            "The secret Jira signs its webhooks with (X-Hub-Signature); the gateway checks it",
        ),
    ),
    sandbox=_sandbox,
    gateway=_gateway,
    announcer=_announcer,
    ticket_system=_tickets,
    ticket_keys=_ticket_keys,
    published_heads=_published_heads,
    configured=_configured,
    check=_check,
)
