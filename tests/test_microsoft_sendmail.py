"""A campaign's mail sent through Microsoft Graph sendMail (``GraphMailSender``), against
the fake tenant over TLS on loopback, signed in with msal: the payload Graph receives,
Outlook's 4 requests per mailbox, its 429s with and without Retry-After, refused
recipients, a missing Mail.Send, Sent Items read back after a crash."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests import microsoft_support
from tests.microsoft_support import fake_tenant, settings_for
from tocsin.errors import ConfigurationError, IntegrationError
from tocsin.integrations.microsoft import CLIENT_SECRET
from tocsin.integrations.microsoft.fake import ALL_ROLES, FakeApp, FakeMicrosoft, compromised_tenant
from tocsin.integrations.microsoft.fake_mail import add_mailbox, deliveries, peak_in_flight, sent
from tocsin.integrations.microsoft.mail_sender import GraphMailSender, graph_mail_sender
from tocsin.integrations.notify.campaign import Campaign, CampaignItem
from tocsin.integrations.notify.ledger import ledger_at
from tocsin.integrations.notify.pacing import Pacer
from tocsin.mail import OutgoingMail, SendOutcome, SendResult, mail_sender
from tocsin.outbound import trusting
from tocsin.sandbox.tls import LoopbackCA
from tocsin.settings import Settings, StaticSecrets

NOTICES = "notices@broker-office.example"
MAILER_ID = "22222222-3333-4444-8555-mailerapp000"
MAILER_SECRET = "mailer~secret"
NO_MAIL_ID = "33333333-4444-4555-8666-nomailapp000"
NO_MAIL_SECRET = "no-mail~secret"
SENT_ITEMS = f"/v1.0/users/{quote(NOTICES)}/mailFolders/SentItems/messages"
SEND = f"/v1.0/users/{quote(NOTICES)}/sendMail"


@pytest.fixture(scope="module")
def tenant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeMicrosoft, LoopbackCA]]:
    apps = (
        FakeApp(client_id=MAILER_ID, secret=MAILER_SECRET, roles=ALL_ROLES | {"Mail.Send"}),
        FakeApp(client_id=NO_MAIL_ID, secret=NO_MAIL_SECRET, roles=ALL_ROLES - {"Mail.Send"}),
    )
    seeded = add_mailbox(compromised_tenant(), NOTICES, "Broker Office notices")
    with fake_tenant(tmp_path_factory.mktemp("sendmail"), apps=apps, tenant=seeded) as started:
        yield started


# The Microsoft modules' shared per-test fixtures (tests.microsoft_support).
fake = microsoft_support.fake


@pytest.fixture
def settings(tenant: tuple[FakeMicrosoft, LoopbackCA], fake: FakeMicrosoft) -> Settings:
    return settings_for(fake, tenant[1], client_id=MAILER_ID, mail_sender=NOTICES)


@pytest.fixture
def sender(settings: Settings) -> Iterator[GraphMailSender]:
    made = graph_mail_sender(settings, StaticSecrets({CLIENT_SECRET: MAILER_SECRET}))
    made.check()  # a token the fake knows (its reset forgot the ones msal still caches)
    yield made
    made.close()


def mail(number: int, *, to: str = "", html: str | None = "<p>Bonjour</p>") -> OutgoingMail:
    return OutgoingMail(
        to=to or f"client{number:04d}@clients.example",
        subject="Votre dossier: prudence avec les demandes de paiement",
        text="Bonjour,\nNe payez jamais sur un changement de coordonnées bancaires reçu par e-mail.",
        html=html,
        message_id=f"<campaign-7.{number}@tocsin.broker-office.example>",
        from_address=NOTICES,
        from_name="Broker Office",
        reply_to="contact@broker-office.example",
        language="fr",
        headers={"X-Tocsin-Campaign": "INC-13/notify", "List-Unsubscribe": "<mailto:x@y.z>"},
    )


def sends(fake: FakeMicrosoft) -> int:
    return sum(1 for r in fake.requests if r.method == "POST" and r.path == SEND)


def test_a_message_is_posted_as_graph_reads_it_and_committed_just_before(
    fake: FakeMicrosoft, sender: GraphMailSender
) -> None:
    before_post: list[int] = []
    result = sender.send(mail(1), lambda: before_post.append(sends(fake)))
    assert result.outcome is SendOutcome.SENT
    assert before_post == [0] and sends(fake) == 1  # committed once, before the POST
    assert sent(fake) == [
        {
            "message": {
                "subject": "Votre dossier: prudence avec les demandes de paiement",
                "body": {"contentType": "HTML", "content": "<p>Bonjour</p>"},
                "toRecipients": [{"emailAddress": {"address": "client0001@clients.example"}}],
                "from": {"emailAddress": {"address": NOTICES, "name": "Broker Office"}},
                "internetMessageId": "<campaign-7.1@tocsin.broker-office.example>",
                "replyTo": [{"emailAddress": {"address": "contact@broker-office.example"}}],
                "internetMessageHeaders": [{"name": "X-Tocsin-Campaign", "value": "INC-13/notify"}],
            },
            "saveToSentItems": True,
        }
    ]
    assert deliveries(fake) == {"client0001@clients.example": 1}
    assert sender.describe() == f"Microsoft Graph sendMail from {NOTICES} (4 at a time)"


def test_a_text_only_message_goes_as_text(fake: FakeMicrosoft, sender: GraphMailSender) -> None:
    assert sender.send(mail(2, html=None), lambda: None).outcome is SendOutcome.SENT
    body = sent(fake)[0]["message"]["body"]
    assert body["contentType"] == "Text" and body["content"].startswith("Bonjour,\nNe payez")


def raw_client(sender: GraphMailSender) -> httpx.Client:
    """A plain client with the sender's token, to speak to the fake as any caller could."""
    verify = trusting(sender._graph.settings.ca_bundle)
    assert verify is not None
    return httpx.Client(verify=verify, headers={"Authorization": f"Bearer {sender._graph.token()}"})


