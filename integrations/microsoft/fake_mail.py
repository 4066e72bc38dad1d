"""The fake's mail: ``POST /v1.0/users/{id}/sendMail`` and the mailbox's Sent Items, with
Outlook's throttling, for ``GraphMailSender``'s tests and the sandbox.

- ``POST /users/{id or UPN}/sendMail``: the body checked as Graph reads it (``message`` with
  ``subject``, ``body`` {contentType Text|HTML, content}, ``toRecipients``/``ccRecipients``/
  ``bccRecipients`` of ``{"emailAddress": {"address"}}``, ``from``, ``replyTo``,
  ``internetMessageId``, ``internetMessageHeaders``; ``saveToSentItems``), 400 on a
  malformed one; 202 with no body, and the message kept in Sent Items (its
  ``internetMessageId`` given, else one made) unless ``saveToSentItems`` is false. A
  recipient whose domain is in ``FakeMail.invalid_domains``, or no address at all, answers
  400 ``ErrorInvalidRecipients`` with Graph's words (naming the address, as Graph does). A
  token without ``Mail.Send`` answers 403 ``ErrorAccessDenied``; an unknown user 404
  ``ErrorInvalidUser``, a user without a mailbox 404 ``MailboxNotEnabledForRESTAPI``.
- ``GET /users/{id}/mailFolders/{SentItems|sentitems|its id}/messages`` with
  ``$filter=internetMessageId eq '<...>'`` (or none), ``$select``, ``$top``; needs
  ``Mail.ReadBasic.All``, ``Mail.Read`` or ``Mail.ReadWrite``.
- Outlook's limits, per mailbox: more than 4 of these requests in flight at once answer 429
  ``ApplicationThrottled`` "Application is over its MailboxConcurrency limit." with a
  ``Retry-After``; more than ``requests_per_window`` in ``window_seconds`` (10,000 per 10
  minutes) answer 429 until the window has room. ``FakeMicrosoft.throttle_mail`` answers
  the next n ``sendMail`` requests, or every n-th, 429 with a given ``Retry-After`` (a
  fractional one, or none). ``latency_seconds`` holds each request that long, so that
  concurrent requests overlap as they do against Exchange.

``FakeMail.deliveries()`` counts what each recipient received (thread-safe), so that a test
can tell every recipient got a campaign's message exactly once; ``sent()`` gives the
``sendMail`` bodies as received.
"""

from __future__ import annotations

import copy
import re
import time
import uuid
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from tocsin.integrations.microsoft.fake_graph import GraphError, find_user, graph_error_body, need
from tocsin.integrations.microsoft.fake_tenant import Tenant, iso_time, stable_id
from tocsin.sandbox.fake_service import Reply

if TYPE_CHECKING:
    from tocsin.integrations.microsoft.fake import FakeMicrosoft
    from tocsin.integrations.microsoft.fake_identity import IssuedToken

MAILBOX_CONCURRENCY = 4
_SEND = re.compile(r"^/users/([^/]+)/sendMail$")
_SENT_ITEMS = re.compile(r"^/users/([^/]+)/mailFolders/([^/]+)/messages$")
_FILTER = re.compile(r"^\s*internetMessageId eq '((?:[^']|'')*)'\s*$")
_MESSAGE_ID = re.compile(r"^<[^<>@\s]+@[^<>@\s]+>$")
_ADDRESS = re.compile(r"^[^@\s<>]+@([^@\s<>]+\.[^@\s<>]+)$")
_MESSAGE_KEYS = {
    "subject",
    "body",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "from",
    "sender",
    "replyTo",
    "internetMessageId",
    "internetMessageHeaders",
    "importance",
    "attachments",
}


