"""Checks made before a run starts, so that a run that could not finish is refused at once.

A run refused at its tenth step, after people approved its first gates, costs them their
time and leaves a half-done incident. Before any flow run is created (``tocsin run``, the
gateway's ``/tocsin run`` and ticket starts) and again at flow start on the worker that
runs it, ``check_run`` looks at everything the run will need and raises one
``ConfigurationError`` listing all that is missing: the audit signing key (present, a
regular file only Tocsin's user may read), every secret the runbook's steps read (actions
declare theirs as data), every integration setting their actions cannot run without
(integrations declare them: ``Integration.action_settings``), the chat integration its
approver user groups need, the journal (reachable, its schema current) and the Prefect
server. ``tocsin doctor`` shows the same checks, one line each, with the rest of a
configuration's (``tocsin.cli.doctor``).

Each check is a function returning ``Finding``s; nothing here changes anything, except
that a sandbox's missing key is reported as created on first use, as the sandbox does.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

from typing_extensions import Unpack

from tocsin.errors import ConfigurationError, TocsinError

if TYPE_CHECKING:
    from tocsin.action_registry import ActionRegistry
    from tocsin.actions import ActionDefinition
    from tocsin.integration import Integration
    from tocsin.model import Runbook
    from tocsin.settings import SecretStore, Settings

PREFECT_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Finding:
    """One thing checked: where (``area``: ``signing key``, ``secret slack_bot_token``),
    whether it is fine, what was found (never a secret's value) and, if not, what to do."""

    area: str
    ok: bool
    message: str
    hint: str = ""
    note: bool = False
    """Not a problem, yet not fine either: said, not counted (a runbook this configuration
    cannot start yet, when no runbook was named)."""

    @classmethod
    def problem(cls, area: str, error: TocsinError) -> Finding:
        return cls(area, False, error.message, error.hint)

    def line(self) -> str:
        """``area: ok: message``, ``area: note: message — to use it: hint`` or
        ``area: PROBLEM: message — fix: hint``."""
        if self.ok and self.note:
            return f"{self.area}: note: {self.message}" + (
                f" — to use it: {self.hint}" if self.hint else ""
            )
        if self.ok:
            return f"{self.area}: ok: {self.message}"
        return f"{self.area}: PROBLEM: {self.message}" + (
            f" — fix: {self.hint}" if self.hint else ""
        )

    def as_data(self) -> dict[str, Any]:
        return {
            "area": self.area,
            "ok": self.ok,
            "note": self.note,
            "message": self.message,
            "hint": self.hint,
        }


@dataclass(frozen=True)
class Findings:
    """What the checks found; ``ok`` when none is a problem."""

    findings: tuple[Finding, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]

    def refuse_if_problems(self, what: str) -> None:
        """Raise one ``ConfigurationError`` listing every problem (``what``: the run refused)."""
        problems = self.problems
        if not problems:
            return
        count = len(problems)
        listed = "\n".join(
            f"  - {p.message}" + (f" — fix: {p.hint}" if p.hint else "") for p in problems
        )
        raise ConfigurationError(
            f"{what} was not started: {count} thing{'s' * (count != 1)} to set first\n{listed}",
            "set them where the run runs (for a deployment, in the worker's environment), then "
            "start it again; `tocsin doctor` checks the whole configuration",
        )


# -- the signing key ------------------------------------------------------------------------


def signing_key(settings: Settings) -> Finding:
    """The audit signing key: present (unless the sandbox creates it), a regular file that is
    not a link, that no other user may read or change, holding an Ed25519 key."""
    from tocsin.audit import AuditKey

    path = settings.audit_key_path
    area = "signing key"
    if not (path.exists() or path.is_symlink()):
        if settings.mode == "sandbox":
            return Finding(area, True, f"none at {path} yet: the sandbox creates it on first use")
        return Finding(
            area,
            False,
            f"no audit signing key at {path}",
            "create it with `tocsin audit keygen` (or set TOCSIN_AUDIT__KEY_PATH to the key); "
            "every process that runs runbooks (each worker) needs it",
        )
    try:
        mode = stat.S_IMODE(path.lstat().st_mode)
        AuditKey.load(path)
    except TocsinError as exc:
        return Finding.problem(area, exc)
    except OSError as exc:
        return Finding(area, False, f"cannot read {path}: {exc.strerror}", "check the key's path")
    return Finding(area, True, f"{path}, mode {mode:04o}, readable by its owner only")


# -- what a runbook needs -------------------------------------------------------------------


def runbook_needs(
    runbook: Runbook, registry: ActionRegistry, settings: Settings, secrets: SecretStore
) -> list[Finding]:
    """Every secret the runbook's steps (their undo and the failure handlers too) read that
    is not set, every integration setting their actions cannot run without that is not
    set, and the chat integration its approver user groups need, when it is not set up.
    One finding per missing thing, naming the steps that need it.

    Actions declare their secrets as data, and integrations the settings their actions
    need (``Integration.action_settings``: a breach draft needs no SMTP server, so an
    integration being "configured" says nothing of one action)."""
    secret_steps: dict[str, list[str]] = {}
    setting_steps: dict[tuple[str, str], list[str]] = {}
    for step, _ in runbook.iter_steps():
        calls = [(step.action, step.with_)] if step.action else []
        if step.undo is not None:
            calls.append((step.undo.action, step.undo.with_))
        for action, with_ in calls:
            definition = registry.get(action)
            for name in _secrets_read(definition, with_):
                secret_steps.setdefault(name, []).append(step.id)
            for needed in _settings_needed(action):
                setting_steps.setdefault(needed, []).append(step.id)
    findings: list[Finding] = []
    for name in sorted(secret_steps):
        if secrets.get(name):
            continue
        findings.append(
            Finding(
                f"secret {name}",
                False,
                f"secret {name!r} is not set (needed by step{'s' * (len(set(secret_steps[name])) != 1)} "
                f"{', '.join(dict.fromkeys(secret_steps[name]))})",
                f"set the environment variable TOCSIN_SECRET_{name.upper()}",
            )
        )
    findings.extend(_settings_needs(setting_steps, settings))
    findings.extend(_approver_directory_needs(runbook, settings, secrets))
    return findings


def _settings_needed(action: str) -> list[tuple[str, str]]:
    """(integration, field) of every setting the integrations say ``action`` needs."""
    from tocsin.integration import installed_integrations

    return [
        (integration.name, name)
        for integration in installed_integrations()
        for name in integration.settings_needed_by(action)
    ]


def _settings_needs(
    setting_steps: dict[tuple[str, str], list[str]], settings: Settings
) -> list[Finding]:
    """A finding for each needed setting that is not set (None or empty), saying where to
    set it: its environment variable, or its key in the settings file."""
    from tocsin.integration import integration_named
    from tocsin.settings import config_file

    findings: list[Finding] = []
    for slot, name in sorted(setting_steps):
        integration = integration_named(slot)
        if integration is None or integration.settings is None:
            continue
        value = getattr(integration.settings_of(settings), name, None)
        if value not in (None, "") and not (isinstance(value, list | dict | tuple) and not value):
            continue
        steps = list(dict.fromkeys(setting_steps[(slot, name)]))
        described = integration.settings.model_fields[name].description
        file = config_file()
        findings.append(
            Finding(
                f"setting {slot}.{name}",
                False,
                f"setting {slot}.{name} is not set (needed by step{'s' * (len(steps) != 1)} "
                f"{', '.join(steps)})" + (f": {described}" if described else ""),
                f"set the environment variable TOCSIN_{slot.upper()}__{name.upper()}, or "
                f"{name} under [{slot}] in the settings file "
                f"({file if file is not None else '$TOCSIN_CONFIG or ~/.config/tocsin/config.toml'})",
            )
        )
    return findings


def _secrets_read(definition: ActionDefinition, with_: dict[str, Any]) -> list[str]:
    """The secrets a call reads: the action's own, and those named by its secret parameters
    when the runbook writes the name itself (a templated name is known only at run time)."""
    from tocsin.templating import contains_template

    named = [
        str(with_[name])
        for name in definition.secret_parameters()
        if with_.get(name) and not contains_template(with_[name])
    ]
    return sorted({*definition.secrets, *named})


def _configured(integration: Integration[Any], settings: Settings, secrets: SecretStore) -> bool:
    try:
        return integration.is_configured(settings, secrets)
    except TocsinError:
        return True  # configured, wrongly: `tocsin integrations check` says what


def _approver_directory_needs(
    runbook: Runbook, settings: Settings, secrets: SecretStore
) -> list[Finding]:
    """Approver groups given as user groups need the integration that lists their members."""
    from tocsin.integration import installed_integrations

    groups = sorted(name for name, g in runbook.approver_groups.items() if g.usergroup)
    if not groups:
        return []
    for integration in installed_integrations():
        if integration.approver_directory is None:
            continue
        if _configured(integration, settings, secrets):
            return []
        variable = integration.secrets[0].variable if integration.secrets else ""
        return [
            Finding(
                f"integration {integration.name}",
                False,
                f"approver group{'s' * (len(groups) != 1)} {', '.join(groups)} "
                f"{'are' if len(groups) != 1 else 'is a'} {integration.name} user group"
                f"{'s' * (len(groups) != 1)}, and {integration.name} is not set up to list "
                "their members",
                f"set {variable}" if variable else f"configure the {integration.name} integration",
            )
        ]
    return [
        Finding(
            "approvers",
            False,
            f"approver groups {', '.join(groups)} are user groups, and no installed integration "
            "lists their members",
            "install the integration of the chat tool the user groups live in",
        )
    ]


# -- the journal ----------------------------------------------------------------------------


def journal(settings: Settings, *, upgrade_ok: bool = False) -> Finding:
    """The journal's database answers and its tables are those of this Tocsin (read only:
    nothing is created or altered). ``upgrade_ok``: only that it answers, since the run
    opening it next adds what is missing, and refuses a journal from before the audit chain
    (each run pays this check: one connection and one query)."""
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.exc import SQLAlchemyError

    from tocsin.journal import default_url
    from tocsin.journal.database import safe_url
    from tocsin.journal.schema import ADDED_INDEXES, metadata

    url = settings.journal_url or default_url(settings.data_dir)
    shown = safe_url(url)
    area = "journal"
    path = url.removeprefix("sqlite:///").split("?")[0] if url.startswith("sqlite:///") else None
    if path is not None and path not in ("", ":memory:"):
        from pathlib import Path

        if not Path(path).exists():
            return Finding(area, True, f"{shown}: not created yet; the first run creates it")
    try:
        engine = create_engine(url, future=True)
    except (SQLAlchemyError, ValueError, ImportError) as exc:
        return Finding(
            area,
            False,
            f"cannot use the journal URL {shown}: {type(exc).__name__}",
            "check the journal_url setting (a SQLAlchemy URL: postgresql+psycopg://...)",
        )
    try:
        with engine.connect() as connection:
            if upgrade_ok:
                connection.exec_driver_sql("SELECT 1")
                return Finding(area, True, f"{shown}: reachable")
            inspector = inspect(connection)
            present = set(inspector.get_table_names())
            wanted = {table.name: table for table in metadata.sorted_tables}
            if not present & set(wanted):
                return Finding(
                    area, True, f"{shown}: reachable, empty; the first run creates its tables"
                )
            missing_tables = sorted(set(wanted) - present)
            found = inspector.get_multi_columns(filter_names=sorted(present & set(wanted)))
            columns = {name: {c["name"] for c in listed} for (_, name), listed in found.items()}
            missing_columns = sorted(
                f"{name}.{column.name}"
                for name, table in wanted.items()
                if name in columns
                for column in table.columns
                if column.name not in columns[name]
            )
            missing_columns += [  # the unique index refusing replayed clicks, for one
                f"index {index.name}"
                for name, index in ADDED_INDEXES
                if name in columns
                and index.name not in {found["name"] for found in inspector.get_indexes(name)}
            ]
            dialect = connection.dialect.name
    except SQLAlchemyError as exc:
        return Finding(
            area,
            False,
            f"the journal at {shown} does not answer: {type(exc).__name__}",
            "check the journal_url setting and that the database is up and reachable from here",
        )
    finally:
        engine.dispose()
    if "events.hash" in missing_columns:
        return Finding(
            area,
            False,
            f"the journal at {shown} was written by an older Tocsin, before events were "
            "hash-chained; its schema cannot be brought up to date",
            "move that database aside (keep it as evidence) and start again with a new one",
        )
    if missing_tables or missing_columns:
        return Finding(
            area,
            False,
            f"the journal's schema at {shown} is out of date: missing "
            + ", ".join([*(f"table {t}" for t in missing_tables), *missing_columns]),
            "open it once with this Tocsin as a database user allowed to create and alter "
            "tables (any `tocsin status` brings it up to date)",
        )
    return Finding(area, True, f"{shown} ({dialect}): reachable, schema current")


# -- the Prefect server ---------------------------------------------------------------------


@dataclass(frozen=True)
class PrefectServer:
    """What a Prefect server said of itself: its version and database, when it says them."""

    url: str
    version: str | None = None
    database: str | None = None


def prefect_server(url: str, *, describe: bool = True) -> tuple[Finding, PrefectServer | None]:
    """The Prefect API at ``url`` (``.../api``) answers ``/health``; with ``describe``, its
    version and database too (two more calls: ``tocsin doctor``, not each run)."""
    import httpx

    base = url.rstrip("/")
    area = "prefect server"
    url = shown_url(url)
    try:
        with prefect_http() as client:
            health = client.get(f"{base}/health")
            if health.status_code != 200:
                return (
                    Finding(
                        area,
                        False,
                        f"the Prefect server at {url} answers /health with {health.status_code}",
                        "check the server's log (its database may be down)",
                    ),
                    None,
                )
            server = (
                PrefectServer(url, _version(client, base), _database(client, base))
                if describe
                else PrefectServer(url)
            )
    except httpx.HTTPError as exc:
        return (
            Finding(
                area,
                False,
                f"the Prefect server at {url} does not answer ({type(exc).__name__})",
                "start it (`prefect server start`) or fix TOCSIN_PREFECT_API_URL "
                "(unset it to use Tocsin's own server)",
            ),
            None,
        )
    said = ", ".join(
        part
        for part in (
            f"Prefect {server.version}" if server.version else "",
            f"database {server.database}" if server.database else "",
        )
        if part
    )
    return Finding(area, True, f"{url} answers" + (f" ({said})" if said else "")), server


def shown_url(url: str) -> str:
    """``url`` without a user name or password in it, to print."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "<an invalid URL>"
    return str(parsed.copy_with(username=None, password=None)) if parsed.userinfo else url


def prefect_http() -> Any:
    """An HTTP client for the Prefect API, with the credentials Prefect's own settings give
    (``PREFECT_API_KEY``, ``PREFECT_API_AUTH_STRING``), bounded in time."""
    import base64

    import httpx
    from prefect.settings import get_current_settings

    api = get_current_settings().api
    headers: dict[str, str] = {}
    if api.key is not None:
        headers["Authorization"] = f"Bearer {api.key.get_secret_value()}"
    elif api.auth_string is not None:
        encoded = base64.b64encode(api.auth_string.get_secret_value().encode()).decode()
        headers["Authorization"] = f"Basic {encoded}"
    return httpx.Client(timeout=PREFECT_TIMEOUT_SECONDS, headers=headers)


def _version(client: Any, base: str) -> str | None:
    import httpx

    try:
        answer = client.get(f"{base}/admin/version")
        return str(answer.json()) if answer.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def _database(client: Any, base: str) -> str | None:
    """SQLite or PostgreSQL, as the server's settings say (the URL itself stays hidden)."""
    import httpx

    try:
        answer = client.get(f"{base}/admin/settings")
        database = answer.json()["server"]["database"] if answer.status_code == 200 else None
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(database, dict):
        return None
    said = " ".join(str(database.get(k) or "") for k in ("driver", "connection_url")).lower()
    if "postgres" in said:
        return "PostgreSQL"
    if "sqlite" in said:
        return "SQLite"
    return None


def configured_prefect(settings: Settings) -> Finding | None:
    """The server of the ``prefect_api_url`` setting, checked; None when Tocsin uses its own
    (``tocsin run`` starts it when it is not running)."""
    if not settings.prefect_api_url:
        return None
    return prefect_server(settings.prefect_api_url, describe=False)[0]


# -- before a run -------------------------------------------------------------------------


class RunChecks(TypedDict, total=False):
    """Which checks a run gets (each True unless said): the signing key (``key``), the
    journal (``journal_too``), the Prefect server (``prefect``), and the secrets, settings
    and approvers' directory its steps need (``needs``)."""

    prefect: bool
    needs: bool
    key: bool
    journal_too: bool


def run_findings(
    runbook: Runbook,
    registry: ActionRegistry,
    settings: Settings,
    secrets: SecretStore,
    **checks: Unpack[RunChecks],
) -> Findings:
    """Everything a run of ``runbook`` needs where it runs (``RunChecks`` says which)."""
    found: list[Finding] = (
        [journal(settings, upgrade_ok=True)] if checks.get("journal_too", True) else []
    )
    if checks.get("key", True):
        found.insert(0, signing_key(settings))
    if checks.get("prefect", True):
        server = configured_prefect(settings)
        if server is not None:
            found.append(server)
    if checks.get("needs", True):
        found.extend(runbook_needs(runbook, registry, settings, secrets))
    return Findings(tuple(found))


def check_run(
    runbook: Runbook,
    ticket: str,
    registry: ActionRegistry,
    settings: Settings,
    secrets: SecretStore,
    **checks: Unpack[RunChecks],
) -> None:
    """Refuse a run of ``runbook`` for ``ticket`` that could not finish: one
    ``ConfigurationError`` listing everything to set (see ``run_findings``)."""
    run_findings(runbook, registry, settings, secrets, **checks).refuse_if_problems(
        f"{runbook.runbook} for {ticket}"
    )


__all__ = [
    "Finding",
    "Findings",
    "PrefectServer",
    "RunChecks",
    "check_run",
    "configured_prefect",
    "journal",
    "prefect_http",
    "prefect_server",
    "shown_url",
    "run_findings",
    "runbook_needs",
    "signing_key",
]
