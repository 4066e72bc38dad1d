"""Jira as Tocsin's ticket system (Cloud and Data Center), over REST API v2 with httpx.

REST API v2 (``/rest/api/2/...``) is the version both Cloud and Data Center serve, and
both take a comment body there as wiki markup (v3, Cloud only, wants Atlassian Document
Format). ``comment`` is given plain text, as ``TicketSystem`` says, so it escapes the
markup with ``jira_text`` (``markup``) before sending: a value in a comment can never
become a link, a mention, an image, a table or a heading.

``JiraTickets`` is the ticket operations (comment, attach, read an issue...); how one call
is sent, authenticated (Cloud: basic with an API token; Data Center: a personal access
token), retried and its refusal explained is ``transport``'s ``JiraTransport``; how a
webhook is checked (``X-Hub-Signature``) and read is ``webhook_reading``'s
``JiraWebhookReader``. The names other modules import from here stay here.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlsplit

from tocsin.errors import ConfigurationError, IntegrationError
from tocsin.integrations.jira import integration
from tocsin.integrations.jira.markup import jira_text
from tocsin.integrations.jira.transport import (
    ERROR_EXCERPT_LIMIT,
    MAX_RESPONSE_BYTES,
    RETRIES_WHEN_BUSY,
    SERVICE,
    TOKEN_SECRET,
    JiraTransport,
    _id_of,
    _json,
    _token_hint,
)
from tocsin.integrations.jira.webhook_reading import (
    DELIVERY_ID_HEADER,
    SIGNATURE_HEADER,
    JiraWebhookReader,
)
from tocsin.outbound import path_segment, trusting
from tocsin.settings import SecretStore, Settings
from tocsin.tickets import JIRA_KEYS

__all__ = [
    "DELIVERY_ID_HEADER",
    "ERROR_EXCERPT_LIMIT",
    "MAX_RESPONSE_BYTES",
    "RETRIES_WHEN_BUSY",
    "SERVICE",
    "SIGNATURE_HEADER",
    "TOKEN_SECRET",
    "WEBHOOK_SECRET",
    "JiraTickets",
    "jira_text",
]

WEBHOOK_SECRET = "jira_webhook_secret"


class JiraTickets(JiraWebhookReader, JiraTransport):
    """A Jira site seen as a ``TicketSystem``; one short-lived HTTP client per call."""

    name = "jira"
    keys = JIRA_KEYS
    delivery_id_header = DELIVERY_ID_HEADER

    def __init__(
        self,
        base_url: str,
        api_token: str,
        *,
        user: str | None = None,
        webhook_secret: str | None = None,
        runbook_field: str = "customfield_10100",
        inputs_field: str = "customfield_10101",
        timeout_seconds: float = 30.0,
        max_retry_wait_seconds: float = 30.0,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        """``user`` given: Jira Cloud (basic auth with an API token); None: Data Center (bearer PAT).

        ``verify``: the TLS context checking the site's certificate (``trusting``); None: httpx's.
        """
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(
                f"the Jira URL {base_url!r} is not an http:// or https:// URL",
                "set settings.jira.url (TOCSIN_JIRA__URL) to the site's base URL, "
                "like https://broker-support.atlassian.net",
            )
        if not api_token:
            raise ConfigurationError(f"secret {TOKEN_SECRET!r} is empty", _token_hint(user, "set"))
        self.base_url = base_url.rstrip("/")
        self.user = user or None
        self.runbook_field = runbook_field
        self.inputs_field = inputs_field
        self.timeout_seconds = timeout_seconds
        self.max_retry_wait_seconds = max_retry_wait_seconds
        self._api_token = api_token
        self._webhook_secret = webhook_secret or None
        self._verify: ssl.SSLContext | bool = verify if verify is not None else True

    @classmethod
    def from_settings(cls, settings: Settings, secrets: SecretStore) -> JiraTickets:
        """Built from ``settings.jira`` and the secrets ``jira_api_token`` / ``jira_webhook_secret``."""
        jira = integration.settings_of(settings)
        if not jira.url:
            raise ConfigurationError(
                "Jira is not configured: settings.jira.url is empty",
                "set TOCSIN_JIRA__URL=https://broker-support.atlassian.net "
                '(or `url = "https://..."` under [jira] in the settings file)',
            )
        token = secrets.get(TOKEN_SECRET)
        if not token:
            raise ConfigurationError(
                f"secret {TOKEN_SECRET!r} is not set", _token_hint(jira.user, "set")
            )
        return cls(
            jira.url,
            token,
            user=jira.user,
            webhook_secret=secrets.get(WEBHOOK_SECRET),
            runbook_field=jira.runbook_field,
            inputs_field=jira.inputs_field,
            timeout_seconds=settings.http_timeout_seconds,
            verify=trusting(jira.ca_bundle),
        )

    def __repr__(self) -> str:
        kind = f"Cloud, user={self.user!r}" if self.user else "Data Center"
        return f"JiraTickets({self.base_url!r}, {kind}, token=<hidden>)"

    # -- TicketSystem ----------------------------------------------------------

    def ticket_url(self, ticket: str) -> str:
        return f"{self.base_url}/browse/{quote(ticket, safe='')}"

    def comment(self, ticket: str, text: str) -> str:
        """Add ``text`` as it is (plain text, its markup escaped) to the ticket."""
        response = self._call(
            "jira.comment",
            ticket,
            "POST",
            f"{_issue_path(ticket)}/comment",
            json_body={"body": jira_text(text)},
        )
        return _id_of(_json(response, "jira.comment"), "jira.comment", "comment")

    def attach(self, ticket: str, filename: str, content: bytes, media_type: str) -> str:
        response = self._call(
            "jira.attach",
            ticket,
            "POST",
            f"{_issue_path(ticket)}/attachments",
            files={"file": (filename, content, media_type)},
            # Jira blocks multipart posts without it (XSRF protection).
            headers={"X-Atlassian-Token": "no-check"},
        )
        attachments = _json(response, "jira.attach")
        if not isinstance(attachments, list) or not attachments:
            raise IntegrationError(
                "jira.attach",
                SERVICE,
                f"accepted {filename} on {ticket} but answered no attachment",
                "check the ticket in Jira; the attachment may be missing",
            )
        return _id_of(attachments[0], "jira.attach", "attachment")

    # -- more of the REST API --------------------------------------------------

    def issue(self, ticket: str) -> dict[str, Any]:
        """The issue as ``GET /rest/api/2/issue/{key}`` answers it (``key``, ``fields``...)."""
        document = _json(self._call("jira.issue", ticket, "GET", _issue_path(ticket)), "jira.issue")
        if not isinstance(document, dict):
            raise IntegrationError(
                "jira.issue", SERVICE, f"answered something other than an issue for {ticket}"
            )
        return document

    def myself(self) -> dict[str, Any]:
        """The account Tocsin's credentials are (``GET /rest/api/2/myself``; changes nothing)."""
        document = _json(self._call("jira.myself", "", "GET", "/rest/api/2/myself"), "jira.myself")
        if not isinstance(document, dict):
            raise IntegrationError("jira.myself", SERVICE, "answered something other than a user")
        return document

    def my_permissions(self, keys: Sequence[str]) -> dict[str, bool]:
        """Whether the account holds each project permission (``BROWSE_PROJECTS``...) in at least
        one project (``GET /rest/api/2/mypermissions``; changes nothing)."""
        path = f"/rest/api/2/mypermissions?permissions={','.join(keys)}"
        document = _json(self._call("jira.mypermissions", "", "GET", path), "jira.mypermissions")
        found = document.get("permissions") if isinstance(document, dict) else None
        if not isinstance(found, dict):
            raise IntegrationError(
                "jira.mypermissions", SERVICE, "answered something other than permissions"
            )
        return {
            key: bool(isinstance(found.get(key), dict) and found[key].get("havePermission"))
            for key in keys
        }

    def comments(self, ticket: str) -> list[dict[str, Any]]:
        """Every comment of the ticket, oldest first (``GET .../comment``, page by page)."""
        found: list[dict[str, Any]] = []
        while True:
            path = f"{_issue_path(ticket)}/comment?startAt={len(found)}&maxResults=100"
            document = _json(self._call("jira.comments", ticket, "GET", path), "jira.comments")
            page = document.get("comments") if isinstance(document, dict) else None
            if not isinstance(page, list):
                raise IntegrationError(
                    "jira.comments", SERVICE, f"answered something other than comments for {ticket}"
                )
            found.extend(comment for comment in page if isinstance(comment, dict))
            total = document.get("total")
            if not page or not isinstance(total, int) or len(found) >= total:
                return found


def _issue_path(ticket: str) -> str:
    return f"/rest/api/2/issue/{path_segment(ticket, what='the ticket key')}"
