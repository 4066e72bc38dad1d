"""Sending a campaign's mail through Microsoft Graph: ``GraphMailSender``, the ``graph``
``tocsin.mail.MailSender`` (``notify.transport = graph``), from the one mailbox
``microsoft.mail_sender`` names.

Each message is one ``POST /users/{sender}/sendMail`` (202, no body: accepted, not yet
delivered), with ``saveToSentItems`` so that ``reconcile`` can later find it in Sent Items
by its ``internetMessageId`` (the campaign's ``OutgoingMail.message_id``).

Throttling is the campaign's to schedule, not this sender's to sleep on. Outlook allows 4
requests in flight per app and mailbox (``concurrency``; a semaphore here keeps any number
of calling threads within it) and 10,000 per 10 minutes; a 429 or 503 on ``sendMail``
comes back at once as ``SendResult(RETRY, retry_after=<its Retry-After>)`` (None when
Graph gave none), where ``MicrosoftApi.send`` would wait up to
``microsoft.max_retry_wait_seconds`` inside: a worker asleep in here would hold one of the
mailbox's 4 slots and hide the throttling from the campaign's pace, its progress and its
report. ``check`` and ``reconcile`` are single look-ups and keep the client's bounded waits.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from tocsin.errors import ConfigurationError, IntegrationError
from tocsin.integrations.microsoft import SERVICE, integration
from tocsin.integrations.microsoft.client import Graph
from tocsin.integrations.microsoft.graph_errors import _CONSENT_PLACE, missing_permission
from tocsin.integrations.microsoft.permissions import Needed
from tocsin.integrations.microsoft.response import GraphResponse
from tocsin.integrations.microsoft.throttling import retry_after_seconds
from tocsin.integrations.microsoft.tokens import MicrosoftCredentials, token_roles
from tocsin.mail import OutgoingMail, SendOutcome, SendResult

if TYPE_CHECKING:
    from tocsin.integrations.microsoft.settings import MicrosoftSettings
    from tocsin.settings import SecretStore, Settings

__all__ = ["MAILBOX_CONCURRENCY", "MAIL_SEND", "GraphMailSender", "graph_mail_sender"]

ACTION = "notify (Microsoft Graph sendMail)"
"""How errors name what was being done."""
MAILBOX_CONCURRENCY = 4
"""Outlook's concurrent requests per app and mailbox (its MailboxConcurrency limit)."""
MAIL_SEND = Needed(
    ("Mail.Send",),
    note="Mail.Send as an application permission lets the app send as any mailbox of the "
    "tenant: an Exchange administrator scopes it to the sending mailbox with an application "
    "access policy (New-ApplicationAccessPolicy -AccessRight RestrictAccess) or RBAC for "
    "Applications, and a mailbox outside that scope is refused the same way",
)
SENT_ITEMS_READ = Needed(("Mail.ReadBasic.All",), also=("Mail.Read",))
_ADDRESS = re.compile(r"[^\s'\"<>(),;:]+@[^\s'\"<>(),;:]+")


class _Throttled(Exception):
    """Graph answered 429 or 503: hand it back to the campaign instead of waiting."""

    def __init__(self, response: GraphResponse) -> None:
        super().__init__(response.status)
        self.response = response


class _SendMailGraph(Graph):
    """Graph whose throttled answers are raised at once (``_Throttled``), never slept on."""

    def _wait_before_retry(
        self, method: str, url: str, response: GraphResponse, attempt: int
    ) -> None:
        raise _Throttled(response)


