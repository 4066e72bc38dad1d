"""How Tocsin sends the office's messages: which mail transport, from whom, at what rate."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Language = Literal["fr", "nl", "en"]
LANGUAGES: tuple[Language, ...] = ("fr", "nl", "en")


class NotifySettings(BaseModel):
    """The ``notify`` slot of the settings (``TOCSIN_NOTIFY__SMTP_HOST``...): docs/notify.md."""

    model_config = ConfigDict(extra="forbid")

    transport: str = Field(
        "smtp",
        pattern=r"^[a-z][a-z0-9_-]*$",
        description="How mail is sent: smtp (an SMTP relay with STARTTLS), or graph (Microsoft "
        "Graph sendMail from the mailbox notify.sender, with the microsoft settings)",
    )
    from_address: str | None = Field(
        None, description="The address messages come from (notices@broker-office.example)"
    )
    from_name: str = Field("", description="The name shown beside it (Cabinet Dupont)")
    reply_to: str | None = Field(
        None,
        description="The dedicated contact address replies go to (incident@broker-office.example); "
        "client messages also name it as the place to ask questions",
    )
    office_name: str = Field("", description="The office's name, as clients know it")
    office_language: Language = Field(
        "fr", description="Language of a recipient whose language is not given (fr, nl, en)"
    )
    office_phone: str = Field(
        "", description="A phone number clients already know, to call back on (+32 2 123 45 67)"
    )
    smtp_host: str | None = Field(None, description="SMTP relay host (smtp.office365.com)")
    smtp_port: int = Field(587, ge=1, le=65535, description="SMTP port (587: submission)")
    smtp_username: str | None = Field(
        None, description="SMTP user name; the password is the secret smtp_password"
    )
    smtp_security: Literal["starttls", "tls", "none"] = Field(
        "starttls",
        description="starttls (port 587), tls (implicit TLS, port 465), or none (only to a relay "
        "on this machine: 127.0.0.1 or ::1)",
    )
    ca_bundle: Path | None = Field(
        None,
        description="PEM file of CA certificates trusted besides the system's, to reach the SMTP "
        "relay (an internal CA; the sandbox sets its own)",
    )
    timeout_seconds: float = Field(30.0, gt=0, description="How long one SMTP exchange may take")
    messages_per_minute: float = Field(
        30.0,
        gt=0,
        description="Sending rate of a campaign (Exchange Online: 30 messages per minute)",
    )
    recipients_per_day: int = Field(
        10_000,
        ge=1,
        description="Most recipients one campaign sends to in 24 hours (Exchange Online: 10,000); "
        "a bigger list is refused with the number of days it would take",
    )
    retries: int = Field(
        3, ge=0, le=10, description="Attempts more for a recipient after a transient failure"
    )
    retry_delay_seconds: float = Field(
        30.0, ge=0, description="First wait before a transient failure is retried (doubles)"
    )
    recipients_folder: Path | None = Field(
        None,
        description="The only folder recipient lists (CSV) are read from; a runbook names a file "
        "in it. None: <data_dir>/recipients",
    )
    templates_folder: Path | None = Field(
        None,
        description="A folder of the office's own message templates (same format as the shipped "
        "ones); a template there replaces a shipped one of the same id",
    )
    drafts_folder: Path | None = Field(
        None,
        description="Where drafts for the authorities are written. None: <data_dir>/drafts",
    )
    staff_channel: str | None = Field(
        None, description="Chat channel of the office's staff (slack:#office-staff)"
    )
    staff_list: str | None = Field(
        None, description="E-mail list of the office's staff (staff@broker-office.example)"
    )
    dpo_contact: str = Field(
        "",
        description="The data-protection officer or contact point named in a breach "
        "notification (name, e-mail, phone)",
    )
    controller_name: str = Field(
        "", description="The data controller's legal name and number (BCE/KBO, SIREN)"
    )
