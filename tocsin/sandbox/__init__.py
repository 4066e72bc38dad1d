"""Local fake services that speak the real HTTP APIs, for the sandbox mode and the tests.

Each fake is a real HTTP server on ``127.0.0.1`` at an ephemeral port, run in a daemon
thread (standard library only)::

    with FakeSlack() as slack:
        settings = Settings(slack_api_url=slack.url + "/api/")
        ...
        assert slack.messages[0].text == "Office OF-1 disconnected"

- ``FakeService``: the base; records requests, injects failures (``fail_next``, ``stall_next``).
- ``FakeSlack``: the Slack Web API (``tocsin.sandbox.slack_api``).
- ``FakePlatform``: the broker-software provider's platform API (``tocsin.sandbox.platform_api``).
- ``FakeJira``: a Jira site's REST API v2 and the webhooks it sends (``tocsin.sandbox.jira_api``).
"""

from __future__ import annotations

from tocsin.sandbox.fake_service import FakeService, ReceivedRequest, Reply
from tocsin.sandbox.jira_api import (
    SANDBOX_JIRA_TOKEN,
    SANDBOX_JIRA_USER,
    SANDBOX_JIRA_WEBHOOK_SECRET,
    FakeJira,
    JiraAttachment,
    JiraComment,
    JiraError,
)
from tocsin.sandbox.platform_api import (
    SANDBOX_PLATFORM_TOKEN,
    Account,
    Device,
    FakePlatform,
    Office,
)
from tocsin.sandbox.slack_api import (
    SANDBOX_BOT_TOKEN,
    FakeSlack,
    PostedSlackMessage,
    SlackCall,
    SlackChannel,
    SlackError,
    slack_method,
)

__all__ = [
    "SANDBOX_BOT_TOKEN",
    "SANDBOX_JIRA_TOKEN",
    "SANDBOX_JIRA_USER",
    "SANDBOX_JIRA_WEBHOOK_SECRET",
    "SANDBOX_PLATFORM_TOKEN",
    "Account",
    "Device",
    "FakeJira",
    "FakePlatform",
    "FakeService",
    "FakeSlack",
    "JiraAttachment",
    "JiraComment",
    "JiraError",
    "Office",
    "PostedSlackMessage",
    "ReceivedRequest",
    "Reply",
    "SlackCall",
    "SlackChannel",
    "SlackError",
    "slack_method",
]