def graph_message(mail: OutgoingMail, sender: str) -> dict[str, Any]:
    """The ``sendMail`` body for ``mail``: one recipient, HTML when the mail has it (Graph
    carries one body; the text part goes only when there is no HTML), from the mailbox."""
    message: dict[str, Any] = {
        "subject": mail.subject,
        "body": {"contentType": "HTML", "content": mail.html}
        if mail.html
        else {"contentType": "Text", "content": mail.text},
        "toRecipients": [{"emailAddress": {"address": mail.to}}],
        "from": {"emailAddress": _named(sender, mail.from_name)},
        "internetMessageId": mail.message_id,
    }
    if mail.reply_to:
        message["replyTo"] = [{"emailAddress": {"address": mail.reply_to}}]
    # Graph takes only custom headers (X-...) as internetMessageHeaders; the others it sets.
    custom = [
        {"name": name, "value": value}
        for name, value in mail.headers.items()
        if name.lower().startswith("x-")
    ]
    if custom:
        message["internetMessageHeaders"] = custom
    return {"message": message, "saveToSentItems": True}


def _named(address: str, name: str) -> dict[str, str]:
    return {"address": address, "name": name} if name else {"address": address}


def _without_addresses(text: str) -> str:
    """Graph's words with every e-mail address replaced (they name the recipient)."""
    return _ADDRESS.sub("<recipient>", text)


