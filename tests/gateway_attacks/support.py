"""What the attacks on the gateway share: the module's settings and runbooks, and requests
made by hand (raw bytes, signed Slack and Jira requests, hostile clicks). The fixtures
(a real gateway on loopback, a fake Jira) are in ``conftest.py``."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode, urlsplit

from tests.engine_support import HEAD
from tocsin.gateway import GATEWAY_CHAIN
from tocsin.integrations.jira.fake import (
    SANDBOX_JIRA_WEBHOOK_SECRET,
)
from tocsin.integrations.slack.simulated_user import sign_slack_request
from tocsin.journal import Journal

SIGNING_SECRET = "e3b0c44298fc1c149afbf4c8996fb924"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

FAILING = (
    HEAD
    + """\
steps:
  - id: break_down
    title: A step that fails
    action: test.fail
    with: {{message: "the platform said no"}}
"""
)
PLAIN = (
    HEAD
    + """\
steps:
  - id: first
    title: First step
    action: test.count_idempotent
    with: {{file: "{{{{ inputs.state }}}}/first"}}
"""
)


# -- helpers ------------------------------------------------------------------------------


def raw_exchange(url: str, head: str, parts: Iterable[bytes], timeout: float = 10.0) -> bytes:
    """Send a request as bytes on a plain socket (head, then the body in ``parts``) and return
    what the gateway answers. Fails the test if the gateway does not answer in ``timeout``:
    a gateway that waits for the rest of a body it should not read never answers."""
    where = urlsplit(url)
    with socket.create_connection((where.hostname, where.port), timeout=timeout) as connection:
        connection.sendall(head.encode("latin-1"))
        try:
            for part in parts:
                connection.sendall(part)
        except OSError:  # the gateway answered and closed while we were still sending
            pass
        answer = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = connection.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            answer += chunk
            if b"\r\n\r\n" in answer and answer.rstrip().endswith(b"}"):
                break
    assert answer, f"the gateway did not answer within {timeout} s (it is reading the body?)"
    return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def gateway_records(journal: Journal) -> list[dict[str, Any]]:
    return journal.events_of(GATEWAY_CHAIN)


def signed_slack(body: bytes) -> dict[str, str]:
    return {**sign_slack_request(SIGNING_SECRET, body), **FORM}


def signed_jira(body: bytes, delivery_id: str | None = None) -> dict[str, str]:
    digest = hmac.new(SANDBOX_JIRA_WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Hub-Signature": f"sha256={digest}",
        "X-Atlassian-Webhook-Identifier": delivery_id or os.urandom(8).hex(),
    }


def click_body(value: Any, *, user: Any = None, **payload: Any) -> bytes:
    """A ``block_actions`` payload clicking Approve on a gate button carrying ``value``."""
    document: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": "U0ATTACKER"} if user is None else user,
        "channel": {"id": "C0INCIDENTS"},
        "actions": [
            {
                "action_id": "tocsin_approve",
                "value": value if isinstance(value, str) else json.dumps(value),
            }
        ],
    }
    document.update(payload)
    return urlencode({"payload": json.dumps(document)}).encode()


def start_chain(journal: Journal, ticket: str) -> int:
    """Give ``ticket`` an audit chain, as a run would; the number of records it holds."""
    journal.record(ticket, "run.requested", actor="U0SUPPORT", via="test")
    return len(journal.events_of(ticket))
