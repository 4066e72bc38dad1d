"""``notify.staff`` and ``notify.clients``: the office's messages, rendered from its templates
and sent through the configured mail transport (``notify.transport``), exactly once.

A client campaign cannot be unsent: runbooks put it behind an approval gate, which shows the
action's preview (recipient count, how long the campaign takes at the configured rate, the
first message in each language, with placeholders instead of any recipient's data).

Nothing personal reaches the audit trail: the outputs name each recipient by the keyed HMAC
of their address (``tocsin audit hmac --email`` recomputes it) and by their row in the list,
and each message by its SHA-256; the addresses stay in the recipient list.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, Field

from tocsin.actions import ActionContext, action
from tocsin.channel_posts import channel_poster
from tocsin.errors import ActionError, ConfigurationError
from tocsin.integrations.notify import integration
from tocsin.integrations.notify.campaign import Campaign, CampaignItem, CampaignOutcome
from tocsin.integrations.notify.ledger import ledger_for
from tocsin.integrations.notify.messages import (
    RenderedMessage,
    Template,
    choose_language,
    load_template,
    render_message,
)
from tocsin.integrations.notify.pacing import Pacer, duration_sentence
from tocsin.integrations.notify.recipients import (
    Recipient,
    RecipientList,
    read_recipients_file,
    recipients_from_values,
)
from tocsin.integrations.notify.settings import Language, NotifySettings
from tocsin.mail import MailSender, OutgoingMail, mail_sender
from tocsin.settings import SecretStore, Settings

TemplateId = Annotated[
    str,
    Field(pattern=r"^[a-z][a-z0-9-]{0,63}$", description="A message template's id"),
]
CampaignData = Annotated[
    dict[str, Any],
    Field(description="Values the template's fields read (data.<field>): dates, lists, text"),
]
SAMPLE_SHOWN = 1
"""Messages shown per language in the preview."""


# -- what the actions return ------------------------------------------------------------------


class RecipientFailure(BaseModel):
    row: int
    """The recipient's row in the list (1 is the first data row of a CSV file)."""
    recipient: str | None
    """The keyed HMAC of the address; none when the row had no usable address."""
    reason: str


class InDoubt(BaseModel):
    row: int
    recipient: str


class Delivery(BaseModel):
    recipient: str
    message: str
    """sha256:... of the message sent (subject, text and HTML)."""
    status: str


class CampaignResult(BaseModel):
    template: str
    template_version: str
    transport: str
    total: int
    """Recipients in the list (bad rows included)."""
    sent: int
    """Recipients the message reached, in this run and in earlier runs of the incident."""
    sent_this_run: int
    already_sent: int
    failed: int
    failures: list[RecipientFailure]
    in_doubt: list[InDoubt]
    """Recipients whose message was committed when an earlier run died and the transport
    cannot tell whether it left: not sent again; check with the mail service."""
    by_language: dict[str, int]
    retried: int
    elapsed_seconds: float
    messages_per_minute: float
    deliveries: list[Delivery]


class StaffBriefing(BaseModel):
    template: str
    template_version: str
    language: str
    message: str
    """sha256:... of the message."""
    posted_to: str | None
    emailed: bool
    email_failure: str | None
    sent: int
    """Places the briefing reached (the channel, the list)."""


# -- shared ----------------------------------------------------------------------------------


def _notify(settings: Settings) -> NotifySettings:
    return integration.settings_of(settings)


def _office(notify: NotifySettings) -> dict[str, str]:
    return {
        "name": notify.office_name,
        "phone": notify.office_phone,
        "contact": notify.reply_to or notify.from_address or "",
    }


def _context(
    incident: str,
    notify: NotifySettings,
    data: Mapping[str, Any],
    recipient: Recipient | None,
    language: Language,
) -> dict[str, Any]:
    shown: dict[str, Any] = {"name": "", "email": ""}
    if recipient is not None:
        shown = {**recipient.data, "name": recipient.name, "email": recipient.address}
    return {
        "office": _office(notify),
        "incident": {"ticket": incident},
        "recipient": shown,
        "data": dict(data),
        "language": language,
    }


def _message_id(incident: str, step_id: str, recipient: str, from_address: str) -> str:
    """The same on every attempt of the same message (a resumed campaign), unique per
    incident, step and recipient; it says nothing about the recipient."""
    digest = hashlib.sha256(f"{incident}\0{step_id}\0{recipient}".encode()).hexdigest()[:40]
    domain = from_address.rpartition("@")[2] or "tocsin.invalid"
    return f"<{digest}@{domain}>"


def _outgoing(
    message: RenderedMessage, to: str, message_id: str, notify: NotifySettings
) -> OutgoingMail:
    assert notify.from_address is not None  # checked by _sending_settings
    return OutgoingMail(
        to=to,
        subject=message.subject,
        text=message.text,
        html=message.html,
        message_id=message_id,
        from_address=notify.from_address,
        from_name=notify.from_name or notify.office_name,
        reply_to=notify.reply_to or "",
        language=message.language,
    )


