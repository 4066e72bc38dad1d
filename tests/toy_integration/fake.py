"""The toy's fake: a bell on loopback that counts rings and repeats the greeting."""

from __future__ import annotations

from tocsin.integration import SandboxSeed, SandboxService
from tocsin.sandbox.fake_service import FakeService, ReceivedRequest, Reply

SANDBOX_TOKEN = "toy-sandbox-token"


class FakeBell(FakeService):
    name = "fake bell"

    def __init__(self, token: str = SANDBOX_TOKEN) -> None:
        super().__init__()
        self.token = token
        self.rings = 0

    def handle(self, request: ReceivedRequest) -> Reply:
        if request.bearer_token() != self.token:
            return Reply(401, {"error": "who are you?"})
        if (request.method, request.path) == ("GET", "/whoami"):  # changes nothing
            return Reply(200, {"caller": "tocsin"})
        if (request.method, request.path) != ("POST", "/ring"):
            return Reply(404, {"error": "no such thing"})
        body = request.json()
        with self.lock:
            self.rings += int(body["times"])
            return Reply(200, {"rings": self.rings, "heard": body["greeting"]})


def start(seed: SandboxSeed) -> SandboxService:
    fake = FakeBell().start(tls=seed.server_tls)
    toy: dict[str, object] = {"url": fake.url}
    if seed.ca_bundle is not None:
        toy["ca_bundle"] = str(seed.ca_bundle)
    return SandboxService(
        fake,
        settings={"toy": toy},
        secrets={"toy_token": SANDBOX_TOKEN},
        notes=[f"the toy bell rings at {fake.url}"],
    )
