"""A fake of the perimeter firewall's rule API, which ``integrations/firewall.yaml`` declares.

Every request is signed: ``X-Timestamp`` (Unix seconds, at most 300 s from the fake's clock)
and ``X-Signature``, the hex HMAC-SHA256 with the shared key of these lines joined by
``\\n``: the method, the path as sent with ``?query`` if any, the timestamp, and the hex
SHA-256 of the body. A missing, stale or wrong signature answers 401. Errors answer
``{"error": {"code", "message"}}``. Under ``/api/v2``:

``POST /offices/{office_id}/blocks`` with ``{"cidr", "comment"}``
    201 ``{"rule": {"id", "office_id", "cidr", "comment"}}``; 409 with the existing
    ``rule`` when that range is already blocked; 422 for a range that is not a network
    or broader than /16 (the firewall refuses to cut off that much).
``DELETE /offices/{office_id}/blocks/{cidr}`` (the range percent-encoded as one segment)
    200 ``{"removed": true, "rule": {...}}``; 404 when no such block is in place.
``GET /offices/{office_id}/blocks?state=active|all``
    ``{"blocks": [rule...], "count": N}``; ``all`` includes removed ones (``"active": false``).

This is written from the API's description, not from Tocsin's signing code, so that a
mistake there shows as a 401 here.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import unquote

from tocsin.sandbox.fake_service import FakeService, ReceivedRequest, Reply

SANDBOX_FIREWALL_KEY = "firewall-sandbox-hmac-key"
KEY_SECRET = "firewall_hmac_key"
MAX_CLOCK_SKEW_SECONDS = 300
_BLOCKS = re.compile(r"^/api/v2/offices/(?P<office>[^/]+)/blocks(?:/(?P<cidr>[^/]+))?$")


@dataclass
class Rule:
    """One block of an address range."""

    id: str
    office_id: str
    cidr: str
    comment: str
    active: bool = True


def _error(status: int, code: str, message: str) -> Reply:
    return Reply(status, {"error": {"code": code, "message": message}})


class FakeFirewall(FakeService):
    """The firewall's rule API; see the module docstring."""

    name = "fake firewall"

    def __init__(self, *, key: str = SANDBOX_FIREWALL_KEY) -> None:
        super().__init__()
        self.key = key
        self._rules: list[Rule] = []

    def reset(self) -> None:
        with self.lock:
            super().reset()
            self._rules = []

    def __repr__(self) -> str:
        return "FakeFirewall(key=<hidden>)"

    def active_blocks(self, office_id: str | None = None) -> list[str]:
        """The ranges blocked now (of one office, or all)."""
        with self.lock:
            return [
                rule.cidr
                for rule in self._rules
                if rule.active and office_id in (None, rule.office_id)
            ]

    def handle(self, request: ReceivedRequest) -> Reply:
        refused = self._signature_problem(request)
        if refused is not None:
            return _error(401, "bad_signature", refused)
        match = _BLOCKS.match(request.path)
        if match is None:
            return _error(404, "not_found", f"no endpoint at {request.path}")
        office, cidr = unquote(match.group("office")), match.group("cidr")
        with self.lock:
            if cidr is None and request.method == "POST":
                return self._block(office, request)
            if cidr is None and request.method == "GET":
                return self._list(office, request)
            if cidr is not None and request.method == "DELETE":
                return self._unblock(office, unquote(cidr))
        return _error(405, "method_not_allowed", f"{request.method} is not allowed here")

    def _signature_problem(self, request: ReceivedRequest) -> str | None:
        timestamp = request.header("x-timestamp") or ""
        signature = request.header("x-signature") or ""
        if not timestamp.isdigit() or not signature:
            return "X-Timestamp and X-Signature are required"
        if abs(time.time() - int(timestamp)) > MAX_CLOCK_SKEW_SECONDS:
            return "the request's timestamp is too far from now"
        target = request.path + (f"?{request.raw_query}" if request.raw_query else "")
        text = "\n".join(
            [request.method, target, timestamp, hashlib.sha256(request.body).hexdigest()]
        )
        wanted = hmac.new(self.key.encode(), text.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(wanted, signature):
            return "the signature does not match the request"
        return None

    # Routes run under self.lock.

    def _block(self, office: str, request: ReceivedRequest) -> Reply:
        try:
            body = request.json()
        except ValueError:
            return _error(400, "bad_request", "the body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("cidr"), str):
            return _error(400, "bad_request", "body field 'cidr' must be a string")
        try:
            network = ipaddress.ip_network(body["cidr"], strict=True)
        except ValueError:
            return _error(422, "invalid_range", f"{body['cidr']!r} is not a network")
        if network.prefixlen < (16 if network.version == 4 else 48):
            return _error(422, "range_too_broad", f"refusing to block {network}: broader than /16")
        for rule in self._rules:
            if rule.active and rule.cidr == str(network):
                return Reply(
                    409,
                    {
                        "error": {"code": "duplicate", "message": f"{network} is already blocked"},
                        "rule": asdict(rule),
                    },
                )
        rule = Rule(
            f"R-{len(self._rules) + 1:04d}", office, str(network), str(body.get("comment", ""))
        )
        self._rules.append(rule)
        return Reply(201, {"rule": asdict(rule)})

    def _unblock(self, office: str, cidr: str) -> Reply:
        for rule in self._rules:
            if rule.active and rule.office_id == office and rule.cidr == cidr:
                rule.active = False
                return Reply(200, {"removed": True, "rule": asdict(rule)})
        return _error(404, "no_such_block", f"no block of {cidr} for office {office}")

    def _list(self, office: str, request: ReceivedRequest) -> Reply:
        state = (request.query.get("state") or ["active"])[0]
        if state not in ("active", "all"):
            return _error(400, "bad_request", "state is active or all")
        rules: list[dict[str, Any]] = [
            asdict(rule)
            for rule in self._rules
            if rule.office_id == office and (state == "all" or rule.active)
        ]
        return Reply(200, {"blocks": rules, "count": len(rules)})
