"""Jira as Tocsin's ticket system (Cloud and Data Center), over REST API v2 with httpx.

REST API v2 (``/rest/api/2/...``) is the version both Cloud and Data Center serve, and
both take a comment body there as wiki markup (v3, Cloud only, wants Atlassian Document
Format). ``comment`` is given plain text, as ``TicketSystem`` says, so it escapes the
markup with ``jira_text`` before sending: a value in a comment can never become a link,
a mention, an image, a table or a heading. Authentication:

- Jira Cloud: HTTP basic with the account's e-mail (``settings.jira.user``) and an API
  token (secret ``jira_api_token``);
- Jira Data Center: ``Authorization: Bearer`` with a personal access token (the same
  secret), ``settings.jira.user`` left empty.

Webhooks registered with a secret (Cloud admin webhooks, Data Center webhooks) carry
``X-Hub-Signature: sha256=<hex HMAC-SHA256 of the raw body>`` and the delivery id in
``X-Atlassian-Webhook-Identifier`` (unchanged when Jira retries a delivery).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import ssl
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from tocsin.errors import ConfigurationError, InputError, IntegrationError
from tocsin.integrations.jira import integration
from tocsin.outbound import path_segment, trusting
from tocsin.retry_after import retry_after_of
from tocsin.settings import SecretStore, Settings
from tocsin.tickets import JIRA_KEYS, TicketTrigger, parse_inputs_text

SERVICE = "Jira"
TOKEN_SECRET = "jira_api_token"
WEBHOOK_SECRET = "jira_webhook_secret"
SIGNATURE_HEADER = "x-hub-signature"
DELIVERY_ID_HEADER = "x-atlassian-webhook-identifier"
"""The header holding a webhook delivery's id; pass its value to ``parse_webhook``."""
RETRIES_WHEN_BUSY = 3
MAX_RESPONSE_BYTES = 10_000_000
"""How many times a call answered 429 or 503 is sent again, after Jira's Retry-After."""
ERROR_EXCERPT_LIMIT = 300

# Markup Jira's renderer opens wherever these stand; a backslash before each makes it text
# (they are among the characters atlassian-renderer un-escapes after a backslash).
_ALWAYS_MARKUP = frozenset("![]{}|")
# Phrase markers (*bold*, _italic_, -struck-, +under+, ^sup^, ~sub~, ??cite??, %) only
# open or close next to a non-letter: between two letters or digits they stay text.
_PHRASE_MARKUP = frozenset("*_-+^~?%@")
# Emoticons: (y) (x) (!) (on) (flag)... and :) ;) :( ;(
_EMOTICON = re.compile(r"\((?=[^\s()]{1,7}\))|(?<=[:;])[()]")
# Markup that only counts at the start of a line and has no backslash escape.
_LINE_START_MARKUP = re.compile(r"^([ \t]*)(h[1-6]\.|bq\.|#)", re.MULTILINE)
_ZERO_WIDTH_SPACE = "\u200b"


def jira_text(value: object) -> str:
    r"""``value`` as literal text in Jira wiki markup (REST API v2 comments and fields).

    Markup characters get a backslash (``[click|http://evil]`` shows as typed,
    ``{noformat}`` closes nothing, ``[~accountid]`` mentions nobody, ``!x.png!`` shows
    no image, ``|`` makes no table), phrase markers too unless they stand inside a word
    (``plain-jira`` stays as it is); a backslash in the value is followed by a zero-width
    space, so it can neither escape Tocsin's next backslash nor make a ``\`` line
    break; ``h1.``, ``bq.`` and ``#`` at a line start get the same invisible space before
    them so they stay text. Line breaks are kept. A bare ``https://`` address is still
    made clickable by Jira, showing its own address.
    """
    text = str(value).replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\\", "\\" + _ZERO_WIDTH_SPACE)
    emoticon = {match.start() for match in _EMOTICON.finditer(text)}
    out: list[str] = []
    for index, char in enumerate(text):
        if char in _ALWAYS_MARKUP or index in emoticon:
            out.append("\\")
        elif char in _PHRASE_MARKUP:
            before = text[index - 1] if index else " "
            after = text[index + 1] if index + 1 < len(text) else " "
            if not (before.isalnum() and after.isalnum()):
                out.append("\\")
        out.append(char)
    return _LINE_START_MARKUP.sub(
        lambda m: m.group(1) + _ZERO_WIDTH_SPACE + m.group(2), "".join(out)
    )


