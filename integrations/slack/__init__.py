"""Slack: where approvers decide, where incidents are discussed, where audit heads go.

- ``settings``: ``SlackSettings``, the ``slack`` slot (``TOCSIN_SLACK__API_URL``...);
- ``client``: ``SlackCredentials`` (builds slack-sdk's ``WebClient``), Slack's errors
  turned into what to do, ``slack_text`` (a value as literal mrkdwn);
- ``actions``: ``slack.post_message``;
- ``incident_thread``: the incident thread and gate messages (the Slack ``Announcer``);
- ``anchors``: audit heads posted to ``slack.anchor_channel`` and read back for verify;
- ``signature``: is a request from Slack (``SlackRequestCheck``);
- ``directory``: who is in a user group, who a user is (the ``ApproverDirectory``);
- ``inbound``: what the gateway needs for the requests Slack sends it (``SlackInbound``);
- ``checks``: ``tocsin integrations check slack`` (the bot token, its scopes, the signing secret);
- ``fake``: ``FakeSlack``, the Web API on loopback (its methods in ``fake_web_api``, the
  workspace it holds in ``fake_workspace``); ``simulated_user``: ``SimulatedSlack``,
  the signed clicks and commands Slack sends the gateway; ``sandbox``: the fake workspace.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from tocsin.integration import DeclaredSecret, Integration
from tocsin.integrations.slack.settings import SlackSettings

if TYPE_CHECKING:
    from tocsin.announce import Announcer
    from tocsin.audit import AnchorPlace
    from tocsin.channel_posts import ChannelPoster
    from tocsin.gateway import Gateway
    from tocsin.integration import (
        AnnouncerContext,
        ApproverDirectory,
        CheckResult,
        DemoApprover,
        DemoContext,
        GatewayPart,
        HeadPublisher,
        HeadsQuery,
        SandboxSeed,
        SandboxService,
    )
    from tocsin.secret_delivery import SecretDelivery
    from tocsin.settings import SecretStore, Settings


def _announcer(context: AnnouncerContext) -> Announcer | None:
    from tocsin.errors import ConfigurationError
    from tocsin.integrations.slack.client import TOKEN_SECRET, SlackCredentials
    from tocsin.integrations.slack.incident_thread import SlackIncidentAnnouncer

    slack = integration.settings_of(context.settings)
    if not (slack.incident_channel or slack.channel_per_incident):
        return None
    token = context.secrets.get(TOKEN_SECRET)
    if not token:
        raise ConfigurationError(f"secret {TOKEN_SECRET} is not set")
    credentials = SlackCredentials.from_settings(context.settings, token)
    return SlackIncidentAnnouncer(credentials, slack, context.journal)


def _directory(settings: Settings, secrets: SecretStore) -> ApproverDirectory:
    from tocsin.integrations.slack.directory import SlackDirectory

    return SlackDirectory(settings, secrets)


def _head_publisher(settings: Settings, secrets: SecretStore) -> HeadPublisher | None:
    from tocsin.integrations.slack.anchors import anchor_channel

    return anchor_channel(settings, secrets)


def _published_heads(query: HeadsQuery) -> list[AnchorPlace]:
    from tocsin.integrations.slack.anchors import published_heads

    return published_heads(query)


def _sandbox(seed: SandboxSeed) -> SandboxService:
    from tocsin.integrations.slack.sandbox import start

    return start(seed)


def _gateway(gateway: Gateway) -> GatewayPart:
    from tocsin.integrations.slack.gateway_routes import gateway_part

    return gateway_part(gateway)


def _slack_dm(settings: Settings, secrets: SecretStore, person: str) -> SecretDelivery:
    from tocsin.integrations.slack.secret_dm import slack_dm

    return slack_dm(settings, secrets, person)


def _channel_poster(settings: Settings, secrets: SecretStore) -> ChannelPoster:
    from tocsin.integrations.slack.channel_poster import channel_poster

    return channel_poster(settings, secrets)


def _configured(settings: Settings, secrets: SecretStore) -> bool:
    from tocsin.integrations.slack.checks import is_configured

    return is_configured(settings, secrets)


def _check(settings: Settings, secrets: SecretStore) -> Sequence[CheckResult]:
    from tocsin.integrations.slack.checks import check

    return check(settings, secrets)


def _demo_approver(context: DemoContext) -> DemoApprover | None:
    from tocsin.integrations.slack.demo_approver import demo_approver

    return demo_approver(context)


integration: Integration[SlackSettings] = Integration(
    name="slack",
    description="Slack: incident threads, approval buttons, user groups, audit heads",
    settings=SlackSettings,
    secrets=(
        DeclaredSecret(
            "slack_bot_token",
            "The Tocsin app's bot token (xoxb-...): posts, user groups, users, channel history",
        ),
        DeclaredSecret(
            "slack_signing_secret",
            "The Slack app's signing secret: the gateway checks every request Slack sends",
        ),
    ),
    action_modules=("tocsin.integrations.slack.actions",),
    sandbox=_sandbox,
    gateway=_gateway,
    demo_approver=_demo_approver,
    announcer=_announcer,
    approver_directory=_directory,
    head_publisher=_head_publisher,
    published_heads=_published_heads,
    secret_channels={"slack-dm": _slack_dm},
    channel_posters={"slack": _channel_poster},
    configured=_configured,
    check=_check,
)