@dataclass
class FakeMail:
    """The mail state of one ``FakeMicrosoft`` (made anew by its ``reset``); guarded by the
    fake's lock."""

    invalid_domains: set[str] = field(default_factory=lambda: {"invalid.example"})
    """Recipients' domains Exchange cannot resolve: 400 ErrorInvalidRecipients."""
    latency_seconds: float = 0.0
    requests_per_window: int = 10_000
    window_seconds: float = 600.0
    sent_items: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Each mailbox's Sent Items (Graph's message objects), by user id."""
    _deliveries: Counter[str] = field(default_factory=Counter)
    _sent: list[dict[str, Any]] = field(default_factory=list)
    _in_flight: Counter[str] = field(default_factory=Counter)
    _peak: Counter[str] = field(default_factory=Counter)
    _window: dict[str, deque[float]] = field(default_factory=dict)
    _throttle_next: int = 0
    _throttle_every: int = 0
    _throttle_retry_after: str | None = "1"
    _send_count: int = 0
    throttled: Counter[str] = field(default_factory=Counter)
    """429s answered, by cause: ``MailboxConcurrency``, ``MailboxRequestLimit``, ``throttle``."""


def mail_route(
    fake: FakeMicrosoft,
    caller: IssuedToken,
    method: str,
    path: str,
    query: Mapping[str, str],
    body: Any,
) -> Reply | None:
    """Answer ``method path`` when it is sendMail or Sent Items; None for any other path."""
    sending = _SEND.match(path) if method == "POST" else None
    listing = _SENT_ITEMS.match(path) if method == "GET" else None
    if sending is None and listing is None:
        return None
    matched = sending or listing
    assert matched is not None
    key = unquote(matched.group(1))
    with fake.lock:
        mailbox = _mailbox_id(fake, key)
        if listing is not None and not _is_sent_items(fake, mailbox, unquote(listing.group(2))):
            return None  # another folder's messages: not this fake's
        limited = _enter(fake, mailbox, is_send=sending is not None)
    if limited is not None:
        return limited
    try:
        if fake.mail.latency_seconds > 0:
            fake._stopping.wait(fake.mail.latency_seconds)
        with fake.lock:
            if sending is not None:
                return _send_mail(fake, caller, key, body)
            return _list_sent_items(fake, caller, key, query)
    except GraphError as error:
        return error.reply()
    finally:
        with fake.lock:
            fake.mail._in_flight[mailbox] -= 1


def _mailbox_id(fake: FakeMicrosoft, key: str) -> str:
    try:
        return str(find_user(fake, key)["id"])
    except GraphError:
        return key.lower()


def _is_sent_items(fake: FakeMicrosoft, mailbox: str, folder: str) -> bool:
    if folder.lower() == "sentitems":
        return True
    return any(
        f["id"] == folder and f["displayName"] == "Sent Items"
        for f in fake.tenant.folders.get(mailbox, [])
    )


def _enter(fake: FakeMicrosoft, mailbox: str, *, is_send: bool) -> Reply | None:
    """Count the request in (in flight, in the window), or the 429 Outlook would answer."""
    mail = fake.mail
    if is_send:
        mail._send_count += 1
        if mail._throttle_next > 0 or (
            mail._throttle_every and mail._send_count % mail._throttle_every == 0
        ):
            mail._throttle_next = max(0, mail._throttle_next - 1)
            mail.throttled["throttle"] += 1
            # Unconfirmed: the code and message of a sendMail 429 other than concurrency.
            return _throttled(
                "ApplicationThrottled",
                "Application is over its MailboxRequestLimit limit.",
                mail._throttle_retry_after,
            )
    now = time.monotonic()
    window = mail._window.setdefault(mailbox, deque())
    while window and window[0] <= now - mail.window_seconds:
        window.popleft()
    if len(window) >= mail.requests_per_window:
        mail.throttled["MailboxRequestLimit"] += 1
        wait = window[0] + mail.window_seconds - now
        # Unconfirmed: the message of the 10,000-per-10-minutes 429, and that its Retry-After
        # counts to the window's room.
        return _throttled(
            "ApplicationThrottled",
            "Application is over its MailboxRequestLimit limit.",
            f"{max(wait, 0.001):.3f}",
        )
    mail._in_flight[mailbox] += 1
    mail._peak[mailbox] = max(mail._peak[mailbox], mail._in_flight[mailbox])
    if mail._in_flight[mailbox] > MAILBOX_CONCURRENCY:
        mail._in_flight[mailbox] -= 1
        mail.throttled["MailboxConcurrency"] += 1
        # Unconfirmed: whether this 429 carries a Retry-After outside $batch, and its value.
        return _throttled(
            "ApplicationThrottled", "Application is over its MailboxConcurrency limit.", "1"
        )
    window.append(now)
    return None


def _throttled(code: str, message: str, retry_after: str | None) -> Reply:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return Reply(429, graph_error_body(code, message), headers)


def _mailbox_user(fake: FakeMicrosoft, key: str) -> dict[str, Any]:
    try:
        user = find_user(fake, key)
    except GraphError:
        # Unconfirmed: sendMail's answer for a user the tenant lacks (Request_ResourceNotFound
        # is the directory's; Outlook is reported to answer ErrorInvalidUser).
        raise GraphError(
            404, "ErrorInvalidUser", f"The requested user '{key}' is invalid."
        ) from None
    if user["id"] not in fake.tenant.rules:
        raise GraphError(
            404,
            "MailboxNotEnabledForRESTAPI",
            "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        )
    return user


def _bad(message: str) -> GraphError:
    # Unconfirmed: the code Graph gives a sendMail body it cannot read (ErrorInvalidRequest
    # or BadRequest, depending on where the payload fails).
    return GraphError(400, "ErrorInvalidRequest", message)


def _recipients(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(f"Property '{name}' must be a collection of recipients.")
    addresses = []
    for recipient in value:
        email = recipient.get("emailAddress") if isinstance(recipient, dict) else None
        address = email.get("address") if isinstance(email, dict) else None
        if not isinstance(address, str):
            raise _bad(f"A recipient in '{name}' has no emailAddress.address.")
        addresses.append(address)
    return addresses


def _send_mail(fake: FakeMicrosoft, caller: IssuedToken, key: str, body: Any) -> Reply:
    need(caller, "mailbox", {"Mail.Send"})
    user = _mailbox_user(fake, key)
    if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
        raise _bad("Empty Payload. JSON content expected.")
    unknown = set(body) - {"message", "saveToSentItems"}
    if unknown:
        raise _bad(f"The property '{sorted(unknown)[0]}' does not exist on type 'sendMail'.")
    save = body.get("saveToSentItems", True)
    if not isinstance(save, bool):
        raise _bad("Property 'saveToSentItems' must be a boolean.")
    message = body["message"]
    unknown = set(message) - _MESSAGE_KEYS
    if unknown:
        raise _bad(
            f"The property '{sorted(unknown)[0]}' does not exist on type 'microsoft.graph.message'."
        )
    content = message.get("body", {"contentType": "Text", "content": ""})
    if (
        not isinstance(content, dict)
        or str(content.get("contentType", "")).lower() not in ("text", "html")
        or not isinstance(content.get("content"), str)
    ):
        raise _bad("Property 'body' must have contentType Text or HTML and a content.")
    if not isinstance(message.get("subject", ""), str):
        raise _bad("Property 'subject' must be a string.")
    message_id = message.get("internetMessageId")
    if message_id is not None and (
        not isinstance(message_id, str) or not _MESSAGE_ID.match(message_id)
    ):
        # Unconfirmed: Graph's code and words for an internetMessageId not in <left@right>.
        raise GraphError(
            400,
            "InvalidInternetMessageId",
            "The internet message id must be in the format <local@domain>.",
        )
    for header in message.get("internetMessageHeaders") or []:
        name = header.get("name") if isinstance(header, dict) else None
        if not isinstance(name, str) or not name.lower().startswith("x-"):
            # Unconfirmed: the wording; that only X- headers are accepted is reported widely.
            raise GraphError(
                400,
                "InvalidInternetMessageHeader",
                f"The internet message header name '{name}' should start with 'x-' or 'X-'.",
            )
    to = _recipients(message.get("toRecipients"), "toRecipients")
    everyone = (
        to
        + _recipients(message.get("ccRecipients"), "ccRecipients")
        + _recipients(message.get("bccRecipients"), "bccRecipients")
    )
    _recipients(message.get("replyTo"), "replyTo")
    if not everyone:
        raise GraphError(
            400,
            "ErrorInvalidRecipients",
            "At least one recipient is not valid., A message can't be sent because it "
            "contains no recipients.",
        )
    for address in everyone:
        domain = _ADDRESS.match(address)
        if domain is None or domain.group(1).lower() in fake.mail.invalid_domains:
            raise GraphError(
                400,
                "ErrorInvalidRecipients",
                f"At least one recipient is not valid., Recipient '{address}' is not resolved. "
                "All recipients must be resolved before a message can be submitted.",
            )
    fake.mail._sent.append(copy.deepcopy(body))
    for address in everyone:
        fake.mail._deliveries[address.lower()] += 1
    if save:
        now = iso_time(datetime.now(UTC))
        sent_folder = next(
            (
                f["id"]
                for f in fake.tenant.folders.get(user["id"], [])
                if f["displayName"] == "Sent Items"
            ),
            "SentItems",
        )
        fake.mail.sent_items.setdefault(user["id"], []).append(
            {
                "id": "AAMkSent" + uuid.uuid4().hex + "=",
                "subject": message.get("subject", ""),
                "internetMessageId": message_id
                or f"<{uuid.uuid4().hex.upper()}@AM0PR01MB0001.eurprd01.prod.outlook.com>",
                "from": copy.deepcopy(message.get("from"))
                or {"emailAddress": {"address": user["mail"], "name": user["displayName"]}},
                "toRecipients": copy.deepcopy(message.get("toRecipients") or []),
                "sentDateTime": now,
                "createdDateTime": now,
                "parentFolderId": sent_folder,
                "isDraft": False,
            }
        )
    return Reply(202)


def _list_sent_items(
    fake: FakeMicrosoft, caller: IssuedToken, key: str, query: Mapping[str, str]
) -> Reply:
    need(caller, "mailbox", {"Mail.ReadBasic.All", "Mail.Read", "Mail.ReadWrite"})
    user = _mailbox_user(fake, key)
    items = fake.mail.sent_items.get(user["id"], [])
    wanted = query.get("$filter")
    if wanted is not None:
        match = _FILTER.match(wanted)
        if match is None:
            raise GraphError(400, "BadRequest", "Invalid filter clause")
        message_id = match.group(1).replace("''", "'")
        items = [item for item in items if item["internetMessageId"] == message_id]
    top = int(query.get("$top", "10"))
    select = query.get("$select")
    names = {n.strip() for n in select.split(",")} | {"id"} if select else None
    page = [
        {k: copy.deepcopy(v) for k, v in item.items() if names is None or k in names}
        for item in items[:top]
    ]
    return Reply(
        200,
        {
            "@odata.context": f"{fake.url}/v1.0/$metadata#users('{user['id']}')/mailFolders('SentItems')/messages",
            "value": page,
        },
    )


# -- what tests look at and set ----------------------------------------------------------------


def deliveries(fake: FakeMicrosoft) -> dict[str, int]:
    """How many messages each recipient (lower case) was sent."""
    with fake.lock:
        return dict(fake.mail._deliveries)


def sent(fake: FakeMicrosoft) -> list[dict[str, Any]]:
    """The ``sendMail`` bodies Graph accepted, as received."""
    with fake.lock:
        return copy.deepcopy(fake.mail._sent)


def peak_in_flight(fake: FakeMicrosoft, mailbox: str) -> int:
    """The most mail requests that were in flight at once for ``mailbox`` (UPN or id)."""
    with fake.lock:
        return fake.mail._peak[_mailbox_id(fake, mailbox)]


def throttle(
    fake: FakeMicrosoft, *, next_n: int = 0, every_n: int = 0, retry_after: str | None = "1"
) -> None:
    with fake.lock:
        fake.mail._throttle_next = next_n
        fake.mail._throttle_every = every_n
        fake.mail._throttle_retry_after = retry_after
        fake.mail._send_count = 0


def add_mailbox(tenant: Tenant, upn: str, display_name: str = "") -> Tenant:
    """``tenant`` with a mailbox (a shared one, signed in by nobody) that mail is sent from."""
    seeded = copy.deepcopy(tenant)
    user_id = stable_id(f"user:{upn}")
    seeded.users.append(
        {
            "id": user_id,
            "displayName": display_name or upn.split("@")[0].title(),
            "userPrincipalName": upn,
            "mail": upn,
            "accountEnabled": False,
            "onPremisesSyncEnabled": None,
            "assignedLicenses": [],
        }
    )
    seeded.rules[user_id] = []
    seeded.folders[user_id] = [
        {
            "id": stable_id(f"folder:{upn}:{name}"),
            "displayName": name,
            "parentFolderId": "AAMkAGRoot=",
            "totalItemCount": 0,
        }
        for name in ("Inbox", "Drafts", "Sent Items", "Deleted Items")
    ]
    return seeded