def _sending_settings(settings: Settings, action_name: str) -> NotifySettings:
    notify = _notify(settings)
    if not notify.from_address:
        raise ConfigurationError(
            f"{action_name} has no address to send from",
            "set TOCSIN_NOTIFY__FROM_ADDRESS (and TOCSIN_NOTIFY__REPLY_TO, the dedicated "
            "contact clients may answer)",
        )
    return notify


def _recipients(
    notify: NotifySettings,
    settings: Settings,
    recipients_file: str | None,
    recipients: Sequence[Any] | None,
) -> RecipientList:
    if recipients_file is not None:
        folder = notify.recipients_folder or settings.data_dir / "recipients"
        return read_recipients_file(recipients_file, folder)
    if recipients is None:
        raise ConfigurationError(
            "notify.clients was given no recipients",
            "give recipients_file: (a CSV file of the recipients folder) or recipients:",
        )
    return recipients_from_values(list(recipients), "the step's recipients")


def _one_list(parameters: Any) -> None:
    # Neither is caught when the step runs: a templated value is not known at validation.
    if parameters.recipients_file is not None and parameters.recipients is not None:
        raise ValueError("give either recipients_file or recipients, not both")


def _client_template(template_id: str, settings: Settings) -> Template:
    template = load_template(template_id, settings)
    if template.audience != "clients":
        raise ConfigurationError(
            f"the template {template_id!r} is written for the office's {template.audience}, "
            "not for its clients",
            "use notify.staff for it, or a client template (tocsin actions notify.clients)",
        )
    return template


def _languages(
    people: Sequence[Recipient], notify: NotifySettings
) -> tuple[list[Language], Counter[Language]]:
    """Each recipient's language (theirs, else the office's), in list order, and the counts."""
    chosen = [choose_language(person.language, notify.office_language) for person in people]
    return chosen, Counter(chosen)


def _check_renders(
    template: Template,
    languages: Sequence[Language],
    incident: str,
    notify: NotifySettings,
    data: Mapping[str, Any],
) -> dict[Language, RenderedMessage]:
    """Render one sample per language before anything is sent: a missing field or a broken
    template fails the step with nobody e-mailed."""
    return {
        language: render_message(
            template, language, _context(incident, notify, data, _placeholder(language), language)
        )
        for language in languages
    }


def _placeholder(language: Language) -> Recipient:
    label = {"fr": "[nom du destinataire]", "nl": "[naam van de ontvanger]"}.get(
        language, "[recipient's name]"
    )
    return Recipient(
        row=0,
        address="recipient@example.invalid",
        key_address="recipient@example.invalid",
        name=label,
        language=language,
        data={},
    )


def _transport_sentence(notify: NotifySettings) -> str:
    if notify.transport == "smtp":
        where = f"{notify.smtp_host}:{notify.smtp_port}" if notify.smtp_host else "(no host set)"
        return f"SMTP {where}"
    if notify.transport == "graph":
        return "Microsoft Graph sendMail (4 at a time)"
    return notify.transport


def _rate(notify: NotifySettings, asked: float | None) -> float:
    """The campaign's rate: the configured one, or a lower one the step asks for."""
    return min(notify.messages_per_minute, asked) if asked else notify.messages_per_minute


