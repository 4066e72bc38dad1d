"""Enough of a Prefect server's API for the tests that do not need a real one."""

from __future__ import annotations

from typing import Any

from tocsin.sandbox.fake_service import FakeService, ReceivedRequest, Reply


class FakePrefect(FakeService):
    """Answers the health check, and reads of the flow runs in ``flow_runs`` (by id).

    ``failing``: every other request is answered 500, as by a server in trouble.
    """

    name = "fake Prefect"

    def __init__(self, flow_runs: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.flow_runs = flow_runs or {}
        self.failing = False

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def handle(self, request: ReceivedRequest) -> Reply:
        if (request.method, request.path) == ("GET", "/api/health"):
            return Reply(200, True)
        if self.failing:
            return Reply(500, {"detail": "Internal Server Error"})
        if request.method == "GET" and request.path.startswith("/api/flow_runs/"):
            found = self.flow_runs.get(request.path.removeprefix("/api/flow_runs/"))
            return Reply(200, found) if found else Reply(404, {"detail": "Flow run not found"})
        return Reply(404, {"detail": "Not Found"})
