"""Answering a slash command after Slack's 3 seconds, through the command's ``response_url``.

Slack shows "operation_timeout" when a command is not answered within 3 seconds; the
answer may come later, POSTed to the ``response_url`` of the request (up to five times
within 30 minutes). The gateway answers at once when the command is quick, and otherwise
says it is on it and sends the real answer there.

A ``response_url`` is only followed to Slack (``https://hooks.slack.com/``) or to the
Slack the settings name (``slack.api_url``'s origin: the sandbox's fake): a signed request
comes from Slack, but the gateway never POSTs where a request merely says.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from slack_sdk.webhook import WebhookClient

from tocsin.integrations.slack import integration
from tocsin.outbound import trusting
from tocsin.settings import Settings

_log = logging.getLogger("tocsin.gateway")

SLACK_HOOKS = "https://hooks.slack.com"
FOLLOW_UP_TIMEOUT_SECONDS = 10


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else ""


class ResponseUrls:
    """Where this gateway may send a command's late answer, and sending it."""

    def __init__(self, settings: Settings) -> None:
        slack = integration.settings_of(settings)
        self.allowed = {SLACK_HOOKS, _origin(slack.api_url)} - {""}
        self.ca_bundle = slack.ca_bundle

    def may_answer_at(self, url: str) -> bool:
        """Whether ``url`` is a response_url of the Slack this gateway serves."""
        parts = urlsplit(url)
        return (
            _origin(url) in self.allowed
            and parts.scheme in ("https", "http")
            and not parts.username
            and not parts.password
            and len(url) <= 1024
        )

    def answer(self, url: str, text: str) -> bool:
        """Send ``text`` to the person who typed the command (ephemeral); whether Slack took it."""
        if not self.may_answer_at(url):
            _log.warning("not answering at a response_url outside Slack: %.100s", url)
            return False
        client = WebhookClient(url, timeout=FOLLOW_UP_TIMEOUT_SECONDS, ssl=trusting(self.ca_bundle))
        try:
            response = client.send(text=text, response_type="ephemeral")
        except OSError as exc:
            _log.warning("cannot send the answer to a slash command to Slack: %s", exc)
            return False
        if response.status_code != 200:
            _log.warning(
                "Slack refused the answer to a slash command: HTTP %s %.200s",
                response.status_code,
                response.body,
            )
            return False
        return True


__all__ = ["ResponseUrls"]
