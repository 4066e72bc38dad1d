"""A fake of a Jira site's REST API v2 and of the webhooks it sends, for ``JiraTickets``.

What it does like Jira:

- auth: Jira Cloud takes HTTP basic with the account e-mail and an API token (``user``
  given); Data Center takes ``Authorization: Bearer <personal access token>`` (``user=None``).
  Wrong or missing credentials answer 401 (Cloud: a plain-text sentence; Data Center: JSON);
- ``GET /rest/api/2/issue/{key}``: the issue, ``{"id", "key", "self", "fields"}``, its
  comments and attachments in ``fields.comment`` / ``fields.attachment``;
- ``POST /rest/api/2/issue/{key}/comment`` with ``{"body": text}``: 201 and the comment;
  an empty body answers 400 ``errors.comment``; ``GET`` of the same path lists comments;
- ``POST /rest/api/2/issue/{key}/attachments``, multipart field ``file`` (one or more):
  200 and the list of attachments; without ``X-Atlassian-Token: no-check`` 403
  ``XSRF check failed``; a body that is not multipart/form-data 415;
- ``GET /rest/api/2/myself``: the account the credentials are (Cloud: ``accountId``,
  ``emailAddress``; Data Center: ``name``, ``key``), ``displayName``, ``active``;
- project permissions: the account holds ``permissions`` (default: browse, comment,
  attach) in every project; ``GET /rest/api/2/mypermissions?permissions=A,B`` says
  ``havePermission`` for each (no ``permissions`` parameter: 400, as Cloud answers);
  without ``ADD_COMMENTS`` a comment is refused 403, without ``CREATE_ATTACHMENTS`` a file,
  and without ``BROWSE_PROJECTS`` an issue is not found (404), as Jira hides it;
- an unknown issue answers 404 ``Issue does not exist or you do not have permission to see it.``;
  every error body is ``{"errorMessages": [...], "errors": {...}}``;
- rate limit: more than ``rate_limit`` calls within ``rate_window_seconds`` answer 429 with
  ``Retry-After``; ``rate_limit_next(k)`` forces it for the next k calls.

``send_webhook`` posts to a URL (Tocsin's gateway) the issue webhook Jira would send,
signed like a webhook registered with a secret (``X-Hub-Signature: sha256=<hex>``).
Where Jira's answer is not documented (no ``file`` part at all) the fake answers 400.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import math
import re
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import quote, unquote

import httpx

from tocsin.sandbox.fake_service import FakeService, ReceivedRequest, Reply

SANDBOX_JIRA_TOKEN = "jira-sandbox-api-token"
"""The API token (Cloud) or personal access token (Data Center) the sandbox's FakeJira accepts."""
SANDBOX_JIRA_USER = "tocsin@broker-support.example"
"""The account e-mail the sandbox's FakeJira (Cloud) pairs with the token."""
SANDBOX_JIRA_WEBHOOK_SECRET = "jira-sandbox-webhook-secret"
"""The secret the sandbox signs Jira webhooks with."""

ALL_PERMISSIONS = frozenset({"BROWSE_PROJECTS", "ADD_COMMENTS", "CREATE_ATTACHMENTS"})
_PERMISSION_NAMES = {
    "BROWSE_PROJECTS": ("10", "Browse Projects"),
    "ADD_COMMENTS": ("15", "Add Comments"),
    "CREATE_ATTACHMENTS": ("19", "Create Attachments"),
}
_POSTING = {"/comment": "ADD_COMMENTS", "/attachments": "CREATE_ATTACHMENTS"}
_REFUSED = {
    "ADD_COMMENTS": "You do not have the permission to comment on this issue.",
    "CREATE_ATTACHMENTS": "You do not have permission to create attachments for this issue.",
}
_ISSUE_PATH = re.compile(r"^/rest/api/2/issue/(?P<issue>[^/]+)(?P<rest>/comment|/attachments)?/?$")
_NOT_FOUND = "Issue does not exist or you do not have permission to see it."
_TOCSIN_ACCOUNT_ID = "712020:5b10ac8d-tocsin-sandbox"
_ENGINEER_ACCOUNT_ID = "712020:7c2e44aa-engineer-sandbox"


@dataclass(frozen=True)
class JiraComment:
    """A comment the fake accepted."""

    id: str
    issue: str
    body: str
    author: str
    """The display name of the account that posted it."""


