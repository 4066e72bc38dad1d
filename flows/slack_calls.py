"""The engine's own calls to Slack, in one place: publishing the audit anchor, and listing
the members of a Slack user group that approves a gate.

Actions reach Slack through their integration; these two are the engine's, behind small
functions so that the Slack integration can take them over without touching the flow.
"""

from __future__ import annotations

from tocsin.actions import ActionContext, SecretStore
from tocsin.integrations.slack import SlackCredentials, usergroup_members
from tocsin.settings import Settings


def post_audit_anchor(
    settings: Settings, secrets: SecretStore, ticket: str, channel: str, text: str
) -> str:
    """Post ``text`` to ``channel``; where it went, as ``slack:CHANNEL:TS``. Raises on failure."""
    context = ActionContext(incident=ticket, step_id="audit", secrets=secrets, settings=settings)
    client = SlackCredentials.from_context(context).get_client()
    response = client.chat_postMessage(channel=channel, text=text)
    return f"slack:{response.get('channel', channel)}:{response.get('ts', '')}"


def usergroup_members_now(
    settings: Settings, secrets: SecretStore, ticket: str, step_id: str, usergroup: str
) -> list[str]:
    """The Slack user ids in ``usergroup`` as Slack lists them now; ``TocsinError`` if it cannot."""
    credentials = SlackCredentials.from_context(ActionContext(ticket, step_id, secrets, settings))
    return usergroup_members(credentials, usergroup)


__all__ = ["post_audit_anchor", "usergroup_members_now"]
