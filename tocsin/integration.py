"""The integration seam: what a package gives Tocsin for one service, found through entry points.

An integration is a package (``integrations/slack/``, or any installed distribution)
exposing one ``Integration`` object under the ``tocsin.integrations`` entry-point group::

    [project.entry-points."tocsin.integrations"]
    acme = "acme_tocsin:integration"

The object says, as data, everything the core needs to know about the service:

- ``settings``: its settings model, a slot of the one settings object named after the
  integration (``settings.acme``, ``TOCSIN_ACME__URL``); ``settings_of`` reads it typed;
- ``secrets``: the secrets it reads (``TOCSIN_SECRET_<NAME>``), each with a description;
- ``action_settings``: the settings of its slot that its actions cannot run without
  (``{"pki.*": ("vault_url",)}``), so that a run missing one is refused before it starts
  (``tocsin.preflight``) and ``tocsin doctor RUNBOOK`` names it;
- ``action_modules``: the modules whose ``@action`` functions runbooks may use;
- ``sandbox``: starts its fake service with seed data and returns the settings values
  and secrets that point runs at it (``tocsin.sandbox.assembly`` puts them together);
- and, where the service has them: an ``announcer`` (where people hear about a run),
  an ``approver_directory`` (who is in a user group), a ``ticket_system`` with its
  ``ticket_keys`` (what its keys look like, from the settings alone), a
  ``head_publisher`` (where audit heads are published) and ``published_heads`` (reading
  them back for ``tocsin audit verify``), a ``gateway`` part (the URLs the service calls
  on ``tocsin gateway``: each checks the request is the service's, then hands it to the
  gateway's core), a ``demo_approver`` (a scripted person clicking in its fake, for
  ``tocsin demo``), ``demo_runs`` (the runbooks ``tocsin demo RUNBOOK`` can run against
  its fake, each with its incident title and inputs), ``secret_channels`` (where secrets
  an action makes, like a temporary password, may be sent: ``slack-dm:U0123ABCD``),
  ``mail_senders`` (ways to send e-mail: ``smtp``, ``graph``; ``tocsin.mail``) and
  ``channel_posters`` (chat channels a message can be posted to; ``tocsin.channel_posts``);
- ``configured`` (whether it is set up here, from settings and secrets, no call) and
  ``check`` (its credentials and permissions verified without changing anything, each a
  ``CheckResult``, for ``tocsin integrations check``; ``tocsin.integration_checks`` runs it).

Built-in integrations are declared in Tocsin's own ``pyproject.toml`` exactly like a
third-party one, so there is one way to find them. Every hook is a plain function that
imports what it needs when it is called: discovering integrations (which every
``load_settings`` does) imports only their ``__init__`` and settings models.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from tocsin.errors import ConfigurationError, TocsinError

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from tocsin.announce import Announcer
    from tocsin.audit import AnchorPlace, AuditRecord
    from tocsin.channel_posts import ChannelPosterFactory
    from tocsin.gateway import Gateway
    from tocsin.journal import Journal, RunRecord
    from tocsin.mail import MailSenderFactory
    from tocsin.sandbox.fake_service import FakeService
    from tocsin.secret_delivery import SecretDelivery
    from tocsin.settings import SecretStore, Settings
    from tocsin.tickets import TicketKeys, TicketSystem

ENTRY_POINT_GROUP = "tocsin.integrations"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")

SettingsT = TypeVar("SettingsT", bound=BaseModel)
ReportMaker = Callable[[str], tuple[str, bytes, str]]
"""Given the ticket: (file name, content, media type) of the report to attach."""


@dataclass(frozen=True)
class DeclaredSecret:
    """A secret an integration reads, set as ``TOCSIN_SECRET_<NAME>``."""

    name: str
    description: str

    @property
    def variable(self) -> str:
        return f"TOCSIN_SECRET_{self.name.upper()}"


# -- what the hooks receive and return ------------------------------------------------------


@dataclass(frozen=True)
class SandboxSeed:
    """What the sandbox is started for: the run's inputs, the Slack user groups its approver
    groups name, the incident's ticket; and the loopback CA the fakes serve TLS with."""

    inputs: Mapping[str, Any] = field(default_factory=dict)
    usergroups: Sequence[str] = ()
    ticket: str | None = None
    title: str = ""
    server_tls: ssl.SSLContext | None = None
    """Serve with this context (https); None: plain http."""
    ca_bundle: Path | None = None
    """The CA certificate clients must trust to reach a fake served with ``server_tls``."""
    journal_url: str | None = None
    """The journal's database (SQLAlchemy URL) the sandbox's runs use, for an integration
    whose seed data includes a table of its own there (the PKI's certificate inventory)."""