def test_the_fake_refuses_a_malformed_body(fake: FakeMicrosoft, sender: GraphMailSender) -> None:
    token = sender._graph.token()
    with raw_client(sender) as client:
        for body in (
            b'{"message": {"toRecipients": "someone"}}',
            b'{"mesage": {}}',
            b'{"message": 3}',
            b'{"message": {"body": {"contentType": "RTF", "content": ""}}}',
            b"not json",
        ):
            answer = client.post(
                fake.url + SEND,
                content=body,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            assert answer.status_code == 400, body
    assert deliveries(fake) == {}


def test_eight_threads_never_put_more_than_four_requests_in_flight(
    fake: FakeMicrosoft, sender: GraphMailSender
) -> None:
    fake.mail.latency_seconds = 0.3
    start = threading.Barrier(8)

    def one(number: int) -> SendResult:
        start.wait(timeout=10)
        return sender.send(mail(number), lambda: None)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(16)))
    assert [r.outcome for r in results] == [SendOutcome.SENT] * 16
    assert peak_in_flight(fake, NOTICES) == 4  # 4 at once, never 5
    assert fake.mail.throttled["MailboxConcurrency"] == 0


def test_outlooks_mailbox_concurrency_429_comes_back_as_retry(
    fake: FakeMicrosoft, settings: Settings
) -> None:
    # Two senders on one mailbox (two processes, say) each keep their own 4: Outlook sees 8.
    fake.mail.latency_seconds = 1.0
    secrets = StaticSecrets({CLIENT_SECRET: MAILER_SECRET})
    senders = [graph_mail_sender(settings, secrets) for _ in range(2)]
    for each in senders:
        each.check()  # signed in before the race
    start = threading.Barrier(8)

    def one(number: int) -> SendResult:
        start.wait(timeout=10)
        return senders[number % 2].send(mail(number), lambda: None)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    retried = [r for r in results if r.outcome is SendOutcome.RETRY]
    assert retried and fake.mail.throttled["MailboxConcurrency"] == len(retried)
    assert all("MailboxConcurrency" in r.detail and r.retry_after == 1.0 for r in retried)
    assert len(deliveries(fake)) == 8 - len(retried)