@dataclass(frozen=True)
class JiraAttachment:
    """A file the fake accepted, with the bytes received."""

    id: str
    issue: str
    filename: str
    media_type: str
    content: bytes
    author: str


class JiraError(Exception):
    """Raised by a route to answer ``status`` with Jira's error body."""

    def __init__(
        self,
        status: int,
        messages: list[str] | None = None,
        errors: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status, messages, errors)
        self.status = status
        self.messages = messages or []
        self.errors = dict(errors or {})

    def reply(self) -> Reply:
        return Reply(self.status, {"errorMessages": self.messages, "errors": self.errors})


@dataclass
class _Issue:
    id: str
    key: str
    fields: dict[str, Any]


class FakeJira(FakeService):
    """A Jira site with the issues given; see the module docstring."""

    name = "fake Jira"

    def __init__(
        self,
        *,
        token: str = SANDBOX_JIRA_TOKEN,
        user: str | None = SANDBOX_JIRA_USER,
        issues: Mapping[str, Mapping[str, Any]] | None = None,
        rate_limit: int | None = None,
        rate_window_seconds: float = 60.0,
        retry_after_seconds: int = 1,
        permissions: frozenset[str] = ALL_PERMISSIONS,
    ) -> None:
        """``user`` given: a Cloud site (basic auth user:token); None: Data Center (bearer token).

        ``issues`` maps each key (``INC-12``) to its fields (``summary``, custom fields...);
        ``permissions`` are the project permissions the account holds in every project.
        """
        super().__init__()
        self.token = token
        self.user = user
        self.permissions = frozenset(permissions)
        self._seed = {key: copy.deepcopy(dict(fields)) for key, fields in (issues or {}).items()}
        self._initial_limits = (rate_limit, rate_window_seconds, retry_after_seconds)
        self._restore()

    def _restore(self) -> None:
        with self.lock:
            self._issues = {
                key: _Issue(str(10000 + number), key, copy.deepcopy(fields))
                for number, (key, fields) in enumerate(self._seed.items(), start=1)
            }
            self._comments: list[JiraComment] = []
            self._attachments: list[JiraAttachment] = []
            self._next_id = 10000
            self.rate_limit, self.rate_window_seconds, self.retry_after_seconds = (
                self._initial_limits
            )
            self._calls: deque[float] = deque()

    def reset(self) -> None:
        """Back to the issues given to the constructor: no comments, attachments, calls or faults."""
        with self.lock:
            super().reset()
            self._restore()

    def __repr__(self) -> str:
        kind = f"Cloud, user={self.user!r}" if self.user else "Data Center"
        return f"FakeJira(issues={sorted(self._seed)}, {kind}, token=<hidden>)"

    # -- inspection and test switches ------------------------------------------

    def comments(self, key: str) -> list[JiraComment]:
        """Comments posted on an issue so far, oldest first."""
        with self.lock:
            return [comment for comment in self._comments if comment.issue == key]

    def attachments(self, key: str) -> list[JiraAttachment]:
        """Files attached to an issue so far, oldest first."""
        with self.lock:
            return [attachment for attachment in self._attachments if attachment.issue == key]

    def add_issue(self, key: str, fields: Mapping[str, Any]) -> None:
        """Create (or replace) an issue until the next ``reset()``."""
        with self.lock:
            existing = self._issues.get(key)
            issue_id = existing.id if existing else str(10000 + len(self._issues) + 1)
            self._issues[key] = _Issue(issue_id, key, copy.deepcopy(dict(fields)))

    def rate_limit_next(self, count: int) -> None:
        """Answer the next ``count`` calls with 429 and ``Retry-After``."""
        self.fail_next(
            count,
            429,
            {"errorMessages": ["Rate limit exceeded."], "errors": {}},
            {"Retry-After": str(self.retry_after_seconds)},
        )

    # -- webhooks Jira sends ---------------------------------------------------

    def webhook_body(
        self,
        key: str,
        event: str = "jira:issue_created",
        *,
        triggered_by: str | None = None,
        triggered_by_email: str | None = None,
    ) -> dict[str, Any]:
        """The JSON Jira sends for an event on issue ``key`` (``KeyError`` when unknown)."""
        with self.lock:
            issue = self._issues.get(key)
            if issue is None:
                raise KeyError(
                    f"the fake Jira has no issue {key!r} (known: {sorted(self._issues)})"
                )
            fields = copy.deepcopy(issue.fields)
            issue_id = issue.id
        name = triggered_by or "Sandbox Support Engineer"
        user: dict[str, Any] = (
            {
                "self": f"{self.url}/rest/api/2/user?accountId={_ENGINEER_ACCOUNT_ID}",
                "accountId": _ENGINEER_ACCOUNT_ID,
                "displayName": name,
                "active": True,
            }
            if self.user is not None
            else {
                "self": f"{self.url}/rest/api/2/user?username=engineer",
                "name": "engineer",
                "key": "JIRAUSER10001",
                "displayName": name,
                "active": True,
            }
        )
        if triggered_by_email:  # Jira Cloud shares it only when the profile allows
            user["emailAddress"] = triggered_by_email
        body: dict[str, Any] = {
            "timestamp": int(time.time() * 1000),
            "webhookEvent": event,
            "user": user,
            "issue": {
                "id": issue_id,
                "self": f"{self.url}/rest/api/2/issue/{issue_id}",
                "key": key,
                "fields": fields,
            },
        }
        type_name = {"jira:issue_created": "issue_created", "jira:issue_updated": "issue_generic"}
        if event in type_name:
            body["issue_event_type_name"] = type_name[event]
        return body

    def send_webhook(
        self,
        target_url: str,
        secret: str | None,
        key: str,
        event: str = "jira:issue_created",
        *,
        tamper: bool = False,
        delivery_id: str | None = None,
        triggered_by: str | None = None,
        triggered_by_email: str | None = None,
    ) -> httpx.Response:
        """POST the webhook for issue ``key`` to ``target_url``, signed with ``secret`` (None: unsigned).

        ``tamper`` signs the body, then changes the issue's summary before sending, as an
        attacker rewriting a captured delivery would. ``delivery_id`` is the
        ``X-Atlassian-Webhook-Identifier`` (a new one per call by default; pass the same
        one to replay a retry).
        """
        document = self.webhook_body(
            key, event, triggered_by=triggered_by, triggered_by_email=triggered_by_email
        )
        body = json.dumps(document).encode("utf-8")
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Atlassian Webhook HTTP Client",
            "X-Atlassian-Webhook-Identifier": delivery_id or str(uuid.uuid4()),
            "X-Atlassian-Webhook-Flow": "Primary",
        }
        if secret is not None:
            digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
            headers["X-Hub-Signature"] = f"sha256={digest}"
        if tamper:
            fields = document["issue"]["fields"]
            fields["summary"] = str(fields.get("summary") or "") + " (rewritten)"
            body = json.dumps(document).encode("utf-8")
        return httpx.post(target_url, content=body, headers=headers, timeout=10.0)

    # -- the REST API ----------------------------------------------------------

    def handle(self, request: ReceivedRequest) -> Reply:
        if not self._authenticated(request):
            return self._unauthorised()
        retry_after = self._count_call()
        if retry_after is not None:
            return Reply(
                429,
                {"errorMessages": ["Rate limit exceeded."], "errors": {}},
                {"Retry-After": str(retry_after)},
            )
        if request.path.rstrip("/") == "/rest/api/2/myself":
            if request.method != "GET":
                return Reply(405, {"errorMessages": [], "errors": {}}, {"Allow": "GET"})
            return Reply(200, self._myself())
        if request.path.rstrip("/") == "/rest/api/2/mypermissions" and request.method == "GET":
            return self._my_permissions(request)
        match = _ISSUE_PATH.match(request.path)
        if match is None:
            return JiraError(404, [f"null for uri: {self.url}{request.path}"]).reply()
        routes = {
            "": {"GET": self._get_issue},
            "/comment": {"GET": self._list_comments, "POST": self._add_comment},
            "/attachments": {"POST": self._add_attachments},
        }[match.group("rest") or ""]
        route = routes.get(request.method)
        if route is None:
            return Reply(405, {"errorMessages": [], "errors": {}}, {"Allow": ", ".join(routes)})
        try:
            with self.lock:
                if "BROWSE_PROJECTS" not in self.permissions:
                    raise JiraError(404, [_NOT_FOUND])
                issue = self._find(unquote(match.group("issue")))
                needed = _POSTING.get(match.group("rest") or "")
                if request.method == "POST" and needed and needed not in self.permissions:
                    raise JiraError(403, [_REFUSED[needed]])
                return route(issue, request)
        except JiraError as error:
            return error.reply()

    def _my_permissions(self, request: ReceivedRequest) -> Reply:
        asked = [p for p in ",".join(request.query.get("permissions", [])).split(",") if p]
        if not asked:
            return JiraError(400, ["The 'permissions' query parameter is required."]).reply()
        found = {}
        for key in asked:
            number, name = _PERMISSION_NAMES.get(key, ("0", key.replace("_", " ").title()))
            found[key] = {
                "id": number,
                "key": key,
                "name": name,
                "type": "PROJECT",
                "description": "",
                "havePermission": key in self.permissions,
            }
        return Reply(200, {"permissions": found})

    def _myself(self) -> dict[str, Any]:
        """The account of the credentials, as Cloud or Data Center describe it."""
        if self.user is None:
            return {
                "self": f"{self.url}/rest/api/2/user?username=tocsin",
                "key": "JIRAUSER10100",
                "name": "tocsin",
                "emailAddress": "tocsin@broker-support.example",
                "displayName": "Tocsin",
                "active": True,
                "timeZone": "UTC",
            }
        return {
            "self": f"{self.url}/rest/api/2/user?accountId={_TOCSIN_ACCOUNT_ID}",
            "accountId": _TOCSIN_ACCOUNT_ID,
            "accountType": "atlassian",
            "emailAddress": self.user,
            "displayName": "Tocsin",
            "active": True,
            "timeZone": "UTC",
        }

    def _authenticated(self, request: ReceivedRequest) -> bool:
        scheme, _, credentials = (request.header("authorization") or "").partition(" ")
        if self.user is None:
            return scheme.lower() == "bearer" and hmac.compare_digest(
                credentials.strip().encode(), self.token.encode()
            )
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
            return False
        user, _, token = decoded.partition(":")
        return user == self.user and hmac.compare_digest(token.encode(), self.token.encode())

    def _unauthorised(self) -> Reply:
        if self.user is None:
            return Reply(
                401,
                {
                    "errorMessages": [
                        "You are not authenticated. Authentication required to perform this operation."
                    ],
                    "errors": {},
                },
                {"WWW-Authenticate": 'Bearer realm="Jira"', "X-Seraph-LoginReason": "FAILED"},
            )
        return Reply(
            401,
            b"Client must be authenticated to access this resource.",
            {
                "Content-Type": "text/plain;charset=UTF-8",
                "WWW-Authenticate": f'Basic realm="{self.url}"',
                "X-Seraph-LoginReason": "AUTHENTICATED_FAILED",
            },
        )

    def _count_call(self) -> int | None:
        """Count a call; the Retry-After seconds when it exceeds the rate limit."""
        now = time.monotonic()
        with self.lock:
            if self.rate_limit is None:
                return None
            while self._calls and self._calls[0] <= now - self.rate_window_seconds:
                self._calls.popleft()
            if len(self._calls) >= self.rate_limit:
                return max(1, math.ceil(self._calls[0] + self.rate_window_seconds - now))
            self._calls.append(now)
            return None

    # Routes run under self.lock.

    def _find(self, reference: str) -> _Issue:
        issue = self._issues.get(reference)
        if issue is None:
            issue = next((i for i in self._issues.values() if i.id == reference), None)
        if issue is None:
            raise JiraError(404, [_NOT_FOUND])
        return issue

    def _new_id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    def _author(self) -> dict[str, Any]:
        if self.user is not None:
            return {
                "self": f"{self.url}/rest/api/2/user?accountId={_TOCSIN_ACCOUNT_ID}",
                "accountId": _TOCSIN_ACCOUNT_ID,
                "emailAddress": self.user,
                "displayName": "Tocsin",
                "active": True,
            }
        return {
            "self": f"{self.url}/rest/api/2/user?username=tocsin",
            "name": "tocsin",
            "key": "JIRAUSER10100",
            "displayName": "Tocsin",
            "active": True,
        }

    def _get_issue(self, issue: _Issue, request: ReceivedRequest) -> Reply:
        fields = copy.deepcopy(issue.fields)
        comments = [self._comment_json(issue, c) for c in self._comments if c.issue == issue.key]
        fields["comment"] = {
            "comments": comments,
            "maxResults": len(comments),
            "total": len(comments),
            "startAt": 0,
        }
        fields["attachment"] = [
            self._attachment_json(a) for a in self._attachments if a.issue == issue.key
        ]
        return Reply(
            200,
            {
                "expand": "renderedFields,names,schema,operations,editmeta,changelog",
                "id": issue.id,
                "self": f"{self.url}/rest/api/2/issue/{issue.id}",
                "key": issue.key,
                "fields": fields,
            },
        )

    def _list_comments(self, issue: _Issue, request: ReceivedRequest) -> Reply:
        comments = [self._comment_json(issue, c) for c in self._comments if c.issue == issue.key]
        return Reply(
            200,
            {"startAt": 0, "maxResults": 5000, "total": len(comments), "comments": comments},
        )

    def _add_comment(self, issue: _Issue, request: ReceivedRequest) -> Reply:
        try:
            document = request.json()
        except ValueError:
            raise JiraError(
                400, ["Unexpected character in the request body: it is not JSON."]
            ) from None
        text = document.get("body") if isinstance(document, dict) else None
        if text is not None and not isinstance(text, str):
            raise JiraError(400, [], {"comment": "Comment body must be text (REST API v2)."})
        if not text or not text.strip():
            raise JiraError(400, [], {"comment": "Comment body can not be empty!"})
        comment = JiraComment(self._new_id(), issue.key, text, "Tocsin")
        self._comments.append(comment)
        return Reply(201, self._comment_json(issue, comment))

    def _add_attachments(self, issue: _Issue, request: ReceivedRequest) -> Reply:
        if (request.header("x-atlassian-token") or "").strip().lower() not in (
            "no-check",
            "nocheck",
        ):
            return Reply(403, b"XSRF check failed", {"Content-Type": "text/plain;charset=UTF-8"})
        content_type = request.header("content-type") or ""
        if content_type.split(";")[0].strip().lower() != "multipart/form-data":
            raise JiraError(415, ["Attachments are posted as multipart/form-data."])
        added = []
        for filename, media_type, content in _file_parts(content_type, request.body):
            attachment = JiraAttachment(
                self._new_id(), issue.key, filename, media_type, content, "Tocsin"
            )
            self._attachments.append(attachment)
            added.append(self._attachment_json(attachment))
        if not added:
            raise JiraError(400, ["No file was given: name the multipart field 'file'."])
        return Reply(200, added)

    def _comment_json(self, issue: _Issue, comment: JiraComment) -> dict[str, Any]:
        now = _jira_time()
        return {
            "self": f"{self.url}/rest/api/2/issue/{issue.id}/comment/{comment.id}",
            "id": comment.id,
            "author": self._author(),
            "body": comment.body,
            "updateAuthor": self._author(),
            "created": now,
            "updated": now,
        }

    def _attachment_json(self, attachment: JiraAttachment) -> dict[str, Any]:
        return {
            "self": f"{self.url}/rest/api/2/attachment/{attachment.id}",
            "id": attachment.id,
            "filename": attachment.filename,
            "author": self._author(),
            "created": _jira_time(),
            "size": len(attachment.content),
            "mimeType": attachment.media_type,
            "content": f"{self.url}/secure/attachment/{attachment.id}/{quote(attachment.filename)}",
        }


def _file_parts(content_type: str, body: bytes) -> list[tuple[str, str, bytes]]:
    """(filename, media type, bytes) of every ``file`` part of a multipart/form-data body."""
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise JiraError(400, ["The multipart body could not be read."])
    parts = []
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") != "file":
            continue
        payload = part.get_payload(decode=True)
        filename = part.get_filename() or "attachment"
        # httpx and browsers escape these three characters in form-data file names (HTML5).
        for escaped, character in (("%22", '"'), ("%0D", "\r"), ("%0A", "\n")):
            filename = filename.replace(escaped, character)
        parts.append(
            (
                filename,
                part.get_content_type(),
                payload if isinstance(payload, bytes) else b"",
            )
        )
    return parts


def _jira_time() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}+0000"