@dataclass(frozen=True)
class SandboxService:
    """A started fake and how to reach it: settings values (by slot, merged into the settings
    the sandbox returns), the secrets it accepts, and lines to show whoever started it."""

    fake: FakeService
    settings: Mapping[str, Any]
    secrets: Mapping[str, str] = field(default_factory=dict)
    notes: Sequence[str] = ()


@dataclass(frozen=True)
class AnnouncerContext:
    """What an announcer is built from."""

    settings: Settings
    secrets: SecretStore
    journal: Journal
    report: ReportMaker | None = None


@dataclass(frozen=True)
class HeadsQuery:
    """What reading published audit heads back is given (``tocsin audit verify``)."""

    settings: Settings
    secrets: SecretStore
    journal: Journal
    ticket: str
    recorded: Sequence[str]
    """Where the trail says heads were published (``slack:C1:ts``, ``jira:INC-1:comment:7``)."""
    records: Sequence[AuditRecord] = ()


class ApproverDirectory(Protocol):
    """Who is in an approver user group (Slack's ``usergroups.users.list``)."""

    def members_of(self, usergroup: str) -> list[str]:
        """The group's members now; a ``TocsinError`` when the service cannot say."""
        ...


class HeadPublisher(Protocol):
    """A place outside Tocsin's database where each end-of-run audit head is published."""

    place: str
    """How the place is named in messages (``#incident-audit``)."""

    def publish(self, text: str) -> str:
        """Post ``text``; returns where it went (``slack:C0AUDIT:1700000000.000100``)."""
        ...


def _nothing_claimed(body: bytes) -> Mapping[str, object]:
    return {}


@dataclass(frozen=True)
class InboundRoute:
    """A URL ``tocsin gateway`` serves for a service: where it sends Tocsin its requests.

    ``handler`` reads the request (``Gateway.read_body``), checks it is the service's
    (its signature), then hands off to the gateway (``Gateway.decide``, ``start_run``...);
    it raises ``RequestRefused`` to refuse. ``claims`` reads what a refused body says it is
    (user, ticket...), for the gateway's audit record only: it is never trusted.
    """

    path: str
    handler: Callable[[Request], Awaitable[Response]]
    label: str
    """How ``tocsin gateway`` names the URL for whoever configures the service."""
    claims: Callable[[bytes], Mapping[str, object]] = _nothing_claimed
    methods: tuple[str, ...] = ("POST",)
    note: str = ""
    """Shown after the URL (``(Jira not configured)``)."""


class GatewayPeople(Protocol):
    """Who people are, as the gateway asks while it judges a request (fast, cached)."""

    def is_member(self, user: str, usergroup: str) -> bool:
        """Whether ``user`` is in ``usergroup`` now; a ``TocsinError`` when it cannot say."""
        ...

    def details(self, user: str) -> dict[str, str]:
        """How the service names the user (name, e-mail) for the audit record; {} if unknown."""
        ...

    def user_with_email(self, email: str) -> str | None:
        """The user id of the person with this e-mail address, if the service knows them."""
        ...


@dataclass(frozen=True)
class GatewayPart:
    """What an integration adds to ``tocsin gateway``: its routes, and, for the chat tool
    approvers live in, who people are."""

    routes: Sequence[InboundRoute] = ()
    people: GatewayPeople | None = None


