"""Tocsin's one settings object: environment variables prefixed ``TOCSIN_`` and an optional TOML file.

The file is ``$TOCSIN_CONFIG`` if set, else ``~/.config/tocsin/config.toml`` if it
exists. Environment variables win over the file. Secrets are not settings: they
are read by name from ``TOCSIN_SECRET_<NAME>`` (``EnvironmentSecrets``), so that
they never sit in a settings dump.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from tocsin.errors import ConfigurationError


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tocsin"


def config_file() -> Path | None:
    """The TOML settings file in force, if any."""
    explicit = os.environ.get("TOCSIN_CONFIG")
    if explicit:
        return Path(explicit)
    default = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "tocsin"
    candidate = default / "config.toml"
    return candidate if candidate.exists() else None


class AuditSettings(BaseModel):
    """The audit trail's signing key and how often the chain is signed."""

    model_config = ConfigDict(extra="forbid")

    key_path: Path | None = Field(
        None,
        description="Ed25519 private key that signs checkpoints (`tocsin audit keygen`); "
        "default: data_dir/audit/signing.key",
    )
    checkpoint_every: int = Field(
        50, ge=1, description="Sign the chain every this many records, besides end-of-run"
    )
    anchor_channel: str | None = Field(
        None,
        description="Slack channel where each end-of-run checkpoint's head hash is posted, "
        "so that it is published outside Tocsin's database",
    )


class SlackSettings(BaseModel):
    """Where incidents are discussed in Slack, and how often people hear about a run."""

    model_config = ConfigDict(extra="forbid")

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
    progress_every_seconds: float = Field(
        20.0,
        ge=0,
        description="Finished steps are posted in the thread in batches, at most this often",
    )
    remind_before: float = Field(
        0.25,
        gt=0,
        lt=1,
        description="Remind approvers when this fraction of a gate's timeout is left",
    )
    usergroup_cache_seconds: float = Field(
        60.0, ge=0, description="How long the gateway trusts a user group's member list"
    )


class JiraSettings(BaseModel):
    """The Jira site runs are triggered from and report back to (Cloud or Data Center)."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        None, description="Base URL of the Jira site (https://broker-support.atlassian.net)"
    )
    user: str | None = Field(
        None,
        description="Jira Cloud: the account e-mail paired with the API token (basic auth); "
        "Data Center: leave empty, the token is a personal access token (bearer)",
    )
    runbook_field: str = Field(
        "customfield_10100", description="Issue field naming the runbook to run"
    )
    inputs_field: str = Field(
        "customfield_10101",
        description="Issue field holding the runbook's inputs, one `name=value` per line",
    )
    attach_report: bool = Field(True, description="Attach the report file to the ticket at the end")


class GatewaySettings(BaseModel):
    """The inbound HTTP service (`tocsin gateway`) Slack and Jira call."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Address the gateway listens on")
    port: int = Field(8750, ge=0, le=65535)
    public_url: str | None = Field(
        None, description="URL Slack and Jira reach the gateway at (shown by `tocsin gateway`)"
    )
    deployment: str | None = Field(
        None,
        description="Prefect deployment that runs triggered runbooks (a worker runs them); "
        "none: the gateway runs them itself",
    )
    max_body_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="Largest request body the gateway reads (Slack's and Jira's are a few KiB); "
        "a larger one is answered 413 before it is read",
    )
    body_timeout_seconds: float = Field(
        10.0, gt=0, description="A request body not received within this time is answered 408"
    )
    max_connections: int = Field(
        200,
        ge=1,
        description="Connections and requests served at once; more are answered 503 (uvicorn's "
        "limit_concurrency)",
    )
    refusals_audited_per_minute: int = Field(
        20,
        ge=1,
        description="Refused requests from one address audited one by one each minute; the "
        "rest of that minute are counted in one summary record",
    )
    jira_event_max_age_seconds: float = Field(
        3600.0,
        gt=0,
        description="A Jira webhook whose body's timestamp is older than this is refused "
        "(Jira retries a delivery for a while; replays of older ones are refused)",
    )


