"""Is a request from Slack? Its signature (v0 HMAC-SHA256 with the app's signing secret,
through slack-sdk's ``SignatureVerifier``), its age, and whether it was seen before."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from slack_sdk.signature import Clock, SignatureVerifier

SIGNING_SECRET = "slack_signing_secret"
SLACK_WINDOW_SECONDS = 300


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
                return "replayed request: this signed request was already received"
            self._seen[signature] = signed_at
        return None


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
