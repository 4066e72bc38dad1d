"""The Jira site runs are triggered from and report back to."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class JiraSettings(BaseModel):
    """The ``jira`` slot of the settings (``TOCSIN_JIRA__URL``...), Cloud or Data Center."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        None, description="Base URL of the Jira site (https://broker-support.atlassian.net)"
    )
    user: str | None = Field(
        None,
        description="Jira Cloud: the account e-mail paired with the API token (basic auth); "
        "Data Center: leave empty, the token is a personal access token (bearer)",
    )
    ca_bundle: Path | None = Field(
        None,
        description="PEM file of CA certificates trusted besides the system's, for a site "
        "behind an internal CA (the sandbox sets its own)",
    )
    runbook_field: str = Field(
        "customfield_10100", description="Issue field naming the runbook to run"
    )
    inputs_field: str = Field(
        "customfield_10101",
        description="Issue field holding the runbook's inputs, one `name=value` per line",
    )
    attach_report: bool = Field(True, description="Attach the report file to the ticket at the end")