@pytest.mark.parametrize(("retry_after", "expected"), [("1.5", 1.5), (None, None)])
def test_a_throttled_send_is_returned_at_once_with_its_retry_after(
    fake: FakeMicrosoft, sender: GraphMailSender, retry_after: str | None, expected: float | None
) -> None:
    fake.throttle_mail(next_n=1, retry_after=retry_after)
    waited: list[float] = []
    sender._mail.sleep = waited.append  # any wait inside the sender would show here
    result = sender.send(mail(3), lambda: None)
    assert result.outcome is SendOutcome.RETRY and result.retry_after == expected
    assert result.detail.startswith("429 ApplicationThrottled")
    assert waited == [] and deliveries(fake) == {}
    assert sender.send(mail(3), lambda: None).outcome is SendOutcome.SENT
    assert deliveries(fake) == {"client0003@clients.example": 1}


def test_an_invalid_recipient_is_refused_without_its_address(
    fake: FakeMicrosoft, sender: GraphMailSender
) -> None:
    result = sender.send(mail(4, to="jean.dupont@invalid.example"), lambda: None)
    assert result.outcome is SendOutcome.REFUSED
    assert "ErrorInvalidRecipients" in result.detail and result.detail.startswith("400 ")
    assert "jean.dupont" not in result.detail and "invalid.example" not in result.detail
    assert deliveries(fake) == {}


def test_an_app_without_mail_send_stops_the_campaign_naming_the_permission(
    tenant: tuple[FakeMicrosoft, LoopbackCA], fake: FakeMicrosoft
) -> None:
    settings = settings_for(fake, tenant[1], client_id=NO_MAIL_ID, mail_sender=NOTICES)
    sender = mail_sender("graph", settings, StaticSecrets({CLIENT_SECRET: NO_MAIL_SECRET}))
    committed: list[bool] = []
    with pytest.raises(IntegrationError) as raised:
        sender.send(mail(5), lambda: committed.append(True))
    assert raised.value.status_code == 403
    assert "Mail.Send" in raised.value.message and "ErrorAccessDenied" in raised.value.message
    assert "Mail.Send" in raised.value.hint and "Grant admin consent" in raised.value.hint
    assert deliveries(fake) == {}
    with pytest.raises(IntegrationError) as checked:
        sender.check()  # seen before any mail goes: the token lacks the role
    assert "Mail.Send" in checked.value.message and sends(fake) == 1


def test_reconcile_finds_what_left_in_sent_items(
    fake: FakeMicrosoft, sender: GraphMailSender
) -> None:
    assert sender.send(mail(6), lambda: None).outcome is SendOutcome.SENT
    assert sender.reconcile(mail(6)) is True
    assert sender.reconcile(mail(7)) is False
    listing = [r for r in fake.requests if r.path == SENT_ITEMS]
    assert listing[-1].query["$filter"] == [
        "internetMessageId eq '<campaign-7.7@tocsin.broker-office.example>'"
    ]


def test_reconcile_cannot_tell_when_graph_cannot_answer(
    fake: FakeMicrosoft, sender: GraphMailSender
) -> None:
    sender._graph.sleep = lambda seconds: None
    fake.fail_next(10, 500)
    assert sender.reconcile(mail(8)) is None


def test_check_reads_the_mailbox_and_sends_nothing(
    fake: FakeMicrosoft, sender: GraphMailSender
) -> None:
    mark = len(fake.requests)
    sender.check()
    paths = [r.path for r in fake.requests[mark:]]
    assert paths == [f"/v1.0/users/{quote(NOTICES)}", SENT_ITEMS]
    assert fake.requests[-2].query["$select"] == ["id,mail"]
    assert sends(fake) == 0 and deliveries(fake) == {}


