"""Attacks on outgoing requests: inputs and step outputs that try to move a call, or its token.

Each attack goes to real HTTP servers on loopback that record every request they receive
(path as it came on the wire, Authorization header). The URL attacks run a runbook
through the real flow on the local Prefect server, as `tocsin run` does; the others call
the action the way the engine does, or the reusable ``tocsin.outbound`` API directly.
"""

from __future__ import annotations

import threading
import unicodedata
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from tests.engine_support import FlowInThread, settings_journal, start_flow, wait_until
from tocsin.action_registry import ActionRegistry
from tocsin.actions import ActionContext
from tocsin.errors import InputError, IntegrationError, TemplateError
from tocsin.integrations.jira.client import JiraTickets
from tocsin.journal import Journal
from tocsin.outbound import BearerToken, ServiceEndpoint, path_segment, render_url_template
from tocsin.sandbox import FakeService, ReceivedRequest, Reply
from tocsin.settings import StaticSecrets, load_settings

TOKEN = "plt-0123456789-very-secret"
BASE_PATH = "/api/v1"
_tickets = count(1)


class Recorder(FakeService):
    """Answers 200 with the path it saw, or what ``answer`` says; records every request."""

    name = "recording service"

    def __init__(self) -> None:
        super().__init__()
        self.answer: Reply | None = None

    def handle(self, request: ReceivedRequest) -> Reply:
        return self.answer or Reply(200, {"path": request.path})

    def lenient_paths(self) -> list[str]:
        return [lenient_path(seen.path) for seen in self.requests]

    def tokens(self) -> list[str | None]:
        return [seen.bearer_token() for seen in self.requests]


def lenient_path(raw: str) -> str:
    """The path a lenient server would serve: decoded (twice), ``\\`` as ``/``, dots resolved."""
    text = unquote(unquote(raw)).replace("\\", "/")
    kept: list[str] = []
    for segment in text.split("/")[1:]:
        segment_nfkc = unicodedata.normalize("NFKC", segment)
        if segment_nfkc == "..":
            if kept:
                kept.pop()
        elif segment_nfkc != ".":
            kept.append(segment)
    return "/" + "/".join(kept)


@pytest.fixture(scope="module")
def platform() -> Iterator[Recorder]:
    with Recorder() as fake:
        yield fake


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[Recorder]:
    """Another host (another port on loopback) that must never see the platform's token."""
    with Recorder() as fake:
        yield fake


@pytest.fixture(autouse=True)
def fresh_recorders(platform: Recorder, elsewhere: Recorder) -> None:
    for fake in (platform, elsewhere):
        fake.reset()
        fake.answer = None


# -- through the real flow ------------------------------------------------------------------

RUNBOOK = """\
runbook: {runbook_id}
version: 1
title: Outgoing request attack
summary: Platform calls built from an input and from an earlier step's output
severity: low
sources: [{{title: Test, document: test.txt}}]
inputs:
  state: {{type: string, description: Folder for action state}}
  office_id: {{type: string, description: The office to disconnect}}
steps:
{steps}
"""

DISCONNECT = """\
  - id: disconnect_office
    title: Disconnect the office
    action: http.request
    with:
      service: platform
      method: POST
      url: "/offices/{{ inputs.office_id }}/disconnect"
      bearer_token_secret: platform_token
"""


@pytest.fixture(scope="module")
def journal(prefect_server: str) -> Iterator[Journal]:
    opened = settings_journal()
    yield opened
    opened.close()


