"""JiraTickets against the fake Jira on loopback: comments, attachments, auth, retries, webhooks."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tocsin.errors import ConfigurationError, InputError, IntegrationError
from tocsin.integrations.jira.client import DELIVERY_ID_HEADER, JiraTickets
from tocsin.integrations.jira.fake import FakeJira
from tocsin.sandbox import FakeService, ReceivedRequest, Reply
from tocsin.settings import StaticSecrets, load_settings
from tocsin.tickets import TicketSystem, TicketTrigger, parse_inputs_text

CLOUD_USER = "tocsin@broker-support.example"
CLOUD_TOKEN = "ATATT3xCloudTokenForTests0042"
DC_TOKEN = "NjQ5MDDataCenterPersonalAccessToken"
WEBHOOK_SECRET = "whsec-jira-tests"
RUNBOOK_FIELD = "customfield_10100"
INPUTS_FIELD = "customfield_10101"

ISSUES: dict[str, dict[str, Any]] = {
    "INC-12": {
        "summary": "Office OF-1042 reports ransomware",
        RUNBOOK_FIELD: {
            "self": "https://broker-support.atlassian.net/rest/api/2/customFieldOption/10200",
            "value": "office-compromise",
            "id": "10200",
        },
        INPUTS_FIELD: "# from the phone call\noffice_id=OF-1042\n\noffice_name = Dupont Assurances\n",
    },
    "INC-13": {"summary": "Portal account taken over", RUNBOOK_FIELD: "portal-account-takeover"},
}


@pytest.fixture(scope="module")
def cloud_jira() -> Iterator[FakeJira]:
    with FakeJira(token=CLOUD_TOKEN, user=CLOUD_USER, issues=ISSUES) as fake:
        yield fake


@pytest.fixture(scope="module")
def dc_jira() -> Iterator[FakeJira]:
    with FakeJira(token=DC_TOKEN, user=None, issues=ISSUES) as fake:
        yield fake


class WebhookReceiver(FakeService):
    """Stands in for Tocsin's gateway: records what Jira posts and answers 200."""

    name = "webhook receiver"

    def handle(self, request: ReceivedRequest) -> Reply:
        return Reply(200, {"ok": True})


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as fake:
        yield fake


@pytest.fixture(autouse=True)
def fresh_fakes(cloud_jira: FakeJira, dc_jira: FakeJira, receiver: WebhookReceiver) -> None:
    cloud_jira.reset()
    dc_jira.reset()
    receiver.reset()


def cloud(jira: FakeJira, *, token: str = CLOUD_TOKEN, secret: str | None = None) -> JiraTickets:
    return JiraTickets(
        jira.url,
        token,
        user=CLOUD_USER,
        webhook_secret=secret,
        runbook_field=RUNBOOK_FIELD,
        inputs_field=INPUTS_FIELD,
        timeout_seconds=5,
    )


def data_center(jira: FakeJira, *, token: str = DC_TOKEN) -> JiraTickets:
    return JiraTickets(jira.url, token, user=None, timeout_seconds=5)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- comments and attachments ---------------------------------------------------


def test_progress_comment_lands_on_the_ticket(cloud_jira: FakeJira) -> None:
    comment_id = cloud(cloud_jira).comment("INC-12", "Step disconnect done: 3 sessions closed")

    (comment,) = cloud_jira.comments("INC-12")
    assert comment.id == comment_id
    assert comment.body == "Step disconnect done: 3 sessions closed"
    (request,) = cloud_jira.requests
    assert request.method == "POST"
    assert request.path == "/rest/api/2/issue/INC-12/comment"
    assert request.json() == {"body": "Step disconnect done: 3 sessions closed"}


def test_markup_in_a_comment_reaches_jira_as_text(cloud_jira: FakeJira) -> None:
    cloud(cloud_jira).comment(
        "INC-12", "Office [click|http://evil.example] {noformat} [~accountid:5b10]\nh1. boom"
    )

    (comment,) = cloud_jira.comments("INC-12")
    assert comment.body == (
        r"Office \[click\|http://evil.example\] \{noformat\} \[\~accountid:5b10\]"
        "\n\u200bh1. boom"
    )


