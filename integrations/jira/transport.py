"""One call to Jira's REST API: authentication, the 429/503 retries after Jira's
Retry-After, a bounded read of the answer, and Jira's refusals said for the support engineer.

- Jira Cloud: HTTP basic with the account's e-mail (``settings.jira.user``) and an API
  token (secret ``jira_api_token``);
- Jira Data Center: ``Authorization: Bearer`` with a personal access token (the same
  secret), ``settings.jira.user`` left empty.

``JiraTransport`` is the part of ``JiraTickets`` (``client``) that sends; its attributes
are set by ``JiraTickets.__init__``.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from tocsin.errors import IntegrationError
from tocsin.retry_after import retry_after_of

SERVICE = "Jira"
TOKEN_SECRET = "jira_api_token"
RETRIES_WHEN_BUSY = 3
"""How many times a call answered 429 or 503 is sent again, after Jira's Retry-After."""
MAX_RESPONSE_BYTES = 10_000_000
ERROR_EXCERPT_LIMIT = 300


class JiraTransport:
    """Sends one request to the Jira site at ``base_url`` with Tocsin's credentials."""

    base_url: str
    user: str | None
    timeout_seconds: float
    max_retry_wait_seconds: float
    _api_token: str
    _verify: ssl.SSLContext | bool

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