def _odata_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class GraphMailSender:
    """Microsoft Graph ``sendMail`` from one mailbox, at most 4 requests at a time."""

    name = "graph"
    concurrency = MAILBOX_CONCURRENCY
    can_reconcile = True

    def __init__(
        self,
        credentials: MicrosoftCredentials,
        settings: MicrosoftSettings,
        sender: str,
        *,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.sender = sender
        self._credentials = credentials
        options: dict[str, Any] = {} if sleep is None else {"sleep": sleep}
        self._mail = _SendMailGraph(credentials, settings, ACTION, **options)
        self._graph = Graph(credentials, settings, ACTION, **options)
        # Every request on the mailbox (sending and reading Sent Items) takes a slot.
        self._slots = threading.BoundedSemaphore(MAILBOX_CONCURRENCY)

    def describe(self) -> str:
        return f"Microsoft Graph sendMail from {self.sender} ({self.concurrency} at a time)"

    # -- before a campaign -----------------------------------------------------------------

    def check(self) -> None:
        """Read the mailbox and its Sent Items and look for Mail.Send in the app's token,
        sending nothing; an ``IntegrationError`` naming the permission or the mailbox."""
        with self._slots:
            self._graph.call(
                "GET",
                "/users/{user}",
                query={"$select": "id,mail"},
                what=f"read the sending mailbox {self.sender}",
                user=self.sender,
            )
            self._graph.call(
                "GET",
                "/users/{user}/mailFolders/SentItems/messages",
                query={"$select": "id,internetMessageId", "$top": 1},
                what=f"read the Sent Items of {self.sender}",
                user=self.sender,
            )
        roles = token_roles(self._graph.token())
        if roles and "Mail.Send" not in roles:
            raise self._refused(f"send mail from {self.sender}", "its token lacks it", roles)

    # -- one message -------------------------------------------------------------------------

    def send(self, mail: OutgoingMail, committing: Callable[[], None]) -> SendResult:
        """One ``sendMail``; ``committing()`` right before the POST (see the module docstring
        for throttling). A refused permission or token raises: no message would go."""
        body = graph_message(mail, self.sender)
        url = self._mail.url("/users/{user}/sendMail", user=self.sender)
        with self._slots:
            try:
                self._mail.token()  # signed in before committing: a sign-in failure sends nothing
            except IntegrationError as error:
                if error.retryable:
                    return SendResult(SendOutcome.RETRY, error.message)
                raise
            committing()
            try:
                response = self._mail.send("POST", url, json_body=body)
            except _Throttled as throttled:
                return self._retry(throttled.response)
            except IntegrationError as error:
                if error.retryable:  # a timeout or a dropped connection: it may have left
                    return SendResult(SendOutcome.UNCONFIRMED, error.message)
                raise
        return self._outcome(url, response)

    def _outcome(self, url: str, response: GraphResponse) -> SendResult:
        status = response.status
        if status == 202 or 200 <= status < 300:
            return SendResult(SendOutcome.SENT, f"{status} accepted")
        said = _without_addresses(
            f"{response.error_code}: {response.error_message}"
            if response.error_code
            else f"HTTP {status}"
        )
        if status == 401:
            raise IntegrationError(
                ACTION,
                SERVICE,
                f"refused Tocsin's token for sending mail from {self.sender} ({said})",
                "check that TOCSIN_MICROSOFT__GRAPH_URL and TOCSIN_MICROSOFT__AUTHORITY_HOST "
                "are of the same cloud, that the app registration is enabled, and that it has "
                "the application permission Mail.Send",
                status_code=status,
            )
        if status == 403:
            raise self._refused(
                f"send mail from {self.sender}", said, token_roles(self._mail.token())
            )
        if status == 404 or response.error_code in (
            "ErrorInvalidUser",
            "MailboxNotEnabledForRESTAPI",
        ):
            # The sending mailbox, not this recipient: every message would fail the same way.
            raise IntegrationError(
                ACTION,
                SERVICE,
                f"cannot send from {self.sender}: no such mailbox ({said})",
                "set TOCSIN_MICROSOFT__MAIL_SENDER to the sign-in address of a mailbox of this "
                "tenant (a licensed user or a shared mailbox in Exchange Online)",
                status_code=status,
            )
        if status in (408, 504) or status >= 500:
            return SendResult(SendOutcome.RETRY, f"{status} {said}")
        return SendResult(SendOutcome.REFUSED, f"{status} {said}")

    def _retry(self, response: GraphResponse) -> SendResult:
        said = response.error_message or response.error_code or "throttled"
        asked = retry_after_seconds(response.headers.get("retry-after"))
        return SendResult(
            SendOutcome.RETRY,
            f"{response.status} {response.error_code or 'throttled'}: {said}".strip(),
            retry_after=asked,
        )

    def _refused(self, doing: str, said: str, granted: list[str]) -> IntegrationError:
        text, hint = missing_permission(
            doing,
            said,
            MAIL_SEND,
            granted,
            self._credentials.client_id,
            grant_place=_CONSENT_PLACE,
        )
        return IntegrationError(ACTION, SERVICE, text, hint, status_code=403)

    # -- after a crash -----------------------------------------------------------------------

    def reconcile(self, mail: OutgoingMail) -> bool | None:
        """Whether Sent Items holds a message with ``mail.message_id``: True, False once
        Graph has answered the listing, None when it could not be asked."""
        with self._slots:
            try:
                response = self._graph.send(
                    "GET",
                    self._graph.url(
                        "/users/{user}/mailFolders/SentItems/messages", user=self.sender
                    ),
                    query={
                        "$filter": f"internetMessageId eq {_odata_string(mail.message_id)}",
                        "$select": "id,internetMessageId",
                        "$top": 1,
                    },
                )
            except IntegrationError:
                return None
        if response.status != 200 or not isinstance(response.body, Mapping):
            return None
        found = response.body.get("value")
        if not isinstance(found, list):
            return None
        return any(
            isinstance(item, Mapping) and item.get("internetMessageId") == mail.message_id
            for item in found
        )

    def close(self) -> None:
        """Nothing is held open: each request has its own connection, msal its token cache."""


def graph_mail_sender(settings: Settings, secrets: SecretStore) -> GraphMailSender:
    """The ``graph`` sender of ``Integration.mail_senders``: from ``microsoft.mail_sender``."""
    microsoft = integration.settings_of(settings)
    if not microsoft.mail_sender:
        raise ConfigurationError(
            "mail cannot be sent through Microsoft Graph: no sending mailbox is set",
            "set TOCSIN_MICROSOFT__MAIL_SENDER to the sign-in address of the mailbox campaigns "
            "are sent from (notices@your-office.example), whose app has the application "
            "permission Mail.Send",
        )
    credentials = MicrosoftCredentials.from_secrets(settings, secrets)
    return GraphMailSender(credentials, microsoft, microsoft.mail_sender)