def test_report_is_attached_with_its_bytes_name_and_media_type(cloud_jira: FakeJira) -> None:
    report = b"<html>\r\n<p>r\xc3\xa9sum\xc3\xa9</p>\n--boundary-like\r\n" + bytes(range(256))

    attachment_id = cloud(cloud_jira).attach("INC-12", "report-INC-12.html", report, "text/html")

    (attachment,) = cloud_jira.attachments("INC-12")
    assert attachment.id == attachment_id
    assert attachment.filename == "report-INC-12.html"
    assert attachment.media_type == "text/html"
    assert attachment.content == report
    assert cloud_jira.requests[-1].header("x-atlassian-token") == "no-check"


def test_issue_is_read_with_its_fields_and_comments(cloud_jira: FakeJira) -> None:
    tickets = cloud(cloud_jira)
    tickets.comment("INC-12", "Run started")

    issue = tickets.issue("INC-12")

    assert issue["key"] == "INC-12"
    assert issue["fields"]["summary"] == "Office OF-1042 reports ransomware"
    assert [c["body"] for c in issue["fields"]["comment"]["comments"]] == ["Run started"]


def test_cloud_sends_basic_auth_and_data_center_a_bearer_token(
    cloud_jira: FakeJira, dc_jira: FakeJira
) -> None:
    cloud(cloud_jira).comment("INC-12", "from Cloud")
    data_center(dc_jira).attach("INC-13", "report.pdf", b"%PDF-1.7", "application/pdf")

    basic = base64.b64encode(f"{CLOUD_USER}:{CLOUD_TOKEN}".encode()).decode()
    assert cloud_jira.requests[-1].header("authorization") == f"Basic {basic}"
    assert dc_jira.requests[-1].header("authorization") == f"Bearer {DC_TOKEN}"
    assert [c.body for c in cloud_jira.comments("INC-12")] == ["from Cloud"]
    assert [a.content for a in dc_jira.attachments("INC-13")] == [b"%PDF-1.7"]


def test_jira_tickets_is_a_ticket_system_and_hides_its_token(cloud_jira: FakeJira) -> None:
    tickets = cloud(cloud_jira)

    assert isinstance(tickets, TicketSystem)
    assert CLOUD_TOKEN not in repr(tickets)
    assert tickets.ticket_url("INC-12") == f"{cloud_jira.url}/browse/INC-12"


# -- refusals -------------------------------------------------------------------


def test_wrong_cloud_token_is_refused_with_a_hint_and_never_shown(cloud_jira: FakeJira) -> None:
    wrong = "ATATT3xWrongToken999"
    with pytest.raises(IntegrationError) as caught:
        cloud(cloud_jira, token=wrong).comment("INC-12", "hello")

    error = caught.value
    assert error.status_code == 401
    assert error.service == "Jira"
    assert "API token" in error.hint and CLOUD_USER in error.hint
    assert "TOCSIN_SECRET_JIRA_API_TOKEN" in error.hint
    for text in (error.message, error.hint, str(error)):
        assert wrong not in text and CLOUD_TOKEN not in text
    assert cloud_jira.comments("INC-12") == []


def test_wrong_data_center_token_hint_names_the_personal_access_token(dc_jira: FakeJira) -> None:
    wrong = "NjQ5wrongPAT"
    with pytest.raises(IntegrationError) as caught:
        data_center(dc_jira, token=wrong).comment("INC-12", "hello")

    assert caught.value.status_code == 401
    assert "personal access token" in caught.value.hint
    assert wrong not in caught.value.message + caught.value.hint


def test_an_account_without_comment_permission_is_refused_and_told_so(
    cloud_jira: FakeJira,
) -> None:
    with FakeJira(
        token=CLOUD_TOKEN,
        user=CLOUD_USER,
        issues=ISSUES,
        permissions=frozenset({"BROWSE_PROJECTS", "CREATE_ATTACHMENTS"}),
    ) as limited:
        tickets = cloud(limited)
        assert tickets.my_permissions(["BROWSE_PROJECTS", "ADD_COMMENTS"]) == {
            "BROWSE_PROJECTS": True,
            "ADD_COMMENTS": False,
        }
        with pytest.raises(IntegrationError) as refused:
            tickets.comment("INC-12", "hello")
        tickets.attach("INC-12", "report.html", b"<html/>", "text/html")
        assert limited.comments("INC-12") == [] and len(limited.attachments("INC-12")) == 1
    assert refused.value.status_code == 403
    assert "You do not have the permission to comment on this issue." in refused.value.message
    assert "'Add comments'" in refused.value.hint


