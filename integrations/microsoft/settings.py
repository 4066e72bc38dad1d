"""Which Microsoft 365 tenant Tocsin acts on, as which app, and through which cloud's hosts."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class MicrosoftSettings(BaseModel):
    """The ``microsoft`` slot of the settings (``TOCSIN_MICROSOFT__TENANT_ID``...).

    The hosts default to Microsoft's global cloud; a sovereign cloud sets its own
    (docs/microsoft.md, "Sovereign clouds").
    """

    model_config = ConfigDict(extra="forbid")

    tenant_id: str | None = Field(
        None,
        description="Directory (tenant) id of the Microsoft 365 tenant, a GUID (or its "
        "domain, contoso.onmicrosoft.com)",
    )
    client_id: str | None = Field(
        None,
        description="Application (client) id of the app registration Tocsin signs in as",
    )
    authority_host: str = Field(
        "https://login.microsoftonline.com",
        description="Microsoft identity platform host that issues tokens "
        "(https://login.microsoftonline.us for US Government, https://login.partner.microsoftonline.cn "
        "for the cloud operated by 21Vianet)",
    )
    graph_url: str = Field(
        "https://graph.microsoft.com",
        description="Microsoft Graph host (https://graph.microsoft.us, https://dod-graph.microsoft.us, "
        "https://microsoftgraph.chinacloudapi.cn); calls go to its /v1.0",
    )
    defender_url: str = Field(
        "https://api.securitycenter.microsoft.com",
        description="Defender for Endpoint API host; its token scope is this host's /.default",
    )
    exchange_url: str = Field(
        "https://outlook.office365.com",
        description="Exchange Online host; its token scope is this host's /.default",
    )
    ca_bundle: Path | None = Field(
        None,
        description="PEM file of CA certificates trusted besides the system's, to reach the "
        "hosts above (a TLS-inspecting proxy; the sandbox sets its own)",
    )
    password_folder: Path | None = Field(
        None,
        description="Folder (mode 0700, on this machine) where microsoft.reset_password "
        "writes each temporary password in its own 0600 file, for the person who hands it "
        "to the user; none: password resets are refused (docs/microsoft.md)",
    )
    password_channel: str | None = Field(
        None,
        description="Where microsoft.reset_password sends each temporary password instead of "
        "the folder: slack-dm:U0123ABCD (a direct message from Tocsin's Slack bot to the "
        "person who hands it over) or folder:/path; it wins over password_folder",
    )
    timeout_seconds: float = Field(
        30.0, gt=0, description="How long one HTTP call (token or Graph) may take"
    )
    max_retries: int = Field(
        5,
        ge=0,
        le=20,
        description="How many times a throttled (429) or unavailable (503) call is sent again",
    )
    max_retry_wait_seconds: float = Field(
        60.0,
        gt=0,
        description="The longest Tocsin waits before one retry, whatever Retry-After asks; "
        "a longer wait fails the step as retryable",
    )
    mail_sender: str | None = Field(
        None,
        description="Sign-in address (UPN) of the mailbox notify.clients sends from when "
        "notify.transport is graph (notices@office.example): a licensed or shared mailbox; "
        "the app needs the application permission Mail.Send (best scoped to this mailbox "
        "with an Exchange application access policy or RBAC for Applications) and "
        "Mail.ReadBasic.All to find what it sent in Sent Items (docs/microsoft.md)",
    )
