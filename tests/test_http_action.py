"""http.request against the fake platform API on loopback, called the way the engine calls it."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli_runner import run_tocsin
from tocsin.action_registry import ActionRegistry
from tocsin.actions import ActionContext
from tocsin.errors import ActionError, ConfigurationError, IntegrationError
from tocsin.integrations.platform.fake import Account, Device, FakePlatform, Office
from tocsin.sandbox import FakeService, ReceivedRequest, Reply
from tocsin.settings import StaticSecrets, load_settings

TOKEN = "plt-0123456789-very-secret"
# A runbook calling the platform through http.request, as runbooks without a declaration do.
HTTP_OFFICE_RUNBOOK = """\
runbook: http-office
version: "1"
title: Disconnect an office through http.request
summary: One platform call whose URL carries an input.
severity: high
sources:
  - title: Cybersecurity dossier for Belgian insurance brokers
    document: 003_035991dd0fe2a165.txt
    section: "§5.1"
inputs:
  office_id: {type: string, description: The office's platform id}
approver_groups:
  leads:
    description: Leads
    users: [U0LEAD1]
steps:
  - id: approve
    title: Approve
    approval:
      approvers: leads
      prompt: Disconnect the office?
  - id: disconnect_office
    title: Disconnect the office
    action: http.request
    with:
      service: platform
      method: POST
      url: "/offices/{{ inputs.office_id }}/disconnect"
      bearer_token_secret: platform_api_token
"""
OFFICE = Office(
    id="OF-1",
    name="Courtier Dupont",
    devices=[Device("D-1", "CERT-0001"), Device("D-2", "CERT-0002")],
    accounts=[Account("A-1", "dupont"), Account("A-2", "martin")],
    open_sessions=3,
)


@pytest.fixture(scope="module")
def platform() -> Iterator[FakePlatform]:
    with FakePlatform(token=TOKEN, offices=[OFFICE]) as fake:
        yield fake


@pytest.fixture(autouse=True)
def fresh_platform(platform: FakePlatform) -> None:
    platform.reset()


class LargeText(FakeService):
    """Answers every request with 100 KiB of plain text."""

    def handle(self, request: ReceivedRequest) -> Reply:
        return Reply(200, b"x" * 100 * 1024, {"Content-Type": "text/plain; charset=utf-8"})


def call(params: dict[str, Any], *, secrets: dict[str, str] | None = None) -> dict[str, Any]:
    definition = ActionRegistry.discover().get("http.request")
    context = ActionContext(
        incident="INC-1",
        step_id="platform",
        secrets=StaticSecrets({"platform_token": TOKEN} if secrets is None else secrets),
        settings=load_settings(),
    )
    return definition.invoke(context, params)


def office_url(platform: FakePlatform, suffix: str = "", office: str = "OF-1") -> str:
    return f"{platform.url}/api/v1/offices/{office}{suffix}"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_get_returns_the_parsed_json_body_and_sends_the_bearer_token(
    platform: FakePlatform,
) -> None:
    outputs = call({"url": office_url(platform), "bearer_token_secret": "platform_token"})

    assert outputs["status_code"] == 200
    assert outputs["body"]["id"] == "OF-1"
    assert outputs["body"]["status"] == "connected"
    assert [d["certificate_serial"] for d in outputs["body"]["devices"]] == [
        "CERT-0001",
        "CERT-0002",
    ]
    assert isinstance(outputs["elapsed_ms"], int) and outputs["elapsed_ms"] >= 0
    (seen,) = platform.requests
    assert seen.method == "GET"
    assert seen.header("authorization") == f"Bearer {TOKEN}"


def test_post_sends_the_json_body_and_the_query(platform: FakePlatform) -> None:
    outputs = call(
        {
            "method": "POST",
            "url": office_url(platform, "/disconnect"),
            "query": {"notify": "yes", "attempt": 2},
            "json_body": {"reason": "mailbox compromised", "ticket": "INC-1"},
            "headers": {"X-Request-Id": "INC-1-platform"},
            "bearer_token_secret": "platform_token",
        }
    )

    assert outputs["body"] == {"office_id": "OF-1", "status": "disconnected", "sessions_closed": 3}
    seen = platform.requests[-1]
    assert seen.method == "POST"
    assert seen.json() == {"reason": "mailbox compromised", "ticket": "INC-1"}
    assert seen.query == {"notify": ["yes"], "attempt": ["2"]}
    assert seen.header("x-request-id") == "INC-1-platform"
    assert platform.office("OF-1").status == "disconnected"


def test_query_is_added_to_the_one_already_in_the_url(platform: FakePlatform) -> None:
    call(
        {
            "url": office_url(platform) + "?fields=devices",
            "query": {"page": 2},
            "bearer_token_secret": "platform_token",
        }
    )

    assert platform.requests[-1].query == {"fields": ["devices"], "page": ["2"]}


def test_text_body_is_returned_as_text_cut_to_64_kib() -> None:
    with LargeText() as fake:
        outputs = call({"url": fake.url + "/report.txt"})

    assert outputs["body"] == "x" * 64 * 1024


def test_plan_shows_method_and_url() -> None:
    definition = ActionRegistry.discover().get("http.request")
    checked = definition.check_parameters(
        {"method": "POST", "url": "https://platform.example/api/v1/offices/OF-1/disconnect"}
    )

    assert (
        definition.describe_call(checked)
        == "POST https://platform.example/api/v1/offices/OF-1/disconnect"
    )
    assert definition.destructive and not definition.idempotent


def test_secret_named_by_the_runbook_is_known_before_the_run() -> None:
    definition = ActionRegistry.discover().get("http.request")

    assert definition.secrets_needed({"bearer_token_secret": "platform_token"}) == [
        "platform_token"
    ]


@pytest.mark.parametrize(
    "url",
    ["ftp://platform.example/offices", "file:///etc/passwd", "platform.example/api", "https://"],
)
def test_url_that_is_not_http_is_refused_before_any_call(url: str) -> None:
    definition = ActionRegistry.discover().get("http.request")

    with pytest.raises(ActionError) as caught:
        definition.check_parameters({"url": url})

    assert "url:" in caught.value.message
    assert "http:// or https://" in caught.value.message


@pytest.mark.parametrize(
    "url",
    ["https://platform.example/api#top", "/offices\\OF-1", "/offices/OF 1", "/offices/OF-1\n"],
)
def test_url_with_a_fragment_backslash_or_space_is_refused_before_any_call(url: str) -> None:
    definition = ActionRegistry.discover().get("http.request")

    with pytest.raises(ActionError, match="must not contain a #fragment"):
        definition.check_parameters(
            {"service": "platform", "url": url} if url[0] == "/" else {"url": url}
        )


def test_url_with_credentials_is_refused_so_they_stay_out_of_the_plan() -> None:
    definition = ActionRegistry.discover().get("http.request")

    with pytest.raises(ActionError) as caught:
        definition.check_parameters({"url": "https://admin:hunter2@platform.example/api"})

    assert "bearer_token_secret" in caught.value.message


def test_unknown_parameter_and_method_are_refused() -> None:
    definition = ActionRegistry.discover().get("http.request")

    with pytest.raises(ActionError) as caught:
        definition.check_parameters(
            {"url": "https://platform.example", "method": "TRACE", "body": "x"}
        )

    assert "method:" in caught.value.message
    assert "body:" in caught.value.message


def test_wrong_token_is_a_401_whose_hint_names_the_secret(platform: FakePlatform) -> None:
    with pytest.raises(IntegrationError) as caught:
        call(
            {"url": office_url(platform), "bearer_token_secret": "platform_token"},
            secrets={"platform_token": "plt-stale-token-value"},
        )

    error = caught.value
    assert error.status_code == 401
    assert not error.retryable
    assert error.service == "127.0.0.1"
    assert "401 Unauthorized" in error.message
    assert "TOCSIN_SECRET_PLATFORM_TOKEN" in error.hint
    assert "plt-stale-token-value" not in f"{error} {error.hint} {error!r} {error.args}"


def test_missing_secret_names_the_variable_to_set(platform: FakePlatform) -> None:
    with pytest.raises(ConfigurationError) as caught:
        call({"url": office_url(platform), "bearer_token_secret": "platform_token"}, secrets={})

    assert "TOCSIN_SECRET_PLATFORM_TOKEN" in caught.value.hint
    assert platform.requests == []


def test_unknown_office_is_a_404_that_is_not_retried(platform: FakePlatform) -> None:
    with pytest.raises(IntegrationError) as caught:
        call({"url": office_url(platform, office="OF-9"), "bearer_token_secret": "platform_token"})

    error = caught.value
    assert error.status_code == 404
    assert not error.retryable
    assert "404 Not Found" in error.message
    assert "no office 'OF-9'" in error.message


def test_unavailable_service_is_a_retryable_503(platform: FakePlatform) -> None:
    platform.fail_next(1, 503)

    with pytest.raises(IntegrationError) as caught:
        call({"url": office_url(platform), "bearer_token_secret": "platform_token"})

    assert caught.value.status_code == 503
    assert caught.value.retryable
    assert len(platform.requests) == 1  # retrying is the engine's decision, not the action's


def test_rate_limited_call_is_retryable(platform: FakePlatform) -> None:
    platform.fail_next(1, 429, headers={"Retry-After": "1"})

    with pytest.raises(IntegrationError) as caught:
        call({"url": office_url(platform), "bearer_token_secret": "platform_token"})

    assert caught.value.status_code == 429
    assert caught.value.retryable


def test_status_outside_expect_status_is_refused(platform: FakePlatform) -> None:
    with pytest.raises(IntegrationError) as caught:
        call(
            {
                "url": office_url(platform),
                "bearer_token_secret": "platform_token",
                "expect_status": [204],
            }
        )

    assert caught.value.status_code == 200
    assert "expected 204" in caught.value.message
    assert not caught.value.retryable


def test_expected_error_status_is_returned_as_outputs(platform: FakePlatform) -> None:
    outputs = call(
        {
            "url": office_url(platform, office="OF-9"),
            "bearer_token_secret": "platform_token",
            "expect_status": [200, 404],
        }
    )

    assert outputs["status_code"] == 404
    assert outputs["body"] == {"error": "no office 'OF-9'"}


def test_slow_service_times_out_as_retryable(platform: FakePlatform) -> None:
    platform.stall_next(1, seconds=10)

    with pytest.raises(IntegrationError) as caught:
        call(
            {
                "url": office_url(platform),
                "bearer_token_secret": "platform_token",
                "timeout_seconds": 0.2,
            }
        )

    assert caught.value.retryable
    assert caught.value.status_code is None
    assert "did not answer" in caught.value.message


def test_unreachable_service_is_retryable() -> None:
    port = closed_port()

    with pytest.raises(IntegrationError) as caught:
        call({"url": f"http://127.0.0.1:{port}/api/v1/offices/OF-1"})

    assert caught.value.retryable
    assert "cannot be reached" in caught.value.message


def test_authorization_header_and_token_secret_together_are_refused(
    platform: FakePlatform,
) -> None:
    with pytest.raises(ActionError) as caught:
        call(
            {
                "url": office_url(platform),
                "headers": {"authorization": "Basic Zm9vOmJhcg=="},
                "bearer_token_secret": "platform_token",
            }
        )

    assert "bearer_token_secret" in caught.value.message
    assert platform.requests == []


@pytest.mark.parametrize(
    ("prepare", "suffix", "timeout"),
    [
        (lambda fake: None, "/nowhere", None),
        (lambda fake: fake.fail_next(1, 500, body={"error": f"token {TOKEN} rejected"}), "", None),
        (lambda fake: fake.stall_next(1, seconds=10), "", 0.2),
    ],
    ids=["404", "500-echoing-the-token", "timeout"],
)
def test_token_value_never_appears_in_an_error(
    platform: FakePlatform, prepare: Any, suffix: str, timeout: float | None
) -> None:
    prepare(platform)
    params: dict[str, Any] = {
        "url": office_url(platform, suffix),
        "bearer_token_secret": "platform_token",
    }
    if timeout is not None:
        params["timeout_seconds"] = timeout

    with pytest.raises(IntegrationError) as caught:
        call(params)

    error = caught.value
    assert platform.requests[-1].bearer_token() == TOKEN
    assert TOKEN not in f"{error} {error.message} {error.hint} {error!r} {error.args}"


def call_service(params: dict[str, Any], services: dict[str, str]) -> dict[str, Any]:
    definition = ActionRegistry.discover().get("http.request")
    context = ActionContext(
        incident="INC-1",
        step_id="platform",
        secrets=StaticSecrets({"platform_token": TOKEN}),
        settings=load_settings(http={"services": services}),
    )
    return definition.invoke(context, params)


def test_a_path_on_a_named_service_goes_to_its_configured_base_url(
    platform: FakePlatform,
) -> None:
    outputs = call_service(
        {
            "service": "platform",
            "method": "POST",
            "url": "/offices/OF-1/disconnect",
            "json_body": {"reason": "phishing", "ticket": "INC-1"},
            "bearer_token_secret": "platform_token",
        },
        {"platform": f"{platform.url}/api/v1/"},
    )
    assert outputs["body"]["status"] == "disconnected"
    assert platform.requests[-1].path == "/api/v1/offices/OF-1/disconnect"


def test_a_service_that_is_not_configured_names_the_setting_to_set() -> None:
    with pytest.raises(ConfigurationError) as caught:
        call_service({"service": "platform", "url": "/offices/OF-1"}, {})
    assert caught.value.message == "service 'platform' is not configured"
    assert "TOCSIN_HTTP__SERVICES__PLATFORM=" in caught.value.hint


def test_a_path_without_a_service_and_a_url_with_one_are_refused_before_the_call() -> None:
    definition = ActionRegistry.discover().get("http.request")
    with pytest.raises(ActionError, match="is a path: name the service"):
        definition.check_parameters({"url": "/offices/OF-1"})
    with pytest.raises(ActionError, match="url is a path under the service's base URL"):
        definition.check_parameters({"service": "platform", "url": "https://x.example/a"})


def test_the_plan_sentence_names_the_service() -> None:
    definition = ActionRegistry.discover().get("http.request")
    checked = definition.check_parameters(
        {"service": "platform", "method": "POST", "url": "/offices/OF-1/disconnect"}
    )
    assert (
        definition.describe_call(checked) == "POST /offices/OF-1/disconnect on the platform service"
    )


def test_the_plan_shows_the_url_as_the_run_will_send_it_and_warns_when_an_input_would_move_it(
    tmp_path: Path,
) -> None:
    runbook = tmp_path / "http-office.yaml"
    runbook.write_text(HTTP_OFFICE_RUNBOOK, encoding="utf-8")

    encoded = run_tocsin("plan", str(runbook), "--set", "office_id=OF-1?x")
    moved = run_tocsin("plan", str(runbook), "--set", "office_id=../admin")

    assert encoded.returncode == 0, encoded.stderr
    assert "would touch: POST /offices/OF-1%3Fx/disconnect on the platform service" in (
        encoded.stdout
    )
    assert (
        "Step disconnect_office would fail: a value of url "
        "'/offices/{{ inputs.office_id }}/disconnect' makes the URL path segment '../admin', "
        "which would move the request to another path of the service"
    ) in moved.stdout


def test_the_engine_renders_url_values_percent_encoded_and_other_parameters_as_they_are() -> None:
    definition = ActionRegistry.discover().get("http.request")
    context = {"inputs": {"office": "OF-1/x", "reason": "a/b?c"}}

    rendered = definition.render_parameters(
        {
            "url": "https://platform.example/offices/{{ inputs.office }}?why={{ inputs.reason }}",
            "json_body": {"reason": "{{ inputs.reason }}"},
        },
        context,
    )

    assert rendered == {
        "url": "https://platform.example/offices/OF-1%2Fx?why=a%2Fb%3Fc",
        "json_body": {"reason": "a/b?c"},
    }
