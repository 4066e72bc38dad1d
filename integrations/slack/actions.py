"""Slack actions: ``slack.post_message``."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field
from slack_sdk.errors import SlackApiError

from tocsin.actions import ActionContext, EscapedValues, action
from tocsin.errors import IntegrationError
from tocsin.integrations.slack.client import (
    SERVICE,
    TOKEN_SECRET,
    SlackCredentials,
    api_error,
    slack_value,
)


class PostedMessage(BaseModel):
    """Where the message went; ``ts`` identifies it for replies and updates."""

    channel: str
    ts: str


def _describe_post(channel: str, text: str, thread_ts: str | None, **_: Any) -> str:
    where = f"{channel} (thread {thread_ts})" if thread_ts else channel
    shown = text if len(text) <= 80 else text[:77] + "..."
    return f"post to Slack {where}: {shown}"


@action(
    "slack.post_message",
    destructive=False,
    idempotent=False,
    secrets=(TOKEN_SECRET,),
    describe=_describe_post,
    communicates="slack",
)
def post_message(
    context: ActionContext,
    *,
    channel: Annotated[
        str,
        Field(
            pattern=r"^(#[a-z0-9][a-z0-9._-]{0,79}|[CGD][A-Z0-9]{2,})$",
            description="Channel id (C0123ABCD) or #name",
        ),
    ],
    text: Annotated[
        str,
        EscapedValues(slack_value),
        Field(
            min_length=1,
            description="Message text in Slack mrkdwn, also the notification fallback; values "
            "templated into it are shown as text (no mention, link or formatting)",
        ),
    ],
    blocks: Annotated[
        list[dict[str, Any]] | None, Field(description="Block Kit blocks, shown instead of text")
    ] = None,
    thread_ts: Annotated[
        str | None,
        Field(pattern=r"^\d+\.\d+$", description="ts of the message to reply under"),
    ] = None,
) -> PostedMessage:
    """Post a message to a Slack channel, or as a reply in a thread.

    ``text`` and ``blocks`` are the runbook author's own mrkdwn and are sent as they are,
    values templated into them included: a runbook quoting an input escapes it in the
    template (docs/gateway.md, "What is escaped"); ``slack_text`` is the same escaping.
    """
    client = SlackCredentials.from_context(context).get_client()
    try:
        response = client.chat_postMessage(
            channel=channel, text=text, blocks=blocks, thread_ts=thread_ts
        )
    except SlackApiError as exc:
        raise api_error("slack.post_message", "chat.postMessage", channel, exc) from None
    except OSError as exc:  # urllib's URLError, a refused connection, a timeout
        raise IntegrationError(
            "slack.post_message",
            SERVICE,
            f"cannot be reached at {client.base_url}: {getattr(exc, 'reason', exc)}",
            "check the network and settings.slack.api_url; the step can be retried",
            retryable=True,
            # Refused: nothing was posted. A timeout may come after the message was.
            unapplied=isinstance(getattr(exc, "reason", exc), ConnectionRefusedError),
        ) from None
    return PostedMessage(channel=str(response["channel"]), ts=str(response["ts"]))