class DemoApprover(Protocol):
    """A scripted approver clicking Approve in an integration's fake (``tocsin demo``)."""

    def approve(self, run: RunRecord, step_id: str, person: str) -> bool:
        """``person`` clicks Approve on the gate's message; False when the message is not
        posted yet (nothing sent). What happens is said through ``DemoContext.say``."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class DemoContext:
    """What a demo approver is built from: the sandbox's settings and secrets, its fakes by
    integration name, the URL of the demo's gateway, and where to say what it does."""

    settings: Settings
    secrets: SecretStore
    fakes: Mapping[str, FakeService]
    gateway_url: str
    journal: Journal
    say: Callable[[str], None]


@dataclass(frozen=True)
class DemoRun:
    """What ``tocsin demo RUNBOOK`` runs: the incident's title and the runbook's inputs,
    given by the integration whose sandbox seeds what those inputs name."""

    title: str
    inputs: Mapping[str, Any]


@dataclass(frozen=True)
class CheckResult:
    """One thing ``tocsin integrations check`` verified of an integration: what (``check``,
    like ``bot token``), whether it is fine, what was found (never a secret's value) and,
    when it is not, what to do."""

    check: str
    ok: bool
    message: str
    hint: str = ""

    @classmethod
    def problem(cls, check: str, error: TocsinError) -> CheckResult:
        """A problem said by ``error``'s message and hint (an action error's without the
        action's name, since no action ran)."""
        message = error.message
        action = getattr(error, "action", None)
        if isinstance(action, str):
            message = message.removeprefix(f"{action}: ")
        return cls(check, False, message, error.hint)


# -- the integration ------------------------------------------------------------------------


@dataclass(frozen=True)
class Integration(Generic[SettingsT]):
    """Everything Tocsin knows about one service; see the module docstring."""

    name: str
    description: str
    settings: type[SettingsT] | None = None
    secrets: tuple[DeclaredSecret, ...] = ()
    action_modules: tuple[str, ...] = ()
    sandbox: Callable[[SandboxSeed], SandboxService] | None = None
    announcer: Callable[[AnnouncerContext], Announcer | None] | None = None
    approver_directory: Callable[[Settings, SecretStore], ApproverDirectory] | None = None
    ticket_system: Callable[[Settings, SecretStore], TicketSystem | None] | None = None
    ticket_keys: Callable[[Settings], TicketKeys | None] | None = None
    """With ``ticket_system``: its keys' form when it is the one configured, else None; from
    the settings alone (no secret, no call), since the CLI checks every key it is given."""
    head_publisher: Callable[[Settings, SecretStore], HeadPublisher | None] | None = None
    published_heads: Callable[[HeadsQuery], list[AnchorPlace]] | None = None
    gateway: Callable[[Gateway], GatewayPart] | None = None
    demo_approver: Callable[[DemoContext], DemoApprover | None] | None = None
    demo_runs: Callable[[], Mapping[str, DemoRun]] | None = None
    """The demo runs its sandbox supports, by runbook id (``mailbox-compromise``)."""
    secret_channels: Mapping[str, Callable[[Settings, SecretStore, str], SecretDelivery]] = field(
        default_factory=dict, hash=False
    )
    """Channels for the secrets actions make (temporary passwords), by scheme: the factory
    gets the part after ``scheme:`` of a setting like ``slack-dm:U0123ABCD``
    (``tocsin.secret_delivery``)."""
    mail_senders: Mapping[str, MailSenderFactory] = field(default_factory=dict, hash=False)
    """Ways to send e-mail it offers, by name (``smtp``, ``graph``): ``tocsin.mail``."""
    channel_posters: Mapping[str, ChannelPosterFactory] = field(default_factory=dict, hash=False)
    """Chat channels it posts to, by name (``slack``): ``tocsin.channel_posts``."""
    action_settings: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    """The fields of its settings slot that actions cannot run without, by action name or
    pattern (``pki.*``, ``pki.issue_certificates``): a run whose steps call one while the
    field is not set (None, empty) is refused before it starts. Only what every call
    needs: a setting needed by some calls of an action only is checked by the action."""
    configured: Callable[[Settings, SecretStore], bool] | None = None
    """Whether the service is set up here (settings and secrets only, no call); None: when
    one of its declared secrets is set."""
    check: Callable[[Settings, SecretStore], Sequence[CheckResult]] | None = None
    """Verify the credentials and permissions, changing nothing; a ``TocsinError`` (or a
    failed call) is reported as a problem by the caller, never as a traceback."""

    def __post_init__(self) -> None:
        if self.ticket_system is not None and self.ticket_keys is None:
            raise TypeError(
                f"the {self.name} integration has a ticket_system but no ticket_keys: "
                "say what its keys look like, so that they can be checked without its secrets"
            )
        fields = self.settings.model_fields if self.settings is not None else {}
        unknown = sorted(
            {name for names in self.action_settings.values() for name in names} - set(fields)
        )
        if unknown:
            raise TypeError(
                f"the {self.name} integration's action_settings name no field of its "
                f"settings: {', '.join(unknown)}"
            )

    def settings_needed_by(self, action: str) -> tuple[str, ...]:
        """The fields of its settings slot that ``action`` cannot run without."""
        return tuple(
            dict.fromkeys(
                name
                for pattern, names in self.action_settings.items()
                if fnmatchcase(action, pattern)
                for name in names
            )
        )

    def settings_of(self, settings: Settings) -> SettingsT:
        """This integration's slot of ``settings`` (``settings.<name>``), typed."""
        if self.settings is None:
            raise TypeError(f"the {self.name} integration has no settings")
        value = getattr(settings, self.name, None)
        if not isinstance(value, self.settings):
            raise TypeError(
                f"these settings have no {self.name} slot: build them with "
                "tocsin.settings.load_settings(), which adds every installed integration's"
            )
        return value

    def is_configured(self, settings: Settings, secrets: SecretStore) -> bool:
        """Whether the service is set up here (``configured``; else one of its secrets is set;
        an integration with neither settings nor secrets needs no set-up, so it always is)."""
        if self.configured is not None:
            return self.configured(settings, secrets)
        if self.settings is None and not self.secrets:
            return True
        return any(secrets.get(declared.name) for declared in self.secrets)

    def secret(self, name: str) -> DeclaredSecret:
        """The declared secret ``name``; an integration using one it did not declare fails here."""
        for declared in self.secrets:
            if declared.name == name:
                return declared
        raise ConfigurationError(
            f"the {self.name} integration uses the secret {name!r} but does not declare it",
            "declare it in the integration's `secrets` (a bug of that package)",
        )