def test_missing_permission_names_the_project_permission_to_grant(cloud_jira: FakeJira) -> None:
    tickets = cloud(cloud_jira)
    forbidden = {"errorMessages": ["You do not have permission to do this."], "errors": {}}

    cloud_jira.fail_next(1, 403, forbidden)
    with pytest.raises(IntegrationError) as comment_error:
        tickets.comment("INC-12", "hello")
    cloud_jira.fail_next(1, 403, forbidden)
    with pytest.raises(IntegrationError) as attach_error:
        tickets.attach("INC-12", "report.html", b"<html/>", "text/html")

    assert "'Add comments'" in comment_error.value.hint
    assert "'Create attachments'" in attach_error.value.hint
    assert "You do not have permission to do this." in comment_error.value.message
    assert comment_error.value.retryable is False


def test_unknown_ticket_is_reported_as_missing_or_invisible(cloud_jira: FakeJira) -> None:
    with pytest.raises(IntegrationError) as caught:
        cloud(cloud_jira).comment("INC-999", "hello")

    assert caught.value.status_code == 404
    assert (
        "ticket INC-999 does not exist or the Tocsin account cannot see it" in caught.value.message
    )


def test_empty_comment_is_refused_with_jiras_reason(cloud_jira: FakeJira) -> None:
    with pytest.raises(IntegrationError) as caught:
        cloud(cloud_jira).comment("INC-12", "   ")

    assert caught.value.status_code == 400
    assert "Comment body can not be empty!" in caught.value.message


def test_attachment_without_the_xsrf_header_is_refused_like_jira(cloud_jira: FakeJira) -> None:
    response = httpx.post(
        f"{cloud_jira.url}/rest/api/2/issue/INC-12/attachments",
        auth=(CLOUD_USER, CLOUD_TOKEN),
        files={"file": ("report.html", b"<html/>", "text/html")},
    )

    assert response.status_code == 403
    assert response.text == "XSRF check failed"
    assert cloud_jira.attachments("INC-12") == []


# -- busy or unreachable Jira ---------------------------------------------------


def test_rate_limited_call_waits_retry_after_then_succeeds(cloud_jira: FakeJira) -> None:
    cloud_jira.rate_limit_next(1)  # Retry-After: 1
    started = time.monotonic()

    comment_id = cloud(cloud_jira).comment("INC-12", "after the rate limit")

    assert time.monotonic() - started >= 0.9
    assert [r.path for r in cloud_jira.requests] == ["/rest/api/2/issue/INC-12/comment"] * 2
    assert [c.id for c in cloud_jira.comments("INC-12")] == [comment_id]


def test_rate_limit_window_of_the_fake_is_waited_out(cloud_jira: FakeJira) -> None:
    cloud_jira.rate_limit = 2
    cloud_jira.rate_window_seconds = 1.0
    tickets = cloud(cloud_jira)

    for number in range(3):
        tickets.comment("INC-12", f"comment {number}")

    assert [c.body for c in cloud_jira.comments("INC-12")] == [
        "comment 0",
        "comment 1",
        "comment 2",
    ]
    assert len(cloud_jira.requests) == 4  # the third comment was answered 429 once


def test_jira_still_unavailable_after_retries_is_a_retryable_error(cloud_jira: FakeJira) -> None:
    cloud_jira.fail_next(
        10,
        503,
        {"errorMessages": ["Service Unavailable"], "errors": {}},
        {"Retry-After": "0"},
    )

    with pytest.raises(IntegrationError) as caught:
        cloud(cloud_jira).comment("INC-12", "hello")

    assert caught.value.retryable is True
    assert caught.value.status_code == 503
    assert len(cloud_jira.requests) == 4  # the call and three retries


