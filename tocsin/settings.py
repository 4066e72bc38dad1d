"""Tocsin's one settings object: environment variables prefixed ``TOCSIN_`` and an optional TOML file.

The file is ``$TOCSIN_CONFIG`` if set, else ``~/.config/tocsin/config.toml`` if it
exists. Environment variables win over the file. ``Settings`` holds the core's fields;
each installed integration adds its own slot, named after it (``settings.slack``,
``TOCSIN_SLACK__API_URL``, ``[slack]`` in the file): ``load_settings`` builds the object
with every slot, and ``Integration.settings_of`` reads one typed.

Secrets are not settings: they are read by name from ``TOCSIN_SECRET_<NAME>``
(``EnvironmentSecrets``), so that they never sit in a settings dump.

Configuration is passed, not read from a mutated environment: the sandbox returns the
settings and secrets it made (``with_values``), and a flow run in this process uses
the ones its caller hands it with ``configured`` (``configuration()`` inside the flow).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, create_model
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


class AnnounceSettings(BaseModel):
    """How often people hear about a run, wherever they hear it (incident thread, ticket)."""

    model_config = ConfigDict(extra="forbid")

    progress_every_seconds: float = Field(
        20.0,
        ge=0,
        description="Finished steps are announced in batches, at most this often",
    )
    remind_before: float = Field(
        0.25,
        gt=0,
        lt=1,
        description="Remind approvers when this fraction of a gate's timeout is left",
    )


class WatchdogSettings(BaseModel):
    """What the watchdog (`tocsin status --stuck`, the ``watchdog`` flow) reports, and where."""

    model_config = ConfigDict(extra="forbid")

    oncall_channel: str | None = Field(
        None,
        description="Chat channel (#support-oncall, or its id C0...) where the watchdog flow "
        "posts each finding, besides the incident's thread; none: the thread only",
    )
    oncall_chat: str = Field("slack", description="Which chat oncall_channel is in")
    stale_after_seconds: float = Field(
        30.0,
        ge=1,
        description="A run whose heartbeat (written every 10 s) is older than this is dead "
        "when its process is gone, or, on another machine, when Prefect does not show its "
        "flow run running or paused",
    )
    gate_grace_seconds: float = Field(
        60.0,
        ge=0,
        description="A step still waiting this long after its deadline is overdue (a live run "
        "closes it at its deadline)",
    )
    clock_warning_seconds: float = Field(
        6 * 3600.0,
        gt=0,
        description="A regulatory clock not stopped is reported from this long before its "
        "deadline until this long after it",
    )


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
    judge_process: bool = Field(
        True,
        description="Judge clicks in a process of its own beside the one answering Slack (the "
        "answers never wait for judging); false: in a thread of the answering process",
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


class DeclaredSettings(BaseModel):
    """HTTP integrations declared in YAML (``tocsin.declared``): where more declarations are,
    and per service, the base URL to use instead of the declared one."""

    model_config = ConfigDict(extra="forbid")

    folder: Path | None = Field(
        None,
        description="A folder of declarations (*.yaml, one service each) loaded besides the "
        "shipped ones in integrations/",
    )
    base_urls: dict[str, str] = Field(
        default_factory=dict,
        description="Base URL of a declared service instead of its declaration's "
        "(TOCSIN_DECLARED__BASE_URLS__FIREWALL=https://fw.internal/api)",
    )
    ca_bundle: Path | None = Field(
        None,
        description="PEM file of CA certificates trusted besides the system's for declared "
        "services (the sandbox sets its own)",
    )


class Settings(BaseSettings):
    """The core's settings: where Tocsin keeps its data and which mode it runs in.

    ``load_settings`` returns an instance of ``settings_class()``, this class with a slot
    for each installed integration.
    """

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
    sandbox_shared: bool = Field(
        False,
        description="In sandbox mode, the fakes are those `tocsin sandbox` serves (its "
        "environment file sets this): gateways and runs use them instead of starting their own",
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
    http_timeout_seconds: float = Field(30.0, gt=0)
    max_retry_wait_seconds: float = Field(
        300.0,
        gt=0,
        description="The longest a step waits before one retry, whatever its backoff or the "
        "service's Retry-After asks (never longer than the step's own timeout either)",
    )
    audit: AuditSettings = Field(default_factory=AuditSettings)
    announce: AnnounceSettings = Field(default_factory=AnnounceSettings)
    watchdog: WatchdogSettings = Field(default_factory=WatchdogSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    access: AccessSettings = Field(default_factory=AccessSettings)
    declared: DeclaredSettings = Field(default_factory=DeclaredSettings)

    @property
    def starts_own_sandbox(self) -> bool:
        """Whether Tocsin starts the sandbox's fakes itself (sandbox mode, none shared)."""
        return self.mode == "sandbox" and not self.sandbox_shared

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


_classes: dict[tuple[int, ...], type[Settings]] = {}