class JiraTickets:
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

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> bool:
        if self._webhook_secret is None:
            return False
        lowered = {name.lower(): value for name, value in headers.items()}
        signature = lowered.get(SIGNATURE_HEADER)
        if not signature:
            return False
        scheme, _, given = signature.strip().partition("=")
        if scheme.lower() != "sha256" or not given:
            return False
        expected = hmac.new(self._webhook_secret.encode("utf-8"), body, hashlib.sha256)
        return hmac.compare_digest(
            expected.hexdigest().encode("ascii"), given.lower().encode("utf-8", "replace")
        )

    def parse_webhook(self, body: bytes, *, delivery_id: str | None = None) -> TicketTrigger:
        """The trigger in a Jira issue webhook; pass the ``X-Atlassian-Webhook-Identifier`` header as ``delivery_id``."""
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise InputError(
                f"the Jira webhook body is not JSON ({exc})", _WEBHOOK_EVENTS_HINT
            ) from None
        if not isinstance(document, dict):
            raise InputError("the Jira webhook body is not a JSON object", _WEBHOOK_EVENTS_HINT)
        event = str(document.get("webhookEvent") or "")
        issue = document.get("issue")
        if not isinstance(issue, dict):
            issue = {}
        key = issue.get("key")
        if not isinstance(key, str) or not key.strip():
            raise InputError(
                f"the Jira webhook ({event or 'no webhookEvent'}) carries no issue key",
                _WEBHOOK_EVENTS_HINT,
            )
        key = key.strip()
        fields = issue.get("fields")
        fields = fields if isinstance(fields, dict) else {}
        summary = fields.get("summary")
        return TicketTrigger(
            ticket=key,
            runbook=self._runbook_of(key, fields.get(self.runbook_field)),
            inputs=self._inputs_of(key, fields.get(self.inputs_field)),
            title=summary if isinstance(summary, str) else "",
            url=self.ticket_url(key),
            requested_by=_requested_by(document.get("user")),
            event=event,
            delivery_id=delivery_id or None,
            requester_email=_requester_email(document.get("user")),
            issue_type=_issue_type(fields.get("issuetype")),
        )

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

    # -- internals -------------------------------------------------------------

    def _runbook_of(self, ticket: str, value: Any) -> str:
        # A text field holds a string; a select list an option {"value": ...}.
        if isinstance(value, list):
            if len(value) > 1:
                raise InputError(
                    f"ticket {ticket} names {len(value)} runbooks in field {self.runbook_field}",
                    "choose exactly one runbook in the ticket",
                )
            value = value[0] if value else None
        if isinstance(value, dict):
            value = value.get("value", value.get("name"))
        if value is None:
            return ""
        if not isinstance(value, str):
            raise InputError(
                f"ticket {ticket}: field {self.runbook_field} holds {type(value).__name__}, "
                "not a runbook name",
                "settings.jira.runbook_field must name a text or select-list field",
            )
        return value.strip()

    def _inputs_of(self, ticket: str, value: Any) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, str):
            raise InputError(
                f"ticket {ticket}: field {self.inputs_field} holds {type(value).__name__}, "
                "not text",
                "settings.jira.inputs_field must name a multi-line text field",
            )
        try:
            return parse_inputs_text(value)
        except InputError as exc:
            raise InputError(
                f"ticket {ticket}, field {self.inputs_field}: {exc.message}", exc.hint
            ) from None

    def _authorization(self) -> dict[str, str] | httpx.BasicAuth:
        if self.user is not None:
            return httpx.BasicAuth(self.user, self._api_token)
        return {"Authorization": f"Bearer {self._api_token}"}

    def _call(
        self,
        action: str,
        ticket: str,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request, waiting out 429/503 up to ``RETRIES_WHEN_BUSY`` times."""
        url = self.base_url + path
        sent_headers = {"Accept": "application/json", **(headers or {})}
        authorization = self._authorization()
        auth = authorization if isinstance(authorization, httpx.BasicAuth) else None
        if isinstance(authorization, dict):
            sent_headers.update(authorization)
        for attempt in range(RETRIES_WHEN_BUSY + 1):
            try:
                with (
                    httpx.Client(timeout=self.timeout_seconds, verify=self._verify) as client,
                    client.stream(
                        method, url, json=json_body, files=files, headers=sent_headers, auth=auth
                    ) as streamed,
                ):
                    response = _bounded(streamed, action, url)
            except httpx.TimeoutException:
                raise IntegrationError(
                    action,
                    SERVICE,
                    f"did not answer {method} {url} within {self.timeout_seconds:g} s",
                    "retry later; if Jira is slow for everyone, raise http_timeout_seconds",
                    retryable=True,
                ) from None
            except httpx.HTTPError as exc:
                reason = self._redacted(str(exc) or type(exc).__name__)
                raise IntegrationError(
                    action,
                    SERVICE,
                    f"cannot be reached at {self.base_url} ({reason})",
                    "check settings.jira.url (TOCSIN_JIRA__URL) and that the site is up; "
                    "the call can be retried",
                    retryable=True,
                ) from None
            if response.status_code not in (429, 503) or attempt == RETRIES_WHEN_BUSY:
                break
            time.sleep(self._wait_before_retry(response, attempt))
        if not response.is_success:
            raise self._refusal(action, ticket, method, url, response)
        return response

    def _wait_before_retry(self, response: httpx.Response, attempt: int) -> float:
        """Jira's Retry-After (seconds or an HTTP date), else 1, 2, 4 s; capped."""
        wait = float(2**attempt)
        value = response.headers.get("retry-after", "").strip()
        if value:
            try:
                wait = float(value)
            except ValueError:
                try:
                    wait = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
                except (TypeError, ValueError):
                    pass  # unreadable: keep the back-off
        return min(max(wait, 0.0), self.max_retry_wait_seconds)

    def _refusal(
        self, action: str, ticket: str, method: str, url: str, response: httpx.Response
    ) -> IntegrationError:
        status = response.status_code
        said = self._redacted(_error_text(response))
        detail = f": {said}" if said else ""
        permission = {
            "jira.comment": "Add comments",
            "jira.attach": "Create attachments",
        }.get(action, "Browse projects")
        if status == 401:
            return IntegrationError(
                action,
                SERVICE,
                f"refused Tocsin's credentials (401) for {method} {url}",
                _token_hint(self.user, "check"),
                status_code=status,
            )
        if status == 403:
            return IntegrationError(
                action,
                SERVICE,
                f"refused {method} {url} (403){detail}",
                f"the Tocsin account ({self._account()}) needs the project permission "
                f"'{permission}' in {ticket}'s project; {_token_hint(self.user, 'check')}",
                status_code=status,
            )
        if status == 404:
            return IntegrationError(
                action,
                SERVICE,
                f"answered 404: ticket {ticket} does not exist or the Tocsin account cannot see it",
                f"check the ticket key, and that {self._account()} has 'Browse projects' "
                f"in {ticket}'s project",
                status_code=status,
            )
        if status == 413:
            return IntegrationError(
                action,
                SERVICE,
                f"refused the file for {ticket} as too large (413)",
                "the site's attachment size limit is lower than the file; "
                "ask a Jira admin to raise it, or share the file another way",
                status_code=status,
            )
        if status in (429, 503):
            return IntegrationError(
                action,
                SERVICE,
                f"was still busy ({status}) after {RETRIES_WHEN_BUSY} retries of {method} {url}",
                "Jira is rate limiting or unavailable; retry later",
                status_code=status,
                retryable=True,
                unapplied=True,  # 429 and 503: refused before acting
                retry_after=retry_after_of(response.headers),
            )
        if status >= 500:
            return IntegrationError(
                action,
                SERVICE,
                f"failed on {method} {url} ({status}){detail}",
                "Jira had an internal error; retry later",
                status_code=status,
                retryable=True,
            )
        return IntegrationError(
            action,
            SERVICE,
            f"refused {method} {url} ({status}){detail}",
            "Jira's message above says what it refused",
            status_code=status,
        )

    def _account(self) -> str:
        return self.user if self.user else "the owner of the personal access token"

    def _redacted(self, text: str) -> str:
        return text.replace(self._api_token, "<hidden>")


_WEBHOOK_EVENTS_HINT = (
    "Tocsin reads the JSON Jira sends for issue events; register the webhook in Jira for "
    "'Issue created' / 'Issue updated' events only"
)


def _token_hint(user: str | None, verb: str) -> str:
    if user:
        return (
            f"{verb} the secret {TOKEN_SECRET!r} (TOCSIN_SECRET_{TOKEN_SECRET.upper()}): on Jira "
            f"Cloud it must be an API token of the Atlassian account {user} (settings.jira.user), "
            "created at id.atlassian.com > Security > API tokens"
        )
    return (
        f"{verb} the secret {TOKEN_SECRET!r} (TOCSIN_SECRET_{TOKEN_SECRET.upper()}): on Jira "
        "Data Center it must be a personal access token of the Tocsin account (Profile > "
        "Personal Access Tokens); for Jira Cloud, also set settings.jira.user to the account's e-mail"
    )


def _issue_path(ticket: str) -> str:
    return f"/rest/api/2/issue/{path_segment(ticket, what='the ticket key')}"


def _bounded(streamed: httpx.Response, action: str, url: str) -> httpx.Response:
    """The response read into memory, refused past ``MAX_RESPONSE_BYTES`` (a Jira answer is
    a few kilobytes; a hostile or broken one must not fill the memory)."""
    announced = streamed.headers.get("content-length", "")
    too_large = IntegrationError(
        action,
        SERVICE,
        f"answered {url} with more than {MAX_RESPONSE_BYTES // 1_000_000} MB; nothing was read past that",
        "check settings.jira.url points at Jira itself",
    )
    if announced.isdigit() and int(announced) > MAX_RESPONSE_BYTES:
        raise too_large
    body = bytearray()
    for chunk in streamed.iter_bytes():
        body += chunk
        if len(body) > MAX_RESPONSE_BYTES:
            raise too_large
    return httpx.Response(
        streamed.status_code,
        headers=[
            (name, value)
            for name, value in streamed.headers.multi_items()
            if name.lower() not in ("content-encoding", "content-length")  # read decoded
        ],
        content=bytes(body),
        request=streamed.request,
    )


def _json(response: httpx.Response, action: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise IntegrationError(
            action,
            SERVICE,
            f"answered {response.status_code} without JSON to {response.request.method} "
            f"{response.request.url}",
            "check settings.jira.url: it must be the site's base URL, not a proxy or login page",
        ) from None


def _id_of(document: Any, action: str, what: str) -> str:
    identifier = document.get("id") if isinstance(document, dict) else None
    if identifier is None or identifier == "":
        raise IntegrationError(action, SERVICE, f"answered a {what} without an id")
    return str(identifier)


def _error_text(response: httpx.Response) -> str:
    """Jira's ``errorMessages`` and ``errors``, else the start of the body, on one line."""
    try:
        document = response.json()
    except ValueError:
        document = None
    if isinstance(document, dict):
        messages = [str(m) for m in document.get("errorMessages") or []]
        errors = document.get("errors")
        if isinstance(errors, dict):
            messages += [f"{field}: {message}" for field, message in errors.items()]
        if not messages and document.get("message"):
            messages.append(str(document["message"]))
        text = "; ".join(messages)
    else:
        text = response.text
    text = " ".join(text.split())
    return text if len(text) <= ERROR_EXCERPT_LIMIT else text[: ERROR_EXCERPT_LIMIT - 3] + "..."


def _requester_email(user: Any) -> str:
    # Jira Cloud shares it only when the user's profile visibility allows; Data Center does.
    email = user.get("emailAddress") if isinstance(user, dict) else None
    return email.strip() if isinstance(email, str) and "@" in email else ""


def _issue_type(value: Any) -> str:
    name = value.get("name") if isinstance(value, dict) else None
    return name.strip()[:64] if isinstance(name, str) else ""


def _requested_by(user: Any) -> str:
    if isinstance(user, dict):
        for key in ("displayName", "accountId", "name", "key"):
            value = user.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
    return "unknown Jira user"