def test_unreachable_jira_is_retryable_with_a_hint_about_the_url() -> None:
    tickets = JiraTickets(f"http://127.0.0.1:{closed_port()}", CLOUD_TOKEN, user=CLOUD_USER)

    with pytest.raises(IntegrationError) as caught:
        tickets.comment("INC-12", "hello")

    assert caught.value.retryable is True
    assert "settings.jira.url" in caught.value.hint
    assert CLOUD_TOKEN not in caught.value.message


# -- settings --------------------------------------------------------------------


def test_from_settings_needs_the_jira_url_and_the_api_token(cloud_jira: FakeJira) -> None:
    secrets = StaticSecrets({"jira_api_token": CLOUD_TOKEN})
    with pytest.raises(ConfigurationError) as no_url:
        JiraTickets.from_settings(load_settings(), secrets)
    configured = load_settings(jira={"url": cloud_jira.url, "user": CLOUD_USER})
    with pytest.raises(ConfigurationError) as no_token:
        JiraTickets.from_settings(configured, StaticSecrets({}))

    assert "TOCSIN_JIRA__URL" in no_url.value.hint
    assert "TOCSIN_SECRET_JIRA_API_TOKEN" in no_token.value.hint
    JiraTickets.from_settings(configured, secrets).comment("INC-12", "configured")
    assert [c.body for c in cloud_jira.comments("INC-12")] == ["configured"]


def test_a_jira_served_over_tls_is_reached_with_the_jira_ca_bundle_setting(
    tmp_path: Path,
) -> None:
    from tocsin.sandbox.tls import LoopbackCA

    ca = LoopbackCA.create(tmp_path / "tls")
    secrets = StaticSecrets({"jira_api_token": CLOUD_TOKEN})
    site = FakeJira(token=CLOUD_TOKEN, user=CLOUD_USER, issues=ISSUES).start(
        tls=ca.server_context()
    )
    try:
        assert site.url.startswith("https://")
        untrusted = load_settings(jira={"url": site.url, "user": CLOUD_USER})
        with pytest.raises(IntegrationError) as caught:
            JiraTickets.from_settings(untrusted, secrets).comment("INC-12", "untrusted")
        assert "CERTIFICATE_VERIFY_FAILED" in caught.value.message
        assert site.comments("INC-12") == []

        trusted = load_settings(
            jira={"url": site.url, "user": CLOUD_USER, "ca_bundle": str(ca.ca_bundle)}
        )
        JiraTickets.from_settings(trusted, secrets).comment("INC-12", "over TLS")
        assert [c.body for c in site.comments("INC-12")] == ["over TLS"]
    finally:
        site.stop()


# -- webhooks ----------------------------------------------------------------------


def received(receiver: WebhookReceiver) -> ReceivedRequest:
    assert receiver.wait_for(lambda: len(receiver.requests) == 1)
    return receiver.requests[0]


def test_signed_webhook_verifies_and_reads_as_a_trigger(
    cloud_jira: FakeJira, receiver: WebhookReceiver
) -> None:
    tickets = cloud(cloud_jira, secret=WEBHOOK_SECRET)

    response = cloud_jira.send_webhook(
        receiver.url + "/webhooks/jira",
        WEBHOOK_SECRET,
        "INC-12",
        delivery_id="delivery-0001",
        triggered_by="Camille Peeters",
    )
    request = received(receiver)

    assert response.status_code == 200
    assert request.header("content-type") == "application/json; charset=utf-8"
    assert tickets.verify_webhook(request.headers, request.body) is True
    trigger = tickets.parse_webhook(request.body, delivery_id=request.header(DELIVERY_ID_HEADER))
    assert trigger == TicketTrigger(
        ticket="INC-12",
        runbook="office-compromise",
        inputs={"office_id": "OF-1042", "office_name": "Dupont Assurances"},
        title="Office OF-1042 reports ransomware",
        url=f"{cloud_jira.url}/browse/INC-12",
        requested_by="Camille Peeters",
        event="jira:issue_created",
        delivery_id="delivery-0001",
    )


