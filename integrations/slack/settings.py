"""Where Slack is, where incidents are discussed there, and where audit heads are published."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class SlackSettings(BaseModel):
    """The ``slack`` slot of the settings (``TOCSIN_SLACK__...``, ``[slack]`` in the file)."""

    model_config = ConfigDict(extra="forbid")

    api_url: str = Field("https://slack.com/api/", description="Slack Web API")
    ca_bundle: Path | None = Field(
        None,
        description="PEM file of CA certificates trusted besides the system's, to reach "
        "api_url (a TLS-inspecting proxy; the sandbox sets its own)",
    )
    incident_channel: str | None = Field(
        None,
        description="Channel (id or #name) where each run opens its incident thread; "
        "none: runs post nothing to Slack besides their own steps",
    )
    channel_per_incident: bool = Field(
        False,
        description="Create a channel per incident (conversations.create, named "
        "`channel_prefix` + ticket) instead of a thread in incident_channel",
    )
    channel_prefix: str = Field("inc-", description="Prefix of per-incident channel names")
    usergroup_cache_seconds: float = Field(
        60.0, ge=0, description="How long the gateway trusts a user group's member list"
    )
    anchor_channel: str | None = Field(
        None,
        description="Channel where each end-of-run checkpoint's head hash is posted, "
        "so that it is published outside Tocsin's database; give its id (C0...) so that "
        "`tocsin audit verify` can read it back",
    )