def test_check_names_a_mailbox_the_tenant_lacks(
    tenant: tuple[FakeMicrosoft, LoopbackCA], fake: FakeMicrosoft
) -> None:
    settings = settings_for(
        fake, tenant[1], client_id=MAILER_ID, mail_sender="nobody@broker-office.example"
    )
    sender = graph_mail_sender(settings, StaticSecrets({CLIENT_SECRET: MAILER_SECRET}))
    with pytest.raises(IntegrationError) as raised:
        sender.check()
    assert "nobody@broker-office.example" in raised.value.message


def test_without_a_sending_mailbox_the_factory_says_what_to_set(
    tenant: tuple[FakeMicrosoft, LoopbackCA], fake: FakeMicrosoft
) -> None:
    settings = settings_for(fake, tenant[1], client_id=MAILER_ID)
    with pytest.raises(ConfigurationError) as raised:
        mail_sender("graph", settings, StaticSecrets({CLIENT_SECRET: MAILER_SECRET}))
    assert "TOCSIN_MICROSOFT__MAIL_SENDER" in raised.value.hint


def test_a_throttled_campaign_of_200_reaches_everyone_exactly_once(
    fake: FakeMicrosoft, sender: GraphMailSender
) -> None:
    fake.throttle_mail(every_n=9, retry_after="0.05")
    stop = threading.Event()
    outcomes: dict[int, SendResult] = {}

    def deliver(number: int) -> None:
        # The campaign's loop in small: send again after the Retry-After, a bounded number of times.
        for _ in range(20):
            result = sender.send(mail(number), lambda: None)
            if result.outcome is not SendOutcome.RETRY:
                break
            stop.wait(result.retry_after if result.retry_after is not None else 0.05)
        outcomes[number] = result

    with ThreadPoolExecutor(sender.concurrency * 2) as pool:
        list(pool.map(deliver, range(200)))
    assert {r.outcome for r in outcomes.values()} == {SendOutcome.SENT}
    assert fake.mail.throttled["throttle"] >= 200 // 9
    assert deliveries(fake) == {f"client{n:04d}@clients.example": 1 for n in range(200)}
    assert peak_in_flight(fake, NOTICES) <= 4


def test_a_busy_or_silent_graph_is_retried_later(
    tenant: tuple[FakeMicrosoft, LoopbackCA], fake: FakeMicrosoft, sender: GraphMailSender
) -> None:
    fake.fail_next(1, 503, headers={"Retry-After": "2.128"})
    busy = sender.send(mail(9), lambda: None)
    assert busy.outcome is SendOutcome.RETRY and busy.retry_after == 2.128
    fake.fail_next(1, 504)
    assert sender.send(mail(9), lambda: None).outcome is SendOutcome.RETRY
    impatient = graph_mail_sender(
        settings_for(
            fake, tenant[1], client_id=MAILER_ID, mail_sender=NOTICES, timeout_seconds=0.5
        ),
        StaticSecrets({CLIENT_SECRET: MAILER_SECRET}),
    )
    impatient.check()
    fake.stall_next(1, seconds=3)
    silent = impatient.send(mail(9), lambda: None)
    # posted, no answer: it may have left, so the campaign reconciles before sending again
    assert silent.outcome is SendOutcome.UNCONFIRMED and "did not answer" in silent.detail
    assert deliveries(fake) == {}


def test_the_mailboxs_ten_minute_budget_answers_429_until_it_has_room(
    fake: FakeMicrosoft, sender: GraphMailSender
) -> None:
    fake.mail.requests_per_window = 4  # the fixture's check read Sent Items once: it counts
    results = [sender.send(mail(n), lambda: None) for n in range(4)]
    assert [r.outcome for r in results] == [SendOutcome.SENT] * 3 + [SendOutcome.RETRY]
    assert results[3].retry_after is not None and 590 < results[3].retry_after <= 600
    assert fake.mail.throttled["MailboxRequestLimit"] == 1