class StartRule(BaseModel):
    """One rule of who may start which runbooks from Slack (`/tocsin run`) or a Jira ticket."""

    model_config = ConfigDict(extra="forbid")

    runbooks: list[str] = Field(
        default_factory=lambda: ["*"], description="Runbook ids this rule allows; * for all"
    )
    users: list[str] = Field(default_factory=list, description="Slack user ids (U...)")
    usergroups: list[str] = Field(
        default_factory=list, description="Slack user groups (S...) whose members may start"
    )
    channels: list[str] = Field(
        default_factory=list,
        description="Slack channel ids the command must be typed in (none: any channel, "
        "direct messages included, for the users and user groups above)",
    )
    jira_projects: list[str] = Field(
        default_factory=list, description="Jira project keys whose tickets may start a run"
    )
    jira_issue_types: list[str] = Field(
        default_factory=list,
        description="Issue types (like Incident) that may start a run; none: any type",
    )


class AccessSettings(BaseModel):
    """Who may start runs from Slack and Jira; live, nobody unless a rule says so."""

    model_config = ConfigDict(extra="forbid")

    start: list[StartRule] = Field(
        default_factory=list,
        description="Rules, any of which allows a start (TOCSIN_ACCESS__START as JSON, or "
        "[[access.start]] tables in the TOML file); none: deny all live, allow all in the sandbox",
    )


class Settings(BaseSettings):
    """Where Tocsin keeps its data, which mode it runs in, and where the services are."""

    model_config = SettingsConfigDict(
        env_prefix="TOCSIN_", env_nested_delimiter="__", extra="forbid"
    )

    mode: Literal["sandbox", "live"] = Field(
        "sandbox", description="sandbox: local fake services; live: the real ones"
    )
    data_dir: Path = Field(default_factory=_default_data_dir)
    runbook_paths: list[Path] = Field(
        default_factory=list, description="Extra folders searched for runbooks by id"
    )
    journal_url: str | None = Field(
        None, description="SQLAlchemy URL of the run journal; default: SQLite in data_dir"
    )
    prefect_api_url: str | None = Field(
        None,
        description="A Prefect server to use; default: Tocsin starts its own on SQLite in data_dir",
    )
    action_modules: list[str] = Field(
        default_factory=list,
        description="Extra Python modules whose @action functions runbooks may use "
        "(local actions that are not packaged with an entry point)",
    )
    slack_api_url: str = "https://slack.com/api/"
    services: dict[str, str] = Field(
        default_factory=dict,
        description="Base URL of each named service http.request calls with `service:` "
        "(TOCSIN_SERVICES__PLATFORM=https://platform.example/api/v1)",
    )
    http_timeout_seconds: float = Field(30.0, gt=0)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    slack: SlackSettings = Field(default_factory=SlackSettings)
    jira: JiraSettings = Field(default_factory=JiraSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    access: AccessSettings = Field(default_factory=AccessSettings)

    @property
    def audit_key_path(self) -> Path:
        return self.audit.key_path or self.data_dir / "audit" / "signing.key"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_file()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Read the settings; a wrong value becomes a ``ConfigurationError`` naming it."""
    from pydantic import ValidationError

    path = config_file()
    if path is not None and not path.exists():
        raise ConfigurationError(
            f"settings file {path} does not exist", "unset TOCSIN_CONFIG or create the file"
        )
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        where = f" (file {path})" if path else ""
        raise ConfigurationError(
            f"wrong settings{where}: {details}",
            "settings come from TOCSIN_* environment variables and the TOML file",
        ) from None
    except ValueError as exc:  # a TOML syntax error
        raise ConfigurationError(f"cannot read settings file {path}: {exc}") from None


class EnvironmentSecrets:
    """Secrets from ``TOCSIN_SECRET_<NAME>`` environment variables."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def get(self, name: str) -> str | None:
        return self._environ.get(f"TOCSIN_SECRET_{name.upper()}") or None

    def __repr__(self) -> str:
        return "EnvironmentSecrets(<values hidden>)"


class StaticSecrets:
    """Secrets given as a mapping (the sandbox and tests)."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)

    def get(self, name: str) -> str | None:
        return self._values.get(name)

    def __repr__(self) -> str:
        return f"StaticSecrets(<{len(self._values)} values hidden>)"
