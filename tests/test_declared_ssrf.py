"""Attacks through a declared operation's parameters: whatever the value, the request stays
under the declared base URL, and the credential goes nowhere else.

The service is a recorder on loopback that keeps each request as it came on the wire; a
second recorder stands for the host an attacker would like to reach.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.declared_support import call, declared_settings
from tocsin.errors import ActionError, IntegrationError
from tocsin.sandbox import FakeService, ReceivedRequest, Reply
from tocsin.settings import Settings

TOKEN = "acme-secret-token-5f1e2d"
SECRETS = {"acme_token": TOKEN}
DECLARATION = """\
service: acme
description: A service whose parameters attackers fill
base_url: https://acme.example/api/v1
secrets:
  acme_token: Acme's bearer token
auth: {type: bearer, token_secret: acme_token}
defaults:
  retry: {attempts: 1}
operations:
  read_item:
    description: Read an item
    method: GET
    path: /items/{item}/details
    query:
      q: "{{ search }}"
    destructive: false
    parameters:
      item: {type: string, description: Any text at all}
      search: {type: string, required: false, default: "none"}
"""


class Recorder(FakeService):
    name = "recording service"

    def __init__(self) -> None:
        super().__init__()
        self.answer: Reply | None = None

    def handle(self, request: ReceivedRequest) -> Reply:
        return self.answer or Reply(200, {"path": request.path})


@pytest.fixture(scope="module")
def service() -> Iterator[Recorder]:
    with Recorder() as fake:
        yield fake


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[Recorder]:
    with Recorder() as fake:
        yield fake


@pytest.fixture
def settings(tmp_path: Path, service: Recorder, elsewhere: Recorder) -> Settings:
    service.reset()
    service.answer = None
    elsewhere.reset()
    (tmp_path / "acme.yaml").write_text(textwrap.dedent(DECLARATION), encoding="utf-8")
    return declared_settings({"acme": f"{service.url}/api/v1"}, folder=tmp_path)


ENCODED_ATTACKS = [
    "@evil.example",
    "http://169.254.169.254/latest/meta-data",
    "x\r\nHost: evil.example",
    "x\nX-Injected: 1",
    "a?admin=true",
    "a#fragment",
    "a b",
    "x/y",
]


@pytest.mark.parametrize("item", ENCODED_ATTACKS)
def test_a_value_fills_one_encoded_segment_under_the_base(
    settings: Settings, service: Recorder, elsewhere: Recorder, item: str
) -> None:
    call("acme.read_item", settings, SECRETS, item=item)

    [seen] = service.requests
    segments = seen.path.split("/")
    assert segments[:4] == ["", "api", "v1", "items"] and segments[5:] == ["details"]
    assert unquote(segments[4]) == item  # the whole value, as data, in its segment
    assert seen.raw_query == "q=none"  # nothing the value held became a query or a header
    assert (
        "x-injected" not in seen.headers
        and seen.header(
            "host",
        )
        != "evil.example"
    )
    assert seen.bearer_token() == TOKEN
    assert elsewhere.requests == []


@pytest.mark.parametrize(
    "item",
    ["..", "../../admin", "%2e%2e", "%2E%2E%2Fadmin", "..%2f..%2fadmin", "\\..\\admin", "．．", ""],
)
def test_a_value_that_would_climb_out_is_refused_and_nothing_is_sent(
    settings: Settings, service: Recorder, item: str
) -> None:
    with pytest.raises(ActionError) as caught:
        call("acme.read_item", settings, SECRETS, item=item)
    assert TOKEN not in str(caught.value)
    assert service.requests == []


def test_a_query_value_cannot_add_a_parameter(settings: Settings, service: Recorder) -> None:
    call("acme.read_item", settings, SECRETS, item="1", search="x&admin=true#frag")
    [seen] = service.requests
    assert dict(seen.query) == {"q": ["x&admin=true#frag"]}


def test_a_redirect_to_another_host_is_not_followed_and_gets_no_token(
    settings: Settings, service: Recorder, elsewhere: Recorder
) -> None:
    service.answer = Reply(302, None, {"Location": f"{elsewhere.url}/steal"})

    with pytest.raises(IntegrationError) as caught:
        call("acme.read_item", settings, SECRETS, item="1")

    assert caught.value.status_code == 302
    assert "outside the service" in caught.value.hint
    assert elsewhere.requests == []


def test_a_base_url_set_elsewhere_is_still_the_only_place_calls_go(
    tmp_path: Path, service: Recorder, elsewhere: Recorder
) -> None:
    service.reset()
    elsewhere.reset()
    (tmp_path / "acme.yaml").write_text(textwrap.dedent(DECLARATION), encoding="utf-8")
    settings = declared_settings({"acme": f"{elsewhere.url}/api/v1"}, folder=tmp_path)

    call("acme.read_item", settings, SECRETS, item="1")

    assert [r.path for r in elsewhere.requests] == ["/api/v1/items/1/details"]
    assert service.requests == []


def test_a_service_echoing_the_token_does_not_put_it_in_the_outputs(
    tmp_path: Path, service: Recorder
) -> None:
    service.reset()
    service.answer = Reply(200, {"path": f"/echo/{TOKEN}"})
    (tmp_path / "acme.yaml").write_text(
        textwrap.dedent(DECLARATION).replace(
            '      search: {type: string, required: false, default: "none"}',
            '      search: {type: string, required: false, default: "none"}\n'
            "    outputs: {echoed: /path}",
        ),
        encoding="utf-8",
    )
    settings = declared_settings({"acme": f"{service.url}/api/v1"}, folder=tmp_path)

    outputs = call("acme.read_item", settings, SECRETS, item="1")

    assert outputs["echoed"] == "/echo/<hidden>"


def test_an_answer_larger_than_the_declared_limit_is_refused(
    settings: Settings, service: Recorder
) -> None:
    service.answer = Reply(200, b"x" * (1024 * 1024 + 1))
    with pytest.raises(IntegrationError) as caught:
        call("acme.read_item", settings, SECRETS, item="1")
    assert "over the limit of 1 MB" in caught.value.message
    assert "defaults.max_response_bytes" in caught.value.hint
