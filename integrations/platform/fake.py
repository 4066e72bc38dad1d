"""A fake of the broker-software provider's platform API, which Tocsin drives with ``http.request``.

The provider's procedure when an office is hacked (see ``shared/sources``, dossier §5.1):
disconnect the office from the network, revoke the local certificates of its devices and
the passwords of its accounts, issue new certificates and accesses, then reconnect. The
provider publishes no API for it; this is the one Tocsin's runbooks assume, and the
contract a real adapter must meet.

Every call needs ``Authorization: Bearer <token>`` (else HTTP 401). Bodies and answers are
JSON; an error answers ``{"error": "<sentence>"}``. Under ``/api/v1``:

``GET /offices/{office_id}``
    ``{"id", "name", "status": "connected"|"disconnected", "open_sessions",
    "devices": [{"id", "certificate_serial", "certificate_status": "active"|"revoked"}],
    "accounts": [{"id", "login", "credentials_status": "active"|"revoked"}]}``
``POST /offices/{office_id}/disconnect`` with ``{"reason", "ticket"}``
    closes the office's sessions: ``{"office_id", "status": "disconnected",
    "sessions_closed": N}``. Idempotent (a second call closes 0).
``POST /offices/{office_id}/certificates/revoke``
    revokes every active device certificate: ``{"revoked": [serials]}`` (empty when none).
``POST /offices/{office_id}/credentials/revoke``
    revokes every account's password: ``{"accounts_reset": N}`` (accounts changed).
``POST /offices/{office_id}/certificates/issue`` with ``{"devices": [device ids]}``
    gives each device a new active certificate: ``{"issued": [{"device", "certificate_serial"}]}``;
    an unknown device answers 422.
``POST /offices/{office_id}/reconnect``
    409 while any device still has a revoked certificate and no new one; else
    ``{"office_id", "status": "connected"}``.

An unknown office answers 404, an unknown path 404, a wrong verb 405, a malformed
body 400. ``fail_next(k)`` (from ``FakeService``) makes the next k calls answer 503.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from tocsin.sandbox.fake_service import FakeService, ReceivedRequest, Reply

SANDBOX_PLATFORM_TOKEN = "platform-sandbox-token"
"""The token the sandbox's FakePlatform accepts unless told otherwise."""
TOKEN_SECRET = "platform_api_token"
"""The secret runbooks name to send the platform's token (``bearer_token_secret``)."""


@dataclass(frozen=True)
class Device:
    """A workstation of an office, authenticated to the platform by a certificate."""

    id: str
    certificate_serial: str
    certificate_status: Literal["active", "revoked"] = "active"


@dataclass(frozen=True)
class Account:
    """A person's access to the platform."""

    id: str
    login: str
    credentials_status: Literal["active", "revoked"] = "active"


@dataclass
class Office:
    """A broker office as the platform knows it."""

    id: str
    name: str
    devices: list[Device] = field(default_factory=list)
    accounts: list[Account] = field(default_factory=list)
    status: Literal["connected", "disconnected"] = "connected"
    open_sessions: int = 0