def settings_class() -> type[Settings]:
    """``Settings`` with a slot for each installed integration that has settings."""
    from tocsin.integration import installed_integrations

    integrations = installed_integrations()
    key = tuple(id(integration) for integration in integrations)
    found = _classes.get(key)
    if found is not None:
        return found
    slots: dict[str, Any] = {}
    for integration in integrations:
        if integration.settings is None:
            continue
        if integration.name in Settings.model_fields:
            raise ConfigurationError(
                f"the integration {integration.name!r} has the name of a core setting",
                "rename the integration (its entry point and its `name`)",
            )
        slots[integration.name] = (
            integration.settings,
            Field(default_factory=integration.settings, description=integration.description),
        )
    found = create_model("Settings", __base__=Settings, __module__=__name__, **slots)
    _classes[key] = found
    return found


RENAMED_VARIABLES = {
    "TOCSIN_SLACK_API_URL": "TOCSIN_SLACK__API_URL",
    "TOCSIN_SERVICES__": "TOCSIN_HTTP__SERVICES__",
    "TOCSIN_AUDIT__ANCHOR_CHANNEL": "TOCSIN_SLACK__ANCHOR_CHANNEL",
    "TOCSIN_SLACK__PROGRESS_EVERY_SECONDS": "TOCSIN_ANNOUNCE__PROGRESS_EVERY_SECONDS",
    "TOCSIN_SLACK__REMIND_BEFORE": "TOCSIN_ANNOUNCE__REMIND_BEFORE",
}
"""Variables of earlier versions (a name ending in ``__`` is a prefix): refused with the new
name, since the environment source would otherwise ignore them without a word."""


def _renamed_variable() -> tuple[str, str] | None:
    for variable in os.environ:
        upper = variable.upper()
        for old, new in RENAMED_VARIABLES.items():
            if upper == old:
                return variable, new
            if old.endswith("__") and upper.startswith(old):
                return variable, new + upper.removeprefix(old)
    return None


def load_settings(**overrides: Any) -> Settings:
    """Read the settings; a wrong value becomes a ``ConfigurationError`` naming it."""
    from pydantic import ValidationError

    path = config_file()
    if path is not None and not path.exists():
        raise ConfigurationError(
            f"settings file {path} does not exist", "unset TOCSIN_CONFIG or create the file"
        )
    renamed = _renamed_variable()
    if renamed is not None:
        raise ConfigurationError(
            f"the setting {renamed[0]} was renamed {renamed[1]}",
            "rename the variable; README, Settings and secrets, lists every setting",
        )
    try:
        return settings_class()(**overrides)
    except ValidationError as exc:
        raise _wrong_settings(exc, path) from None
    except ValueError as exc:  # a TOML syntax error
        raise ConfigurationError(f"cannot read settings file {path}: {exc}") from None


def _wrong_settings(exc: Any, path: Path | None) -> ConfigurationError:
    details = "; ".join(
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
    )
    where = f" (file {path})" if path else ""
    return ConfigurationError(
        f"wrong settings{where}: {details}",
        "settings come from TOCSIN_* environment variables and the TOML file",
    )


def with_values(settings: Settings, *layers: Mapping[str, Any]) -> Settings:
    """``settings`` with each layer of values (nested by slot: ``{"slack": {"api_url": ...}}``)
    laid over them in turn, checked like any settings; the environment is not read again."""
    from pydantic import ValidationError

    merged = settings.model_dump()
    for layer in layers:
        merged = _merged(merged, layer)
    try:
        return settings_class().model_validate(merged)
    except ValidationError as exc:
        raise _wrong_settings(exc, None) from None


def _merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = _merged(result[key], value)
        else:
            result[key] = value
    return result


class SecretStore(Protocol):
    """Where actions read credentials from; values never reach logs or the audit trail."""

    def get(self, name: str) -> str | None: ...


class EnvironmentSecrets:
    """Secrets from ``TOCSIN_SECRET_<NAME>`` environment variables."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def get(self, name: str) -> str | None:
        return self._environ.get(f"TOCSIN_SECRET_{name.upper()}") or None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Handed to a child process (the gateway's judge): the process environment is the
        # child's own, inherited; a given mapping goes with it.
        if self._environ is os.environ:
            return EnvironmentSecrets, ()
        return EnvironmentSecrets, (dict(self._environ),)

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


class LayeredSecrets:
    """The first store that has a secret gives it (the sandbox's fakes' secrets, then the
    environment's)."""

    def __init__(self, *stores: SecretStore) -> None:
        self._stores = stores

    def get(self, name: str) -> str | None:
        for store in self._stores:
            value = store.get(name)
            if value:
                return value
        return None

    def __repr__(self) -> str:
        return f"LayeredSecrets({', '.join(repr(store) for store in self._stores)})"


@dataclass(frozen=True)
class Configuration:
    """The settings and secrets a flow run uses."""

    settings: Settings
    secrets: SecretStore


_handed_down: ContextVar[Configuration | None] = ContextVar("tocsin_configuration", default=None)


@contextmanager
def configured(settings: Settings, secrets: SecretStore) -> Iterator[Configuration]:
    """Flow runs started in this block, in this thread, use these settings and secrets
    (the sandbox's, the gateway's) instead of reading the environment."""
    given = Configuration(settings, secrets)
    token = _handed_down.set(given)
    try:
        yield given
    finally:
        _handed_down.reset(token)


def configuration() -> Configuration:
    """What the caller handed down with ``configured``; else the settings and secrets of the
    environment (a run started from a deployment, on a worker)."""
    given = _handed_down.get()
    return given if given is not None else Configuration(load_settings(), EnvironmentSecrets())