@pytest.fixture
def deployment(platform: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """The platform service and its token, as a deployment sets them for the flow."""
    monkeypatch.setenv("TOCSIN_HTTP__SERVICES__PLATFORM", platform.url + BASE_PATH)
    monkeypatch.setenv("TOCSIN_SECRET_PLATFORM_TOKEN", TOKEN)


def run_runbook(journal: Journal, folder: Path, steps: str, office_id: str) -> FlowInThread:
    ticket = f"SECHTTP-{next(_tickets)}"
    text = RUNBOOK.format(runbook_id=f"attack-{ticket.lower()}", steps=steps)
    handle = start_flow(journal, text, folder, ticket=ticket, inputs={"office_id": office_id})
    handle.finish()
    return handle


def step_error(handle: FlowInThread, step_id: str) -> str:
    """Why the step failed: its journalled error, or the run's reason if it failed as it started."""
    record = handle.step(step_id)
    if record is not None:
        assert record.status == "failed", record
        return record.error or ""
    assert handle.result["status"] == "failed", handle.result
    return str(handle.result["reason"])


@pytest.mark.slow
@pytest.mark.usefixtures("deployment")
def test_dot_dot_in_input_cannot_reach_another_path(
    journal: Journal, platform: Recorder, tmp_path: Path
) -> None:
    handle = run_runbook(journal, tmp_path, DISCONNECT, office_id="OF-1/../../../admin/wipe")

    assert platform.requests == []
    assert "would move the request to another path" in step_error(handle, "disconnect_office")


@pytest.mark.slow
@pytest.mark.usefixtures("deployment")
def test_question_mark_in_input_cannot_cut_the_path_suffix(
    journal: Journal, platform: Recorder, tmp_path: Path
) -> None:
    handle = run_runbook(journal, tmp_path, DISCONNECT, office_id="OF-2?")

    (seen,) = platform.requests
    assert seen.path == f"{BASE_PATH}/offices/OF-2%3F/disconnect"
    assert seen.query == {}
    assert handle.step("disconnect_office").status == "succeeded"  # type: ignore[union-attr]


@pytest.mark.slow
@pytest.mark.usefixtures("deployment")
def test_hash_in_input_cannot_truncate_the_url(
    journal: Journal, platform: Recorder, tmp_path: Path
) -> None:
    run_runbook(journal, tmp_path, DISCONNECT, office_id="OF-2#")

    (seen,) = platform.requests
    assert seen.path == f"{BASE_PATH}/offices/OF-2%23/disconnect"


@pytest.mark.slow
@pytest.mark.usefixtures("deployment")
@pytest.mark.parametrize(
    "office_id",
    [
        "%2e%2e%2f%2e%2e%2f%2e%2e%2fadmin",  # encoded dots and slashes
        "%252e%252e%252f%252e%252e%252fadmin",  # encoded twice
        "..\\..\\..\\admin",  # backslashes, which some servers read as /
        "\uff0e\uff0e/\uff0e\uff0e/\uff0e\uff0e/admin",  # fullwidth dots, NFKC-folded by some
    ],
    ids=["percent-encoded", "double-encoded", "backslashes", "unicode-dots"],
)
def test_encoded_dot_segments_stay_inside_the_base_path(
    journal: Journal, platform: Recorder, tmp_path: Path, office_id: str
) -> None:
    handle = run_runbook(journal, tmp_path, DISCONNECT, office_id=office_id)

    # Even a server that decodes %2F, decodes twice, or folds look-alike dots is not moved.
    assert all(
        path.startswith(f"{BASE_PATH}/offices/") and path.endswith("/disconnect")
        for path in platform.lenient_paths()
    ), platform.lenient_paths()
    assert "would move the request" in step_error(handle, "disconnect_office")


LOOK_UP_THEN_CALL_BACK = """\
  - id: look_up_office
    title: Ask the platform where to report
    action: http.request
    with:
      service: platform
      url: "/offices/{{ inputs.office_id }}"
      bearer_token_secret: platform_token
    outputs:
      callback: "{{ result.body.callback }}"
  - id: report_back
    title: Report to the address the platform gave
    action: http.request
    with:
      method: POST
      url: "{{ steps.look_up_office.outputs.callback }}"
      bearer_token_secret: platform_token
"""


@pytest.mark.slow
@pytest.mark.usefixtures("deployment")
def test_bearer_token_is_never_sent_to_another_host(
    journal: Journal, platform: Recorder, elsewhere: Recorder, tmp_path: Path
) -> None:
    # A compromised (or merely wrong) answer points the next call at another host.
    platform.answer = Reply(200, {"callback": f"{elsewhere.url}/collect"})

    handle = run_runbook(journal, tmp_path, LOOK_UP_THEN_CALL_BACK, office_id="OF-1")

    assert platform.tokens() == [TOKEN]
    assert elsewhere.requests == []
    assert "would choose the scheme or the host" in step_error(handle, "report_back")


CHOSEN_SECRET = """\
  - id: disconnect_office
    title: Disconnect the office
    action: http.request
    with:
      service: platform
      method: POST
      url: "/offices/OF-1/disconnect"
      bearer_token_secret: "{{ inputs.office_id }}"
"""


@pytest.mark.slow
@pytest.mark.usefixtures("deployment")
def test_an_input_cannot_choose_which_secret_is_sent(
    journal: Journal, platform: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOCSIN_SECRET_JIRA_API_TOKEN", "jira-token-of-another-service")

    handle = run_runbook(journal, tmp_path, CHOSEN_SECRET, office_id="jira_api_token")

    assert platform.requests == []
    assert "decides where the call goes or which secret it sends" in step_error(
        handle, "disconnect_office"
    )


def test_an_input_cannot_choose_the_service_a_token_goes_to() -> None:
    definition = ActionRegistry.discover().get("http.request")

    with pytest.raises(TemplateError, match="`service` of http.request is templated"):
        definition.render_parameters(
            {"service": "{{ inputs.where }}", "url": "/x", "bearer_token_secret": "platform_token"},
            {"inputs": {"where": "partner"}},
        )


# -- the action, called the way the engine calls it ----------------------------------------


def call(params: dict[str, Any], platform: Recorder) -> dict[str, Any]:
    definition = ActionRegistry.discover().get("http.request")
    context = ActionContext(
        incident="INC-1",
        step_id="platform",
        secrets=StaticSecrets({"platform_token": TOKEN}),
        settings=load_settings(http={"services": {"platform": platform.url + BASE_PATH}}),
    )
    return definition.invoke(context, params)


def test_a_path_that_climbs_out_of_the_base_url_is_refused_with_the_token_unsent(
    platform: Recorder,
) -> None:
    with pytest.raises(IntegrationError) as caught:
        call(
            {
                "service": "platform",
                "url": "/../../internal/keys",
                "bearer_token_secret": "platform_token",
            },
            platform,
        )

    assert platform.requests == []
    assert caught.value.service == "platform"
    assert "outside the service's base URL" in caught.value.message
    assert f"{platform.url}/internal/keys" in caught.value.message


def test_redirect_to_another_host_does_not_carry_the_token(
    platform: Recorder, elsewhere: Recorder
) -> None:
    platform.answer = Reply(302, b"", {"Location": f"{elsewhere.url}/collect"})

    with pytest.raises(IntegrationError) as caught:
        call(
            {
                "service": "platform",
                "url": "/offices/OF-1",
                "bearer_token_secret": "platform_token",
            },
            platform,
        )

    assert elsewhere.requests == []
    assert platform.tokens() == [TOKEN]
    error = caught.value
    assert error.status_code == 302
    assert f"redirects to 127.0.0.1:{elsewhere.port}, outside the platform service" in error.message
    assert "not followed" in error.message
    assert TOKEN not in f"{error} {error.hint}"


class Flood:
    """A loopback server that streams up to ``total`` bytes without a Content-Length."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.sent = 0
        self.done = threading.Event()
        flood = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                chunk = b"x" * 65536
                try:
                    while flood.sent < flood.total:
                        self.wfile.write(chunk)
                        flood.sent += len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading: what the test wants to see
                finally:
                    flood.done.set()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> Flood:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def test_oversized_response_is_refused_without_reading_it_all() -> None:
    total = 256 * 1024 * 1024
    with Flood(total) as flood:
        definition = ActionRegistry.discover().get("http.request")
        context = ActionContext(
            incident="INC-1",
            step_id="export",
            secrets=StaticSecrets({}),
            settings=load_settings(http={"services": {"exports": flood.url}}),
        )
        with pytest.raises(IntegrationError) as caught:
            definition.invoke(context, {"service": "exports", "url": "/dump"})
        wait_until(flood.done.is_set, timeout=10, what="the server to see the client go")

    assert flood.sent < total // 4  # stopped near the 10 MB limit, plus socket buffers
    error = caught.value
    assert "over the limit of 10 MB" in error.message
    assert "max_response_bytes" in error.hint


def test_announced_oversized_response_is_refused_before_reading(platform: Recorder) -> None:
    platform.answer = Reply(200, b"x" * 200_000, {"Content-Type": "text/plain"})

    with pytest.raises(IntegrationError) as caught:
        call({"service": "platform", "url": "/report.txt", "max_response_bytes": 100_000}, platform)

    assert "announced 195.312 KB" in caught.value.message
    assert "100000 bytes" in caught.value.message


# -- the reusable API -------------------------------------------------------------------------


def endpoint(recorder: Recorder, **extra: Any) -> ServiceEndpoint:
    return ServiceEndpoint(
        "platform",
        recorder.url + BASE_PATH,
        action="test.platform",
        credential=BearerToken(TOKEN),
        **extra,
    )


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ("OF-1", "/offices/OF-1/disconnect"),
        ("a/b?c#d", "/offices/a%2Fb%3Fc%23d/disconnect"),
        ("@evil.example:1", "/offices/%40evil.example%3A1/disconnect"),
        ("x y&z=1", "/offices/x%20y%26z%3D1/disconnect"),
        ("100%", "/offices/100%25/disconnect"),
        (42, "/offices/42/disconnect"),
    ],
)
def test_each_value_fills_exactly_one_segment(platform: Recorder, value: object, path: str) -> None:
    assert endpoint(platform).url("/offices/{office}/disconnect", office=value) == (
        platform.url + BASE_PATH + path
    )


@pytest.mark.parametrize("value", ["", ".", "..", "%2E%2e", "a/../..", "\uff0e", None, ["a"]])
def test_values_that_would_move_the_request_are_refused(platform: Recorder, value: object) -> None:
    with pytest.raises(IntegrationError) as caught:
        endpoint(platform).url("/offices/{office}/disconnect", office=value)

    assert caught.value.service == "platform"


def test_query_values_are_encoded_and_cannot_add_parameters(platform: Recorder) -> None:
    service = endpoint(platform)

    response = service.send("GET", service.url("/search?q={q}", q="x&admin=1#"))

    assert response.status_code == 200
    (seen,) = platform.requests
    assert seen.query == {"q": ["x&admin=1#"]}


@pytest.mark.parametrize(
    "url",
    [
        "{origin}/api/v1-admin/x",  # not at a segment boundary: /api/v1-admin is not under /api/v1
        "/offices/../../v1-admin",
        "/offices/%2e%2e/%2E%2E/secrets",
        "/offices\\..\\..\\secrets",
    ],
)
def test_a_url_outside_the_base_path_is_refused(platform: Recorder, url: str) -> None:
    with pytest.raises(IntegrationError) as caught:
        endpoint(platform).send("GET", url.format(origin=platform.url))

    assert platform.requests == []
    assert caught.value.service == "platform"


def test_the_credential_is_refused_for_another_host(
    platform: Recorder, elsewhere: Recorder
) -> None:
    with pytest.raises(IntegrationError) as caught:
        endpoint(platform).send("GET", f"{elsewhere.url}{BASE_PATH}/offices")

    assert elsewhere.requests == []
    assert caught.value.service == "platform"
    assert f"refusing to send a request to {elsewhere.url}, another host" in caught.value.message
    assert "credentials are bound to its own host" in caught.value.message


def test_a_service_on_two_hosts_gets_its_token_on_both_and_only_under_their_paths(
    platform: Recorder, elsewhere: Recorder
) -> None:
    service = endpoint(platform, also_under=(f"{elsewhere.url}/sign-in",))

    service.send("POST", f"{elsewhere.url}/sign-in/token")
    with pytest.raises(IntegrationError, match="outside the service's base URL"):
        service.send("GET", f"{elsewhere.url}/sign-in-admin/keys")

    assert [(seen.path, seen.bearer_token()) for seen in elsewhere.requests] == [
        ("/sign-in/token", TOKEN)
    ]


def test_a_runbook_url_keeps_its_literal_parts_and_encodes_its_values() -> None:
    context = {"inputs": {"office": "OF-1/x?y#z", "page": "2&all=1"}}

    url = render_url_template(
        "https://platform.example/api/offices/{{ inputs.office }}/devices?page={{ inputs.page }}",
        context,
    )

    assert url == "https://platform.example/api/offices/OF-1%2Fx%3Fy%23z/devices?page=2%26all%3D1"


@pytest.mark.parametrize(
    "template",
    [
        "{{ inputs.url }}",
        "https://{{ inputs.host }}/api",
        "http://platform.example:{{ inputs.port }}/",
    ],
)
def test_a_runbook_value_cannot_choose_the_host(template: str) -> None:
    context = {"inputs": {"url": "https://evil.example/", "host": "evil.example", "port": 8443}}

    with pytest.raises(TemplateError, match="would choose the scheme or the host"):
        render_url_template(template, context)


# -- the other clients --------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["..", ".", "%2e%2e", "INC-1/../.."])
def test_a_jira_ticket_key_cannot_reach_another_jira_path(platform: Recorder, key: str) -> None:
    jira = JiraTickets(platform.url, TOKEN)

    with pytest.raises(InputError):
        jira.comment(key, "status update")

    assert platform.requests == []


def test_a_flood_from_jira_is_refused_without_reading_it_all() -> None:
    total = 256 * 1024 * 1024
    with Flood(total) as flood:
        jira = JiraTickets(flood.url, TOKEN)
        with pytest.raises(IntegrationError) as caught:
            jira.issue("INC-1")
        wait_until(flood.done.is_set, timeout=10, what="the server to see the client go")

    assert flood.sent < total // 4  # stopped near the 10 MB limit, plus socket buffers
    assert "more than 10 MB" in caught.value.message


def test_a_normal_ticket_key_is_one_segment() -> None:
    assert path_segment("INC-42") == "INC-42"
    assert path_segment("A/B") == "A%2FB"


def test_the_outbound_module_exports_exactly_its_documented_names() -> None:
    import inspect

    import tocsin.outbound as outbound

    public = {
        name
        for name, value in vars(outbound).items()
        if not name.startswith("_")
        and (getattr(value, "__module__", None) == outbound.__name__ or name.isupper())
        and not inspect.ismodule(value)
    }
    assert public == set(outbound.__all__)