def test_tampered_body_wrong_secret_or_missing_signature_do_not_verify(
    cloud_jira: FakeJira, receiver: WebhookReceiver
) -> None:
    cloud_jira.send_webhook(receiver.url, WEBHOOK_SECRET, "INC-12", tamper=True)
    tampered = received(receiver)
    receiver.reset()
    cloud_jira.send_webhook(receiver.url, None, "INC-12")
    unsigned = received(receiver)
    receiver.reset()
    cloud_jira.send_webhook(receiver.url, WEBHOOK_SECRET, "INC-12")
    genuine = received(receiver)

    tickets = cloud(cloud_jira, secret=WEBHOOK_SECRET)
    assert tickets.verify_webhook(tampered.headers, tampered.body) is False
    assert tickets.verify_webhook(unsigned.headers, unsigned.body) is False
    assert "x-hub-signature" not in unsigned.headers
    assert (
        cloud(cloud_jira, secret="another-secret").verify_webhook(genuine.headers, genuine.body)
        is False
    )
    assert cloud(cloud_jira, secret=None).verify_webhook(genuine.headers, genuine.body) is False
    assert tickets.verify_webhook(genuine.headers, genuine.body) is True


def test_retried_delivery_keeps_its_id(cloud_jira: FakeJira, receiver: WebhookReceiver) -> None:
    for _ in range(2):
        cloud_jira.send_webhook(receiver.url, WEBHOOK_SECRET, "INC-13", delivery_id="d-7")
    assert receiver.wait_for(lambda: len(receiver.requests) == 2)

    tickets = cloud(cloud_jira, secret=WEBHOOK_SECRET)
    triggers = [
        tickets.parse_webhook(r.body, delivery_id=r.header(DELIVERY_ID_HEADER))
        for r in receiver.requests
    ]
    assert [t.delivery_id for t in triggers] == ["d-7", "d-7"]
    assert triggers[0].runbook == "portal-account-takeover"  # a plain text field
    assert triggers[0].inputs == {}


def test_data_center_webhook_names_the_user_by_display_name(
    dc_jira: FakeJira, receiver: WebhookReceiver
) -> None:
    dc_jira.send_webhook(receiver.url, WEBHOOK_SECRET, "INC-12", "jira:issue_updated")
    request = received(receiver)

    trigger = data_center(dc_jira).parse_webhook(request.body)
    assert trigger.requested_by == "Sandbox Support Engineer"
    assert trigger.event == "jira:issue_updated"
    assert trigger.delivery_id is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"<html>not json</html>", "the Jira webhook body is not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"webhookEvent": "jira:issue_created", "issue": {}}', "carries no issue key"),
        (b'{"webhookEvent": "comment_created"}', "(comment_created) carries no issue key"),
    ],
)
def test_unreadable_webhook_is_an_input_error(
    cloud_jira: FakeJira, body: bytes, expected: str
) -> None:
    with pytest.raises(InputError) as caught:
        cloud(cloud_jira).parse_webhook(body)

    assert expected in caught.value.message
    assert "Issue created" in caught.value.hint


def test_bad_inputs_in_the_ticket_name_the_ticket_field_and_line(cloud_jira: FakeJira) -> None:
    body = (
        b'{"webhookEvent": "jira:issue_created", "issue": {"key": "INC-14", "fields": '
        b'{"customfield_10101": "office_id=OF-1\\nOF-2"}}}'
    )

    with pytest.raises(InputError) as caught:
        cloud(cloud_jira).parse_webhook(body)

    assert caught.value.message.startswith("ticket INC-14, field customfield_10101: line 2")


# -- the inputs text ---------------------------------------------------------------


def test_inputs_text_reads_lines_semicolons_and_skips_comments() -> None:
    text = "# office\r\noffice_id = OF-1042\n\n  reason=phishing; ticket=INC-12\nquery=a=b;\n"

    assert parse_inputs_text(text) == {
        "office_id": "OF-1042",
        "reason": "phishing",
        "ticket": "INC-12",
        "query": "a=b",
    }
    assert parse_inputs_text("") == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("office_id=OF-1\n\nOF-2", "line 3 of the inputs, 'OF-2', is not name=value"),
        ("a=1; b", "line 1 of the inputs, 'b', is not name=value"),
        ("# c\n=OF-1", "line 2 of the inputs, '=OF-1', has no name before '='"),
        ("a=1\nb=2\na=3", "input 'a' is given twice, on lines 1 and 3"),
    ],
)
def test_inputs_text_errors_name_the_line(text: str, expected: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_inputs_text(text)

    assert expected in caught.value.message