def test_sent_items_answers_by_its_well_known_name_in_any_case_and_by_its_id(
    fake: FakeMicrosoft, sender: GraphMailSender
) -> None:
    assert sender.send(mail(10), lambda: None).outcome is SendOutcome.SENT
    folder = next(
        f["id"]
        for f in fake.tenant.folders[fake.user(NOTICES)["id"]]
        if f["displayName"] == "Sent Items"
    )
    wanted = {"$filter": "internetMessageId eq '<campaign-7.10@tocsin.broker-office.example>'"}
    with raw_client(sender) as client:
        for name in ("sentitems", "SENTITEMS", folder):
            answer = client.get(
                f"{fake.url}/v1.0/users/{NOTICES}/mailFolders/{name}/messages", params=wanted
            )
            assert answer.status_code == 200, name
            assert [m["subject"] for m in answer.json()["value"]] == [mail(10).subject]
        inbox = client.get(f"{fake.url}/v1.0/users/{NOTICES}/mailFolders/Inbox/messages")
        assert inbox.status_code == 400  # not served by the mail fake


def test_a_token_graph_keeps_refusing_stops_the_campaign(
    tenant: tuple[FakeMicrosoft, LoopbackCA], fake: FakeMicrosoft
) -> None:
    # Graph at another name than the one the token is for: every token refused (audience).
    settings = settings_for(
        fake,
        tenant[1],
        client_id=MAILER_ID,
        mail_sender=NOTICES,
        graph_url=f"https://localhost:{fake.port}",
    )
    sender = graph_mail_sender(settings, StaticSecrets({CLIENT_SECRET: MAILER_SECRET}))
    with pytest.raises(IntegrationError) as raised:
        sender.send(mail(11), lambda: None)
    assert raised.value.status_code == 401 and "Invalid audience" in raised.value.message
    assert "Mail.Send" in raised.value.hint
    assert deliveries(fake) == {}


# -- through the notify campaign ---------------------------------------------------------------


def test_a_throttled_graph_campaign_completes_exactly_once_with_reconciled_silences(
    tenant: tuple[FakeMicrosoft, LoopbackCA], fake: FakeMicrosoft, tmp_path: Path
) -> None:
    """notify's campaign over Graph: 300 recipients, Outlook throttling every 7th request,
    and two POSTs that take effect but never answer (the sender says UNCONFIRMED): the
    campaign reconciles those from Sent Items instead of sending them again."""
    impatient = graph_mail_sender(
        settings_for(
            fake, tenant[1], client_id=MAILER_ID, mail_sender=NOTICES, timeout_seconds=0.5
        ),
        StaticSecrets({CLIENT_SECRET: MAILER_SECRET}),
    )
    impatient.check()
    fake.throttle_mail(every_n=7, retry_after="0.05")
    fake.stall_next(2, seconds=1.5)  # the fake still handles them: they leave, unanswered
    items = [
        CampaignItem(recipient=f"hmac-sha256:{n:064x}", row=n + 1, build=lambda n=n: mail(n))
        for n in range(300)
    ]
    with ledger_at(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        outcome = Campaign(
            ledger,
            "INC-13",
            "notify",
            impatient,
            Pacer(60_000),
            retries=10,
            retry_delay_seconds=0.05,
            progress=None,
        ).run(items)
    impatient.close()
    assert outcome.sent == 300, (outcome.refused, outcome.in_doubt)
    assert outcome.refused == [] and outcome.in_doubt == []
    assert outcome.retried >= 300 // 7
    assert deliveries(fake) == {f"client{n:04d}@clients.example": 1 for n in range(300)}
    assert peak_in_flight(fake, NOTICES) <= 4