class PlatformError(Exception):
    """Raised by a route to answer ``status`` with ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


Route = Callable[["FakePlatform", Office, ReceivedRequest], dict[str, Any]]
_OFFICE_PATH = re.compile(r"^/api/v1/offices/(?P<office>[^/]+)(?P<rest>(?:/[^/]+)*)$")


class FakePlatform(FakeService):
    """The provider's platform API over offices seeded by the caller; see the module docstring."""

    name = "fake platform"

    def __init__(
        self, *, token: str = SANDBOX_PLATFORM_TOKEN, offices: Iterable[Office] = ()
    ) -> None:
        super().__init__()
        self.token = token
        self._seed = {office.id: copy.deepcopy(office) for office in offices}
        self._offices: dict[str, Office] = {}
        self._serials = 0
        self.reset()

    def reset(self) -> None:
        """Back to the seeded offices, with no requests or faults recorded."""
        with self.lock:
            super().reset()
            self._offices = copy.deepcopy(self._seed)
            self._serials = 0

    def office(self, office_id: str) -> Office:
        """A copy of an office's current state (``KeyError`` when unknown)."""
        with self.lock:
            return copy.deepcopy(self._offices[office_id])

    def __repr__(self) -> str:
        return f"FakePlatform(offices={sorted(self._seed)}, token=<hidden>)"

    # -- HTTP ----------------------------------------------------------------

    def handle(self, request: ReceivedRequest) -> Reply:
        if request.bearer_token() != self.token:
            return Reply(
                401,
                {"error": "missing or wrong bearer token"},
                {"WWW-Authenticate": 'Bearer realm="platform"'},
            )
        match = _OFFICE_PATH.match(request.path)
        routes = _ROUTES.get(match.group("rest")) if match else None
        if match is None or routes is None:
            return Reply(404, {"error": f"no endpoint at {request.path}"})
        route = routes.get(request.method)
        if route is None:
            allowed = ", ".join(sorted(routes))
            return Reply(405, {"error": f"use {allowed} on {request.path}"}, {"Allow": allowed})
        try:
            with self.lock:
                office = self._offices.get(match.group("office"))
                if office is None:
                    raise PlatformError(404, f"no office {match.group('office')!r}")
                return Reply(200, route(self, office, request))
        except PlatformError as error:
            return Reply(error.status, {"error": error.message})

    def _new_serial(self) -> str:
        self._serials += 1
        return f"CERT-NEW-{self._serials:04d}"

    # Routes run under self.lock.

    def _get_office(self, office: Office, request: ReceivedRequest) -> dict[str, Any]:
        return asdict(office)

    def _disconnect(self, office: Office, request: ReceivedRequest) -> dict[str, Any]:
        body = _json_object(request)
        for key in ("reason", "ticket"):
            if not isinstance(body.get(key), str) or not body[key].strip():
                raise PlatformError(400, f"body field {key!r} must be a non-empty string")
        closed, office.open_sessions, office.status = office.open_sessions, 0, "disconnected"
        return {"office_id": office.id, "status": office.status, "sessions_closed": closed}

    def _revoke_certificates(self, office: Office, request: ReceivedRequest) -> dict[str, Any]:
        revoked = [d.certificate_serial for d in office.devices if d.certificate_status == "active"]
        office.devices = [replace(d, certificate_status="revoked") for d in office.devices]
        return {"revoked": revoked}

    def _revoke_credentials(self, office: Office, request: ReceivedRequest) -> dict[str, Any]:
        reset = sum(1 for a in office.accounts if a.credentials_status == "active")
        office.accounts = [replace(a, credentials_status="revoked") for a in office.accounts]
        return {"accounts_reset": reset}

    def _issue_certificates(self, office: Office, request: ReceivedRequest) -> dict[str, Any]:
        wanted = _json_object(request).get("devices")
        if (
            not isinstance(wanted, list)
            or not wanted
            or not all(isinstance(item, str) for item in wanted)
        ):
            raise PlatformError(400, "body field 'devices' must be a non-empty list of device ids")
        known = {device.id for device in office.devices}
        unknown = [item for item in wanted if item not in known]
        if unknown:
            raise PlatformError(422, f"office {office.id} has no device {', '.join(unknown)}")
        issued: list[dict[str, str]] = []
        devices = []
        for device in office.devices:
            if device.id in wanted:
                device = Device(device.id, self._new_serial(), "active")
                issued.append(
                    {"device": device.id, "certificate_serial": device.certificate_serial}
                )
            devices.append(device)
        office.devices = devices
        return {"issued": issued}

    def _reconnect(self, office: Office, request: ReceivedRequest) -> dict[str, Any]:
        waiting = [d.id for d in office.devices if d.certificate_status == "revoked"]
        if waiting:
            raise PlatformError(
                409,
                f"devices {', '.join(waiting)} have a revoked certificate and no new one; "
                "issue certificates first",
            )
        office.status = "connected"
        return {"office_id": office.id, "status": office.status}


_ROUTES: dict[str, dict[str, Route]] = {
    "": {"GET": FakePlatform._get_office},
    "/disconnect": {"POST": FakePlatform._disconnect},
    "/certificates/revoke": {"POST": FakePlatform._revoke_certificates},
    "/credentials/revoke": {"POST": FakePlatform._revoke_credentials},
    "/certificates/issue": {"POST": FakePlatform._issue_certificates},
    "/reconnect": {"POST": FakePlatform._reconnect},
}


def _json_object(request: ReceivedRequest) -> dict[str, Any]:
    if not request.body:
        return {}
    try:
        body = request.json()
    except ValueError:
        raise PlatformError(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise PlatformError(400, "the body must be a JSON object")
    return body
