"""A slash command slower than Slack's 3 seconds: answered "on it" at once, its real answer
sent to the command's response_url; never to a response_url outside Slack."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.engine_support import wait_until
from tests.gateway_support import environment_variables, gateway_from_settings, service_settings
from tocsin.gateway import Gateway, GatewayServer
from tocsin.integrations.slack.fake import FakeSlack, SlackChannel
from tocsin.integrations.slack.simulated_user import SimulatedSlack

SIGNING_SECRET = "5b1f0c4e2d9a8877665544332211aabb"
SLOW_SECONDS = 3.0


@pytest.fixture(scope="module")
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(channels=(SlackChannel("C0INCIDENTS", "support-incidents"),)) as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(slack: FakeSlack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("late-answer")
    values = service_settings(folder, signing_secret=SIGNING_SECRET, slack=slack)
    with environment_variables(values), gateway_from_settings() as service:
        yield service


@pytest.fixture(scope="module")
def slack_user(gateway: Gateway, slack: FakeSlack) -> Iterator[SimulatedSlack]:
    with (
        GatewayServer(gateway.app) as server,
        SimulatedSlack(server.url, SIGNING_SECRET, fake_slack=slack) as simulated,
    ):
        yield simulated


@pytest.fixture
def slow_status(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """``/tocsin status`` takes 3 s, as a start does when Prefect is busy."""
    answer: Callable[..., Any] = gateway.incident_status

    def slowly(*args: Any, **kwargs: Any) -> Any:
        time.sleep(SLOW_SECONDS)
        return answer(*args, **kwargs)

    monkeypatch.setattr(gateway, "incident_status", slowly)


def _answers_to(slack: FakeSlack, path: str) -> list[Any]:
    return [post.payload for post in slack.responses if post.path == path]


def test_a_quick_command_is_answered_at_once_and_nothing_follows(
    slack: FakeSlack, slack_user: SimulatedSlack
) -> None:
    before = len(slack.responses)
    answer = slack_user.slash_command("U0SUPPORT", "status LATE-1")
    assert answer.status_code == 200
    assert "no incident LATE-1" in answer.json()["text"]
    time.sleep(0.5)
    assert len(slack.responses) == before


def test_a_slow_command_is_answered_within_slacks_limit_and_its_answer_follows(
    slack: FakeSlack, slack_user: SimulatedSlack, slow_status: None
) -> None:
    url = f"{slack.url}/commands/T0SANDBOX/late/abc123"
    started = time.monotonic()
    answer = slack_user.slash_command("U0SUPPORT", "status LATE-2", response_url=url)
    acknowledged = time.monotonic() - started
    assert answer.status_code == 200
    assert acknowledged < 3.0, f"answered after {acknowledged:.1f} s: Slack would time out"
    assert "On it" in answer.json()["text"]
    assert answer.json()["response_type"] == "ephemeral"

    path = "/commands/T0SANDBOX/late/abc123"
    late = wait_until(lambda: _answers_to(slack, path), timeout=15, what="the late answer")
    assert len(late) == 1
    assert late[0]["response_type"] == "ephemeral"
    assert (
        "no incident LATE-2" in late[0]["text"]
    )  # the answer the command gives, not a placeholder
    assert "On it" not in late[0]["text"]


class _Listener:
    """A loopback port that counts the connections made to it (an attacker's server)."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.connections = 0
        self.socket.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.socket.accept()
            except TimeoutError:
                continue
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.socket.close()


@pytest.mark.parametrize(
    "hostile",
    [
        "http://127.0.0.1:{port}/commands/T0/1/x",
        "https://hooks.slack.com.127.0.0.1.nip.io:{port}/commands/T0/1/x",
        "http://user:pass@127.0.0.1:{port}/commands/T0/1/x",
    ],
)
def test_a_response_url_outside_slack_is_never_followed(
    tmp_path: Path, slack_user: SimulatedSlack, slow_status: None, hostile: str
) -> None:
    listener = _Listener()
    try:
        started = time.monotonic()
        answer = slack_user.slash_command(
            "U0SUPPORT", "status LATE-3", response_url=hostile.format(port=listener.port)
        )
        waited = time.monotonic() - started
        # Nowhere to send a late answer: the gateway answers when it has the answer.
        assert answer.status_code == 200
        assert (
            "no incident LATE-3" in answer.json()["text"] and "On it" not in answer.json()["text"]
        )
        assert waited >= SLOW_SECONDS
        time.sleep(0.5)
        assert listener.connections == 0
    finally:
        listener.close()