def _refuse_over_daily_limit(count: int, notify: NotifySettings) -> None:
    if count > notify.recipients_per_day:
        days = -(-count // notify.recipients_per_day)
        raise ConfigurationError(
            f"{count:,} recipients is more than the {notify.recipients_per_day:,} a day the mail "
            f"service allows (notify.recipients_per_day): the campaign would take {days} days",
            "split the list into one file per day, or send through a service with a higher "
            "limit and raise notify.recipients_per_day to match it",
        )


# -- notify.clients ----------------------------------------------------------------------------


def _describe_clients(
    template: str, recipients_file: str | None, recipients: list[Any] | None, **_: Any
) -> str:
    source = (
        f"every recipient of {recipients_file}"
        if recipients_file
        else f"{len(recipients or [])} recipient(s) from an earlier step"
    )
    return f"e-mail {source} the message {template} (cannot be unsent)"


def _preview_clients(settings: Settings, secrets: SecretStore, parameters: dict[str, Any]) -> str:
    notify = _notify(settings)
    template = _client_template(parameters["template"], settings)
    found = _recipients(
        notify, settings, parameters.get("recipients_file"), parameters.get("recipients")
    )
    _, counts = _languages(found.recipients, notify)
    rate = _rate(notify, parameters.get("messages_per_minute"))
    lines = [
        f"{len(found.recipients):,} recipient(s) ("
        + " · ".join(f"{language} {count:,}" for language, count in sorted(counts.items()))
        + ")"
        + (f"; {found.duplicates} duplicate(s) left out" if found.duplicates else ""),
    ]
    if found.problems:
        rows = ", ".join(str(problem.row) for problem in found.problems[:10])
        more = f" and {len(found.problems) - 10} more" if len(found.problems) > 10 else ""
        lines.append(f"{len(found.problems)} row(s) cannot be sent to: rows {rows}{more}")
    lines.append(
        f"via {_transport_sentence(notify)} at {rate:g} per minute: "
        f"{duration_sentence(len(found.recipients), rate)}"
    )
    if len(found.recipients) > notify.recipients_per_day:
        lines.append(
            f"REFUSED: more than notify.recipients_per_day ({notify.recipients_per_day:,})"
        )
    lines.append(f"template {template.id} v{template.version}; first message in each language:")
    samples = _check_renders(
        template, sorted(counts) or [notify.office_language], "", notify, parameters["data"]
    )
    for language, sample in samples.items():
        lines += [f"--- {language} ---", f"Subject: {sample.subject}", sample.text.strip()]
    return "\n".join(lines)


@action(
    "notify.clients",
    destructive=True,
    idempotent=True,  # its delivery ledger skips whoever a crashed run already reached
    needs_approval=True,
    communicates="email",
    describe=_describe_clients,
    preview=_preview_clients,
    check=_one_list,
)
def notify_clients(
    context: ActionContext,
    *,
    template: TemplateId,
    recipients_file: Annotated[
        str | None,
        Field(description="A CSV file in the recipients folder (notify.recipients_folder)"),
    ] = None,
    recipients: Annotated[
        list[Any] | None,
        Field(description="Addresses, or objects with email/name/language, from an earlier step"),
    ] = None,
    data: CampaignData = {},  # noqa: B006 - pydantic copies defaults
    messages_per_minute: Annotated[
        float | None,
        Field(gt=0, description="A lower rate than notify.messages_per_minute, if wanted"),
    ] = None,
) -> CampaignResult:
    """E-mail each recipient of a list the template's message in their language, exactly once."""
    notify = _sending_settings(context.settings, "notify.clients")
    chosen_template = _client_template(template, context.settings)
    found = _recipients(notify, context.settings, recipients_file, recipients)
    _refuse_over_daily_limit(len(found.recipients), notify)
    chosen, counts = _languages(found.recipients, notify)
    _check_renders(chosen_template, sorted(counts), context.incident, notify, data)
    sender = mail_sender(notify.transport, context.settings, context.secrets)
    try:
        outcome = _send_campaign(context, notify, chosen_template, found, chosen, data, sender)
    finally:
        sender.close()
    failures = [
        RecipientFailure(row=problem.row, recipient=None, reason=problem.reason)
        for problem in found.problems
    ] + [
        RecipientFailure(row=row, recipient=recipient, reason=f"row {row}: {detail}")
        for row, recipient, detail in outcome.refused
    ]
    return CampaignResult(
        template=chosen_template.id,
        template_version=chosen_template.version,
        transport=sender.name,
        total=len(found.recipients) + len(found.problems),
        sent=outcome.sent + outcome.already_sent,
        sent_this_run=outcome.sent,
        already_sent=outcome.already_sent,
        failed=len(failures),
        failures=sorted(failures, key=lambda failure: failure.row),
        in_doubt=[InDoubt(row=row, recipient=recipient) for row, recipient in outcome.in_doubt],
        by_language=dict(sorted(counts.items())),
        retried=outcome.retried,
        elapsed_seconds=round(outcome.elapsed_seconds, 3),
        messages_per_minute=_rate(notify, messages_per_minute),
        deliveries=[Delivery.model_validate(item) for item in outcome.deliveries],
    )


def _send_campaign(
    context: ActionContext,
    notify: NotifySettings,
    template: Template,
    found: RecipientList,
    chosen: Sequence[Language],
    data: Mapping[str, Any],
    sender: MailSender,
) -> CampaignOutcome:
    assert notify.from_address is not None
    items: list[CampaignItem] = []
    for person, language in zip(found.recipients, chosen, strict=True):
        key = context.fingerprint_of(person.key_address)
        items.append(
            CampaignItem(
                recipient=key,
                row=person.row,
                build=_builder(context, notify, template, person, language, data, key),
            )
        )
    with ledger_for(context.settings) as ledger:
        campaign = Campaign(
            ledger,
            context.incident,
            context.step_id,
            sender,
            Pacer(_rate(notify, None)),
            retries=notify.retries,
            retry_delay_seconds=notify.retry_delay_seconds,
            progress=context.report_progress,
        )
        return campaign.run(items)


def _builder(
    context: ActionContext,
    notify: NotifySettings,
    template: Template,
    person: Recipient,
    language: Language,
    data: Mapping[str, Any],
    key: str,
) -> Any:
    assert notify.from_address is not None
    from_address = notify.from_address

    def build() -> OutgoingMail:
        message = render_message(
            template, language, _context(context.incident, notify, data, person, language)
        )
        message_id = _message_id(context.incident, context.step_id, key, from_address)
        return _outgoing(message, person.address, message_id, notify)

    return build


# -- notify.staff ------------------------------------------------------------------------------


def _describe_staff(channel: str | None, email_list: str | None, template: str, **_: Any) -> str:
    places = [
        place
        for place in (channel and f"chat channel {channel}", email_list and "the staff list")
        if place
    ]
    return f"brief the office's staff ({' and '.join(places) or 'the configured places'}) with {template}"


def _preview_staff(settings: Settings, secrets: SecretStore, parameters: dict[str, Any]) -> str:
    notify = _notify(settings)
    template = load_template(parameters["template"], settings)
    language = parameters.get("language") or notify.office_language
    message = render_message(
        template, language, _context("", notify, parameters["data"], None, language)
    )
    return f"Subject: {message.subject}\n{message.text.strip()}"


@action(
    "notify.staff",
    destructive=True,
    idempotent=False,
    communicates="staff",
    describe=_describe_staff,
    preview=_preview_staff,
)
def notify_staff(
    context: ActionContext,
    *,
    data: CampaignData = {},  # noqa: B006 - pydantic copies defaults
    template: TemplateId = "staff-briefing",
    channel: Annotated[
        str | None,
        Field(description="Chat channel of the staff (#office-staff); none: notify.staff_channel"),
    ] = None,
    email_list: Annotated[
        str | None,
        Field(description="E-mail list of the staff; none: notify.staff_list"),
    ] = None,
    language: Annotated[
        Language | None, Field(description="fr, nl or en; none: notify.office_language")
    ] = None,
    chat: Annotated[str, Field(description="Which chat the channel is in")] = "slack",
) -> StaffBriefing:
    """Brief the office's staff in their chat channel and on their e-mail list."""
    notify = _notify(context.settings)
    chosen = load_template(template, context.settings)
    if chosen.audience != "staff":
        raise ConfigurationError(
            f"the template {template!r} is written for clients, not for the office's staff",
            "use notify.clients for it, or a staff template (staff-briefing)",
        )
    place = channel or notify.staff_channel
    address = email_list or notify.staff_list
    if not place and not address:
        raise ActionError(
            "notify.staff",
            "no channel and no e-mail list to brief the staff on",
            "give channel: or email_list: in the step, or set TOCSIN_NOTIFY__STAFF_CHANNEL / "
            "TOCSIN_NOTIFY__STAFF_LIST",
        )
    spoken = language or notify.office_language
    message = render_message(chosen, spoken, _context(context.incident, notify, data, None, spoken))
    emailed, email_failure = False, None
    if address:
        emailed, email_failure = _email_staff(context, message, address)
    posted = None
    if place:
        poster = channel_poster(chat, context.settings, context.secrets)
        posted = poster.post(place, f"{message.subject}\n\n{message.text.strip()}")
    if address and not emailed and not posted:
        raise ActionError("notify.staff", f"the staff list was not reached: {email_failure}", "")
    return StaffBriefing(
        template=chosen.id,
        template_version=chosen.version,
        language=spoken,
        message=message.digest(),
        posted_to=posted,
        emailed=emailed,
        email_failure=email_failure,
        sent=int(emailed) + int(posted is not None),
    )


def _email_staff(
    context: ActionContext, message: RenderedMessage, address: str
) -> tuple[bool, str | None]:
    """One message to the staff list, through the campaign's ledger (sent once, even when
    the step is run again after a crash)."""
    notify = _sending_settings(context.settings, "notify.staff")
    assert notify.from_address is not None
    key = context.fingerprint_of(address.strip().lower())
    mail = _outgoing(
        message,
        address,
        _message_id(context.incident, context.step_id, key, notify.from_address),
        notify,
    )
    sender = mail_sender(notify.transport, context.settings, context.secrets)
    try:
        with ledger_for(context.settings) as ledger:
            outcome = Campaign(
                ledger,
                context.incident,
                context.step_id,
                sender,
                Pacer(notify.messages_per_minute),
                retries=notify.retries,
                retry_delay_seconds=notify.retry_delay_seconds,
                progress=None,
            ).run([CampaignItem(recipient=key, row=1, build=lambda: mail)])
    finally:
        sender.close()
    if outcome.sent + outcome.already_sent:
        return True, None
    if outcome.refused:
        return False, outcome.refused[0][2]
    if outcome.in_doubt:
        return False, "in doubt after a crash: check the list's archive before sending again"
    return False, "not sent"