# -- discovery ------------------------------------------------------------------------------

_found: dict[tuple[tuple[str, str], ...], tuple[Integration[Any], ...]] = {}


def installed_integrations() -> tuple[Integration[Any], ...]:
    """Every integration installed (built-in or not), by name; loaded once per set found."""
    points = list(entry_points(group=ENTRY_POINT_GROUP))
    key = tuple(sorted({(point.name, point.value) for point in points}))
    known = _found.get(key)
    if known is None:
        known = _load(key, points)
        _found[key] = known
    return known


def _load(
    key: tuple[tuple[str, str], ...], points: list[EntryPoint]
) -> tuple[Integration[Any], ...]:
    names = [name for name, _ in key]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        values = [value for name, value in key if name == twice[0]]
        raise ConfigurationError(
            f"two packages provide the integration {twice[0]!r}: {' and '.join(values)}",
            "uninstall one of them",
        )
    loaded: list[Integration[Any]] = []
    for name, value in key:
        point = next(p for p in points if (p.name, p.value) == (name, value))
        try:
            target = point.load()
        except Exception as exc:  # a broken plug-in must not hide which one it is
            raise ConfigurationError(
                f"cannot load action package {point.module!r} (entry point {name!r}): "
                f"{type(exc).__name__}: {exc}",
                "reinstall or uninstall that package",
            ) from exc
        if not isinstance(target, Integration):
            raise ConfigurationError(
                f"entry point {name!r} = {value!r} ({ENTRY_POINT_GROUP}) is not a Tocsin "
                f"Integration but {type(target).__name__}",
                "it must name the package's `Integration` object, like acme_tocsin:integration",
            )
        if target.name != name or not NAME_PATTERN.match(name):
            raise ConfigurationError(
                f"entry point {name!r} = {value!r} names the integration {target.name!r}",
                "the entry point's name must be the integration's name (lower case, digits, _)",
            )
        loaded.append(target)
    return tuple(loaded)


