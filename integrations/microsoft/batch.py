"""Graph's ``$batch``: at most 20 requests per batch; each item's outcome is reported on
its own (an outer 200 proves nothing), and items throttled inside a batch are sent again
within the same bounds as one request (``throttling``).

Graph runs a batch's requests concurrently unless ``dependsOn`` sequences them, and Outlook
answers 429 ``ApplicationThrottled`` ("Application is over its MailboxConcurrency limit")
above 4 concurrent requests per app and mailbox. So a batch holds at most 4 requests for
one mailbox; the others go in the next batch, sent once this one has answered. Splitting,
rather than chaining with ``dependsOn``: Graph takes a batch fully sequential or fully
parallel, and in a chain one failed item (a rule already gone: 404) fails every later one
with 424.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from tocsin.errors import IntegrationError
from tocsin.integrations.microsoft.response import GraphResponse
from tocsin.integrations.microsoft.throttling import (
    RETRIED_STATUSES,
    backoff_seconds,
    retry_after_seconds,
)

if TYPE_CHECKING:
    from tocsin.integrations.microsoft.client import Graph

BATCH_LIMIT = 20
"""Graph's limit of requests in one ``$batch``."""
MAILBOX_CONCURRENCY = 4
"""Outlook's limit of concurrent requests per app and mailbox (its MailboxConcurrency)."""
_OUTLOOK_PATH = re.compile(
    r"^/users/([^/?]+)/(mailFolders|messages|mailboxSettings|events|calendars?|calendarView|"
    r"contacts|contactFolders|inferenceClassification|outlook)(?:[/?]|$)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class BatchItem:
    """One request of a ``$batch``: ``url`` is relative to the version (``/users/{id}``)."""

    id: str
    method: str
    url: str
    body: Any = None


@dataclass(frozen=True)
class BatchOutcome:
    """What became of one item of a ``$batch``; ``error`` says why when it failed."""

    id: str
    method: str
    url: str
    status: int
    body: Any
    error: IntegrationError | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def mailbox_of(item: BatchItem) -> str | None:
    """The mailbox (its user, as the URL names them) an Outlook request touches; None when
    the request is not Outlook's (the directory, sign-in methods, consents...)."""
    match = _OUTLOOK_PATH.match(item.url)
    return unquote(match.group(1)).lower() if match else None


def batches(items: Sequence[BatchItem]) -> list[list[BatchItem]]:
    """``items`` in batches of at most 20, each with at most 4 requests for one mailbox; in
    the given order, an item going to the first batch with room for it."""
    grouped: list[list[BatchItem]] = []
    per_mailbox: list[dict[str, int]] = []
    for item in items:
        mailbox = mailbox_of(item)
        for batch, counts in zip(grouped, per_mailbox, strict=True):
            if len(batch) < BATCH_LIMIT and (
                mailbox is None or counts.get(mailbox, 0) < MAILBOX_CONCURRENCY
            ):
                break
        else:
            batch, counts = [], {}
            grouped.append(batch)
            per_mailbox.append(counts)
        batch.append(item)
        if mailbox is not None:
            counts[mailbox] = counts.get(mailbox, 0) + 1
    return grouped


def send_batches(graph: Graph, items: Sequence[BatchItem], *, what: str = "") -> list[BatchOutcome]:
    """Send ``items`` in ``$batch`` requests of at most 20 (at most 4 for one mailbox: ``batches``);
    one outcome per item, in order.

    Items throttled inside a batch (their own 429) are sent again in the next batch after
    the longest Retry-After among them, within the same bounds as ``Graph.send``.
    """
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError("batch item ids must be unique")
    settings = graph.settings
    outcomes: dict[str, BatchOutcome] = {}
    for batch in batches(items):
        pending = list(batch)
        attempt = 0
        while pending:
            answered = _one_batch(graph, pending)
            throttled = [item for item in pending if answered[item.id].status in RETRIED_STATUSES]
            for item in pending:
                if item not in throttled or attempt >= settings.max_retries:
                    outcomes[item.id] = _outcome(graph, item, answered[item.id], what)
            pending = throttled if attempt < settings.max_retries else []
            if pending:
                waits = [
                    retry_after_seconds(answered[item.id].headers.get("retry-after"))
                    for item in pending
                ]
                asked = max((w for w in waits if w is not None), default=None)
                limit = settings.max_retry_wait_seconds
                if asked is not None and asked > limit:
                    for item in pending:
                        outcomes[item.id] = _outcome(graph, item, answered[item.id], what)
                    break
                graph.sleep(asked if asked is not None else backoff_seconds(attempt, limit))
                attempt += 1
    return [outcomes[item.id] for item in items]


def _one_batch(graph: Graph, items: Sequence[BatchItem]) -> dict[str, GraphResponse]:
    requests: list[dict[str, Any]] = []
    for item in items:
        request: dict[str, Any] = {"id": item.id, "method": item.method, "url": item.url}
        if item.body is not None:
            request["body"] = item.body
            request["headers"] = {"Content-Type": "application/json"}
        requests.append(request)
    url = graph.url("/$batch")
    response = graph.send("POST", url, json_body={"requests": requests})
    if response.status >= 400:
        raise graph.error("POST", url, response, "a $batch request")
    answered: dict[str, GraphResponse] = {}
    body = response.body if isinstance(response.body, dict) else {}
    for entry in body.get("responses") or []:
        if not isinstance(entry, dict) or str(entry.get("id")) not in {i.id for i in items}:
            continue
        headers = entry.get("headers") if isinstance(entry.get("headers"), dict) else {}
        answered[str(entry["id"])] = GraphResponse(
            int(entry.get("status", 500)),
            entry.get("body"),
            {str(k).lower(): str(v) for k, v in (headers or {}).items()},
        )
    for item in items:
        answered.setdefault(
            item.id,
            GraphResponse(
                500, {"error": {"code": "missing", "message": "no response in the batch"}}
            ),
        )
    return answered


def _outcome(graph: Graph, item: BatchItem, response: GraphResponse, what: str) -> BatchOutcome:
    error = None
    if response.status >= 400:
        error = graph.error(item.method, graph.base_url + item.url, response, what)
    return BatchOutcome(item.id, item.method, item.url, response.status, response.body, error)
