"""Is a request from Slack? Its signature (v0 HMAC-SHA256 with the app's signing secret,
through slack-sdk's ``SignatureVerifier``), its age, and whether it was seen before.

Seen before by this process: ``SlackRequestCheck`` remembers the signatures it accepted,
a first filter costing nothing. Seen before by any gateway on the journal: the journal
says, by the request's ``request_digest`` (the routes, ``gateway_routes.py``: a click's
digest is unique in the click queue, a command's is claimed as a delivery).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from datetime import timedelta

from slack_sdk.signature import Clock, SignatureVerifier

SIGNING_SECRET = "slack_signing_secret"
SLACK_WINDOW_SECONDS = 300
REPLAYED = "replayed request: this signed request was already received"
"""Why a signed request seen before is refused (401), by this gateway or another."""
REMEMBERED_FOR = timedelta(seconds=2 * SLACK_WINDOW_SECONDS + 60)
"""How long a signed request is remembered: while its timestamp is fresh (5 minutes either
side of the moment it was signed, which is up to 5 minutes either side of its receipt),
plus a minute for the gateways' clocks."""


def request_digest(headers: Mapping[str, str]) -> str:
    """What identifies a signed Slack request: the SHA-256 of its signature, which covers
    its timestamp and body (one valid signature for each). ``headers`` in lower case."""
    signature = headers.get("x-slack-signature", "")
    return hashlib.sha256(b"slack-signature:" + signature.encode("ascii", "replace")).hexdigest()


class _Clock(Clock):
    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now

    def now(self) -> float:
        return self._now()


class SlackRequestCheck:
    """Slack's request signing, plus refusal of a signed request seen before (a replay)."""

    def __init__(self, signing_secret: str, clock: Callable[[], float] = time.time) -> None:
        self.verifier = SignatureVerifier(signing_secret, clock=_Clock(clock))
        self.clock = clock
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def refusal(self, body: bytes, headers: Mapping[str, str]) -> str | None:
        """Why the request is not from Slack (None: it is). ``headers`` in lower case."""
        timestamp = headers.get("x-slack-request-timestamp")
        signature = headers.get("x-slack-signature")
        if not timestamp or not signature:
            return "unsigned request: no X-Slack-Signature or X-Slack-Request-Timestamp header"
        try:
            signed_at = int(timestamp)
        except ValueError:
            # The gateway's own rule for showing what an unauthenticated request claims.
            from tocsin.gateway import claim_text

            return f"malformed X-Slack-Request-Timestamp {claim_text(timestamp[:20])!r}"
        age = self.clock() - signed_at
        if abs(age) > SLACK_WINDOW_SECONDS:
            return (
                f"stale request: signed {int(age)} s ago, outside Slack's 5-minute window "
                "(a replay, or this machine's clock is wrong)"
            )
        if not signature.isascii() or not _is_utf8(body):  # slack-sdk would raise on either
            return "bad signature: not signed with this Slack app's signing secret"
        if not self.verifier.is_valid(body, timestamp, signature):
            return "bad signature: not signed with this Slack app's signing secret"
        with self._lock:
            horizon = self.clock() - 2 * SLACK_WINDOW_SECONDS
            for seen, at in list(self._seen.items()):
                if at < horizon:
                    del self._seen[seen]
            if signature in self._seen:
                return REPLAYED
            self._seen[signature] = signed_at
        return None


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