def offered(hook: str) -> dict[str, Any]:
    """What the installed integrations offer by name under a mapping hook
    (``mail_senders``, ``channel_posters``, ``secret_channels``), merged."""
    found: dict[str, Any] = {}
    for integration in installed_integrations():
        found.update(getattr(integration, hook))
    return found


def integration_named(name: str) -> Integration[Any] | None:
    """The installed integration ``name``, if there is one."""
    return next((i for i in installed_integrations() if i.name == name), None)


# -- what the core asks of every integration ----------------------------------------------


def announcers_for(
    settings: Settings, journal: Journal, secrets: SecretStore, report: ReportMaker | None = None
) -> tuple[list[Announcer], list[tuple[str, str]]]:
    """The announcers of the integrations configured here; and (integration, problem) for
    those configured but unusable (the run audits them)."""
    announcers: list[Announcer] = []
    problems: list[tuple[str, str]] = []
    context = AnnouncerContext(settings, secrets, journal, report)
    for integration in installed_integrations():
        if integration.announcer is None:
            continue
        try:
            announcer = integration.announcer(context)
        except TocsinError as exc:
            problems.append((integration.name, exc.message))
            continue
        if announcer is not None:
            announcers.append(announcer)
    return announcers, problems


def usergroup_members(settings: Settings, secrets: SecretStore, usergroup: str) -> list[str]:
    """The members of ``usergroup`` as the integration keeping user groups says now."""
    for integration in installed_integrations():
        if integration.approver_directory is not None:
            return integration.approver_directory(settings, secrets).members_of(usergroup)
    raise ConfigurationError(
        f"no installed integration can list the members of user group {usergroup}",
        "install the integration of the chat tool the runbook's approver groups live in",
    )


def ticket_system(settings: Settings, secrets: SecretStore) -> TicketSystem | None:
    """The ticket system configured here (Jira...), or None."""
    for integration in installed_integrations():
        if integration.ticket_system is not None:
            found = integration.ticket_system(settings, secrets)
            if found is not None:
                return found
    return None


def demo_runs() -> dict[str, DemoRun]:
    """Every runbook ``tocsin demo`` can run, by id, from the integrations seeding its fakes."""
    found: dict[str, DemoRun] = {}
    owners: dict[str, str] = {}
    for integration in installed_integrations():
        if integration.demo_runs is None:
            continue
        for runbook, run in integration.demo_runs().items():
            if runbook in owners:
                raise ConfigurationError(
                    f"the {owners[runbook]} and {integration.name} integrations both give a "
                    f"demo of {runbook}",
                    "only the integration whose sandbox seeds the runbook's inputs gives it",
                )
            found[runbook], owners[runbook] = run, integration.name
    return dict(sorted(found.items()))


def ticket_keys(settings: Settings) -> TicketKeys | None:
    """What the keys of the configured ticket system look like (the one ``ticket_system``
    builds), read from the settings alone; None when none is configured."""
    for integration in installed_integrations():
        if integration.ticket_keys is not None:
            keys = integration.ticket_keys(settings)
            if keys is not None:
                return keys
    return None


def head_publishers(settings: Settings, secrets: SecretStore) -> list[HeadPublisher]:
    """The places configured for publishing each run's final audit head."""
    found = []
    for integration in installed_integrations():
        if integration.head_publisher is not None:
            publisher = integration.head_publisher(settings, secrets)
            if publisher is not None:
                found.append(publisher)
    return found


def published_heads(query: HeadsQuery) -> list[AnchorPlace]:
    """The heads published for the incident, read back from every place this machine can."""
    places: list[AnchorPlace] = []
    for integration in installed_integrations():
        if integration.published_heads is not None:
            places.extend(integration.published_heads(query))
    return places
