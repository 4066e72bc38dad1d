"""The gateway (`tocsin gateway`): how Slack and the ticket tool reach running runbooks.

A small ASGI application (Starlette, served by uvicorn):

- ``POST /slack/interactions``: Approve / Reject clicks on gate messages (``block_actions``);
- ``POST /slack/commands``: ``/tocsin run <runbook> <ticket> name=value...``, ``/tocsin status <ticket>``;
- ``POST /webhooks/jira``: a Jira webhook starting the runbook named in a ticket field;
- ``GET /healthz``.

Every Slack request's signature is checked (v0 HMAC-SHA256 with the app's signing secret,
timestamp within 5 minutes, the same signed request never twice); Jira's with the shared
secret (``X-Hub-Signature``). A request that fails the check is answered 401 and audited.

A click is judged, then journalled (decision and audit record in one transaction)
before Slack gets its answer, so an acknowledged click is never lost; resuming the paused
Prefect flow happens after the answer, in the background, well within Slack's 3 seconds.
The flow applies decisions at most once and updates the gate message (``chat.update``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qs

from slack_sdk.signature import Clock, SignatureVerifier
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tocsin.actions import ActionRegistry
from tocsin.decisions import DecisionRefused, deliver_decision, submit
from tocsin.errors import ConfigurationError, InputError, TocsinError
from tocsin.gates import WaitRequest
from tocsin.incident import TICKET_PATTERN, Incident, check_ticket
from tocsin.inputs import parse_assignments, resolve_inputs
from tocsin.integrations.slack_incident import APPROVE_ACTION, REJECT_ACTION
from tocsin.journal import Journal
from tocsin.settings import EnvironmentSecrets, Settings
from tocsin.tickets import TicketSystem, TicketTrigger
from tocsin.validation import LoadedRunbook

_log = logging.getLogger("tocsin.gateway")
_T = TypeVar("_T")

SIGNING_SECRET = "slack_signing_secret"
GATEWAY_CHAIN = "GATEWAY"
"""Audit chain of refused requests that name no incident Tocsin knows (not a ticket key)."""
SLACK_WINDOW_SECONDS = 300
JOURNAL_THREADS = 4
BACKGROUND_THREADS = 8
"""Threads resuming flows and answering refused clicks, after Slack got its acknowledgement."""
MIN_REFRESH_SECONDS = 2.0
"""A user group is not looked up again sooner than this, whoever clicks."""
USAGE = (
    "Usage:\n"
    "• `/tocsin run <runbook> <ticket> name=value ...` — start a runbook for an incident\n"
    "• `/tocsin status <ticket>` — what its runs do and wait for\n"
    "Runbooks and their inputs: `tocsin list` on a support machine."
)


class _Clock(Clock):
    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now

    def now(self) -> float:
        return self._now()


class SlackRequestCheck:
    """Slack's request signing, plus refusal of a signed request seen before (a replay)."""

    def __init__(self, signing_secret: str, clock: Callable[[], float] = time.time) -> None:
        self.verifier = SignatureVerifier(signing_secret, clock=_Clock(clock))
        self.clock = clock
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def refusal(self, body: bytes, headers: Mapping[str, str]) -> str | None:
        """Why the request is not from Slack (None: it is). ``headers`` in lower case."""
        timestamp = headers.get("x-slack-request-timestamp")
        signature = headers.get("x-slack-signature")
        if not timestamp or not signature:
            return "unsigned request: no X-Slack-Signature or X-Slack-Request-Timestamp header"
        try:
            signed_at = int(timestamp)
        except ValueError:
            return f"malformed X-Slack-Request-Timestamp {timestamp[:20]!r}"
        age = self.clock() - signed_at
        if abs(age) > SLACK_WINDOW_SECONDS:
            return (
                f"stale request: signed {int(age)} s ago, outside Slack's 5-minute window "
                "(a replay, or this machine's clock is wrong)"
            )
        if not self.verifier.is_valid(body, timestamp, signature):
            return "bad signature: not signed with this Slack app's signing secret"
        with self._lock:
            horizon = self.clock() - 2 * SLACK_WINDOW_SECONDS
            for seen, at in list(self._seen.items()):
                if at < horizon:
                    del self._seen[seen]
            if signature in self._seen:
                return "replayed request: this signed request was already received"
            self._seen[signature] = signed_at
        return None


class UsergroupMembers:
    """Members of Slack user groups (``usergroups.users.list``), cached for a short while."""

    def __init__(
        self,
        lookup: Callable[[str], list[str]],
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lookup = lookup
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()

    def members(self, usergroup: str) -> frozenset[str] | None:
        """The group's members; None when Slack cannot say (the caller falls back to the list
        taken when the gate opened)."""
        return self._members(usergroup, refresh=False)

    def is_member(self, user: str, usergroup: str) -> bool:
        """Whether ``user`` is in the group. A member found in the cache is trusted for
        ``ttl_seconds``; someone not found is looked up again (at most every few seconds),
        so a person added to the group a moment ago can decide at once."""
        members = self._members(usergroup, refresh=False)
        if members is not None and user in members:
            return True
        refreshed = self._members(usergroup, refresh=True)
        return refreshed is not None and user in refreshed

    def _members(self, usergroup: str, *, refresh: bool) -> frozenset[str] | None:
        with self._lock:
            cached = self._cache.get(usergroup)
        if cached is not None:
            age = self.clock() - cached[0]
            fresh_enough = age < (
                min(self.ttl_seconds, MIN_REFRESH_SECONDS) if refresh else self.ttl_seconds
            )
            if fresh_enough:
                return cached[1]
        try:
            members = frozenset(self.lookup(usergroup))
        except TocsinError as exc:
            _log.warning("cannot list Slack user group %s: %s", usergroup, exc.message)
            return cached[1] if cached is not None else None
        with self._lock:
            self._cache[usergroup] = (self.clock(), members)
        return members


class UserDirectory:
    """Who a Slack user id is (``users.info``: name, real name, e-mail when the token may read
    it), cached for an hour, so the audit trail names approvers as Slack knew them."""

    def __init__(
        self,
        lookup: Callable[[str], dict[str, str]],
        ttl_seconds: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lookup = lookup
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self._cache: dict[str, tuple[float, dict[str, str]]] = {}
        self._lock = threading.Lock()

    def details(self, user: str) -> dict[str, str]:
        """What Slack says of ``user``; empty when it cannot say (never blocks a decision)."""
        with self._lock:
            cached = self._cache.get(user)
        if cached is not None and self.clock() - cached[0] < self.ttl_seconds:
            return cached[1]
        try:
            found = self.lookup(user)
        except Exception as exc:  # Slack down or the user unknown: the id is what counts
            _log.warning("cannot look up Slack user %s: %s", user, exc)
            return cached[1] if cached is not None else {}
        with self._lock:
            self._cache[user] = (self.clock(), found)
        return found


def slack_user_details(credentials: Any, user: str) -> dict[str, str]:
    """``users.info`` reduced to what identifies a person in an audit trail."""
    response = credentials.get_client().users_info(user=user)
    info = response.get("user") or {}
    profile = info.get("profile") or {}
    details = {
        "name": str(info.get("name") or ""),
        "real_name": str(info.get("real_name") or profile.get("real_name") or ""),
        "email": str(profile.get("email") or ""),
    }
    if info.get("deleted"):
        details["deleted"] = "true"
    if info.get("is_bot"):
        details["is_bot"] = "true"
    return {key: value for key, value in details.items() if value}


@dataclass(frozen=True)
class Click:
    """One Approve or Reject click, as Slack's ``block_actions`` payload says."""

    user: str
    kind: str
    ticket: str
    run_id: int
    step_id: str
    gate_hash: str
    channel: str


def click_from_payload(payload: Mapping[str, Any]) -> Click | None:
    """The click a payload carries; None when it is not a click on a Tocsin gate button."""
    if payload.get("type") != "block_actions":
        return None
    actions = payload.get("actions") or []
    if not actions:
        return None
    action = actions[0]
    kind = {APPROVE_ACTION: "approve", REJECT_ACTION: "reject"}.get(action.get("action_id"))
    if kind is None:
        return None
    try:
        value = json.loads(action.get("value") or "")
        user = str(payload["user"]["id"])
        channel = str(
            (payload.get("channel") or {}).get("id")
            or (payload.get("container") or {}).get("channel_id")
            or ""
        )
        return Click(
            user=user,
            kind=kind,
            ticket=str(value["ticket"]),
            run_id=int(value["run"]),
            step_id=str(value["step"]),
            gate_hash=str(value["hash"]),
            channel=channel,
        )
    except (ValueError, KeyError, TypeError):
        return None


def _claimed(body: bytes) -> dict[str, Any]:
    """What an unauthenticated request says it is (for the audit record only; not trusted)."""
    fields = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
    claimed: dict[str, Any] = {}
    if "payload" in fields:
        try:
            payload = json.loads(fields["payload"])
            click = click_from_payload(payload)
            if click is not None:
                claimed = {
                    "user": click.user,
                    "decision": click.kind,
                    "ticket": click.ticket,
                    "step_id": click.step_id,
                }
            else:
                claimed = {"user": str((payload.get("user") or {}).get("id", ""))}
        except (ValueError, AttributeError):
            pass
    elif "command" in fields:
        claimed = {
            "user": fields.get("user_id", ""),
            "command": f"{fields.get('command', '')} {fields.get('text', '')}"[:200],
        }
    return claimed


class RunLauncher:
    """Starts runs asked for from Slack or a ticket: on a Prefect deployment (a worker runs
    them) when ``gateway.deployment`` is set, else in this process, one thread per run."""

    def __init__(self, settings: Settings, journal: Journal) -> None:
        self.settings = settings
        self.journal = journal
        self.threads: list[threading.Thread] = []

    def start(self, loaded: LoadedRunbook, incident: Incident, inputs: dict[str, Any]) -> str:
        """Check the inputs and start the run; a sentence saying where it runs."""
        resolve_inputs(loaded.runbook, inputs)  # refuse wrong inputs here, with the CLI's words
        existing = self.journal.find_run(incident.ticket, loaded.runbook.runbook)
        if existing is not None and existing.is_alive():
            raise InputError(
                f"{loaded.runbook.runbook} is already running for {incident.ticket}",
                f"`/tocsin status {incident.ticket}` shows what it waits for",
            )
        parameters = {
            "runbook_source": loaded.path.read_text(encoding="utf-8"),
            "runbook_name": str(loaded.path),
            "incident": asdict(incident),
            "inputs": inputs,
        }
        name = f"{incident.ticket}-{loaded.runbook.runbook}"
        tags = [f"incident:{incident.ticket}", f"runbook:{loaded.runbook.runbook}"]
        if self.settings.gateway.deployment:
            from prefect.deployments import run_deployment

            run_deployment(
                self.settings.gateway.deployment,
                parameters=parameters,
                flow_run_name=name,
                tags=tags,
                timeout=0,
                as_subflow=False,
            )
            return f"queued on deployment {self.settings.gateway.deployment}"
        thread = threading.Thread(
            target=self._run_here, args=(name, tags, parameters), name=name, daemon=True
        )
        thread.start()
        self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        return "started"

    def _run_here(self, name: str, tags: list[str], parameters: dict[str, Any]) -> None:
        from prefect import tags as prefect_tags

        from tocsin.flows.runbook import run_runbook

        try:
            with prefect_tags(*tags):
                run_runbook.with_options(flow_run_name=name)(**parameters, return_state=True)
        except Exception:  # the journal says how far it got; `tocsin run` continues it
            _log.exception("run %s stopped unexpectedly", name)


def _warm_up() -> None:
    """Import now what answering and delivering need, so the first clicks do not wait for it
    (importing Prefect takes over a second, and holds the interpreter while it does)."""
    import gc

    import prefect.exceptions  # noqa: F401
    import prefect.flow_runs  # noqa: F401
    import slack_sdk.web  # noqa: F401

    # What is loaded now lives as long as the process: keep it out of the garbage collector's
    # full passes, which otherwise pause every thread for a tenth of a second now and then.
    gc.collect()
    gc.freeze()


class Gateway:
    """The gateway's state (settings, journal, checks, caches) and its ASGI application."""

    def __init__(
        self,
        settings: Settings,
        *,
        secrets: Any = None,
        journal: Journal | None = None,
        tickets: TicketSystem | None = None,
        registry: ActionRegistry | None = None,
        launcher: RunLauncher | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from tocsin.integrations.slack import SlackCredentials, usergroup_members
        from tocsin.running import journal_for

        self.settings = settings
        self.secrets = secrets if secrets is not None else EnvironmentSecrets()
        self.journal = journal or journal_for(settings, signing=True)
        self.registry = registry or ActionRegistry.discover(settings.action_modules)
        self.launcher = launcher or RunLauncher(settings, self.journal)
        self.tickets = tickets
        signing_secret = self.secrets.get(SIGNING_SECRET)
        if not signing_secret:
            raise ConfigurationError(
                "the gateway needs the Slack app's signing secret to check Slack's requests",
                f"set TOCSIN_SECRET_{SIGNING_SECRET.upper()} (Slack app settings, Basic "
                "Information, App Credentials, Signing Secret)",
            )
        self.slack_check = SlackRequestCheck(signing_secret, clock)
        token = self.secrets.get("slack_bot_token")
        self.slack: SlackCredentials | None = (
            SlackCredentials(token=token, base_url=settings.slack_api_url, timeout_seconds=5)
            if token
            else None
        )
        lookup_credentials = (
            SlackCredentials(token=token, base_url=settings.slack_api_url, timeout_seconds=2)
            if token
            else None
        )

        def lookup(usergroup: str) -> list[str]:
            if lookup_credentials is None:
                raise ConfigurationError("no Slack bot token to list user groups")
            return usergroup_members(lookup_credentials, usergroup)

        self.members = UsergroupMembers(lookup, settings.slack.usergroup_cache_seconds)

        def describe(user: str) -> dict[str, str]:
            if lookup_credentials is None:
                return {}
            return slack_user_details(lookup_credentials, user)

        self.people = UserDirectory(describe)
        _warm_up()
        # A few threads do the journalling: more would only queue on the database and
        # fight for the interpreter, and make every acknowledgement slower.
        self.journalling = ThreadPoolExecutor(
            max_workers=JOURNAL_THREADS, thread_name_prefix="gateway-journal"
        )
        self.background = ThreadPoolExecutor(
            max_workers=BACKGROUND_THREADS, thread_name_prefix="gateway-background"
        )
        self._known_chains: set[str] = set()
        self._deliveries: OrderedDict[str, float] = OrderedDict()
        self._deliveries_lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/slack/interactions", self.slack_interactions, methods=["POST"]),
                Route("/slack/commands", self.slack_commands, methods=["POST"]),
                Route("/webhooks/jira", self.jira_webhook, methods=["POST"]),
            ]
        )

    async def _journalling(self, function: Callable[..., _T], *args: Any) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.journalling, function, *args)

    def close(self) -> None:
        self.journalling.shutdown(wait=True, cancel_futures=False)
        self.background.shutdown(wait=True, cancel_futures=False)
        self.journal.close()

    # -- common ---------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    def audit_refused_request(self, source: str, reason: str, claimed: Mapping[str, Any]) -> None:
        """Record a request refused at the door (bad signature...) in the incident it names, if
        Tocsin knows it, else in the gateway's own chain."""
        ticket = str(claimed.get("ticket") or "")
        chain = GATEWAY_CHAIN
        if TICKET_PATTERN.match(ticket):
            if ticket in self._known_chains or self.journal.has_chain(ticket):
                self._known_chains.add(ticket)  # a chain, once started, is never removed
                chain = ticket
        self.journal.record(
            chain,
            "gateway.request_refused",
            source=source,
            reason=reason,
            claimed=dict(claimed),
        )

    async def _refuse(
        self, source: str, reason: str, claimed: Mapping[str, Any], status: int = 401
    ) -> Response:
        await self._journalling(self.audit_refused_request, source, reason, claimed)
        return JSONResponse({"ok": False, "error": reason}, status_code=status)

    # -- Slack ----------------------------------------------------------------------------

    async def _slack_form(self, request: Request) -> tuple[bytes, dict[str, str] | Response]:
        body = await request.body()
        headers = {name.lower(): value for name, value in request.headers.items()}
        refusal = self.slack_check.refusal(body, headers)
        if refusal is not None:
            return body, await self._refuse("slack", refusal, _claimed(body))
        fields = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        return body, fields

    async def slack_interactions(self, request: Request) -> Response:
        _, form = await self._slack_form(request)
        if isinstance(form, Response):
            return form
        try:
            payload = json.loads(form.get("payload") or "")
        except ValueError:
            return JSONResponse({"ok": False, "error": "no interaction payload"}, status_code=400)
        click = click_from_payload(payload) if isinstance(payload, dict) else None
        if click is None:
            return Response(status_code=200)  # another kind of interaction: nothing to do
        accepted, message, delivery = await self._journalling(self.decide, click)
        # After the answer, on the gateway's own threads: a slow Slack or Prefect never
        # holds up the acknowledgement of the next clicks.
        if accepted:
            self.background.submit(delivery)
        else:
            self.background.submit(self.tell_clicker, click, message)
        return Response(status_code=200)

    def vouched_groups(self, click: Click, request: WaitRequest) -> list[str]:
        """The gate's Slack user groups the clicker belongs to, as Slack says now (cached)."""
        if request.kind != "approval" or click.user in request.approvers:
            return []
        return [g for g in request.usergroups if self.members.is_member(click.user, g)]

    def decide(self, click: Click) -> tuple[bool, str, Callable[[], None]]:
        """Judge and journal a click: (accepted, message for the clicker, delivery to the flow)."""
        try:
            outcome = submit(
                self.journal,
                incident=click.ticket,
                step_id=click.step_id,
                kind=click.kind,
                actor=click.user,
                channel="slack",
                gate_hash=click.gate_hash,
                vouched=lambda request: self.vouched_groups(click, request),
                run_id=click.run_id,
                actor_details=self.people.details(click.user),
                deliver=False,
            )
        except DecisionRefused as refused:
            return False, refused.message, lambda: None
        run = outcome.run

        def delivery() -> None:
            if run is not None:
                # After Slack has its answer: keep trying until the flow takes it (it may be
                # between two pauses), for up to 20 s; past that the flow finds it itself.
                deliver_decision(self.journal, run, outcome.decision, wait=True)

        return True, outcome.message, delivery

    def tell_clicker(self, click: Click, message: str) -> None:
        """Say privately to the clicker why the click did not count."""
        if self.slack is None or not click.channel:
            return
        from slack_sdk.errors import SlackApiError

        try:
            self.slack.get_client().chat_postEphemeral(
                channel=click.channel,
                user=click.user,
                text=f":no_entry_sign: Your {click.kind} of {click.step_id} was not counted: {message}",
            )
        except (SlackApiError, OSError) as exc:
            _log.warning("cannot tell %s why the click was refused: %s", click.user, exc)

    async def slack_commands(self, request: Request) -> Response:
        _, form = await self._slack_form(request)
        if isinstance(form, Response):
            return form
        text = await run_in_threadpool(
            self.command, form.get("text", ""), form.get("user_id", ""), form.get("channel_id", "")
        )
        return JSONResponse({"response_type": "ephemeral", "text": text})

    def command(self, text: str, user: str, channel: str) -> str:
        """The answer to ``/tocsin <text>`` (shown only to the person who typed it)."""
        words = text.split()
        if not words or words[0] in ("help", "-h", "--help"):
            return USAGE
        try:
            if words[0] == "status" and len(words) == 2:
                from tocsin.status import status_lines

                lines = status_lines(self.journal, check_ticket(words[1]))
                return "```\n" + "\n".join(lines)[:2900] + "\n```"
            if words[0] == "run" and len(words) >= 3:
                return self.start_run(
                    words[1], words[2], parse_assignments(words[3:]), user, "slack"
                )
        except TocsinError as error:
            return f":warning: {error.message}" + (f"\n{error.hint}" if error.hint else "")
        return f":warning: I do not understand `{text[:100]}`.\n{USAGE}"

    def start_run(
        self,
        runbook_id: str,
        ticket: str,
        inputs: dict[str, Any],
        requested_by: str,
        via: str,
        *,
        title: str = "",
        url: str = "",
    ) -> str:
        from tocsin.catalogue import runbook_by_id

        key = check_ticket(ticket)
        try:
            loaded = runbook_by_id(runbook_id, self.registry, self.settings)
            incident = Incident(
                ticket=key, title=title, url=url, requested_by=requested_by, requested_via=via
            )
            where = self.launcher.start(loaded, incident, inputs)
        except TocsinError as error:
            self.journal.record(
                key,
                "run.request_refused",
                actor=requested_by,
                runbook=runbook_id,
                via=via,
                reason=error.message,
            )
            raise
        return (
            f":rocket: {loaded.runbook.title} (`{loaded.id}` v{loaded.runbook.version}) {where} "
            f"for {key}; progress and approvals follow in the incident thread."
        )

    # -- tickets --------------------------------------------------------------------------

    def _seen_delivery(self, delivery_id: str | None) -> bool:
        if not delivery_id:
            return False
        with self._deliveries_lock:
            if delivery_id in self._deliveries:
                return True
            self._deliveries[delivery_id] = time.time()
            while len(self._deliveries) > 10_000:
                self._deliveries.popitem(last=False)
        return False

    async def jira_webhook(self, request: Request) -> Response:
        if self.tickets is None:
            return JSONResponse(
                {"ok": False, "error": "Jira is not configured (settings jira.url)"},
                status_code=404,
            )
        body = await request.body()
        headers = {name.lower(): value for name, value in request.headers.items()}
        if not self.tickets.verify_webhook(headers, body):
            claimed: dict[str, Any] = {}
            try:
                claimed = {"ticket": str(json.loads(body)["issue"]["key"])}
            except (ValueError, KeyError, TypeError):
                pass
            return await self._refuse(
                "jira",
                "bad or missing X-Hub-Signature: not signed with the shared webhook secret",
                claimed,
            )
        try:
            trigger = self.tickets.parse_webhook(body)
        except InputError as error:
            return JSONResponse({"ok": False, "error": error.message}, status_code=400)
        delivery = headers.get("x-atlassian-webhook-identifier") or trigger.delivery_id
        if self._seen_delivery(delivery):
            return JSONResponse({"ok": True, "duplicate": True})
        status, message = await run_in_threadpool(self.start_from_ticket, trigger)
        return JSONResponse({"ok": status < 400, "message": message}, status_code=status)

    def start_from_ticket(self, trigger: TicketTrigger) -> tuple[int, str]:
        """Start the runbook a ticket asks for: (HTTP status, message). 202: started; 200:
        nothing to start; 422: refused, and the reason is also written on the ticket."""
        assert self.tickets is not None
        existing = (
            self.journal.find_run(trigger.ticket, trigger.runbook)
            if trigger.runbook and TICKET_PATTERN.match(trigger.ticket)
            else None
        )
        if existing is not None and (existing.is_alive() or existing.status == "succeeded"):
            # Jira sends a webhook at each edit of the ticket: a run that is going on, or
            # went well, is left alone (a failed or stopped one is resumed).
            state = "is running" if existing.is_alive() else "already succeeded"
            return 200, f"{trigger.runbook} {state} for {trigger.ticket}; nothing started"
        try:
            if not trigger.runbook:
                raise InputError(
                    "the ticket names no runbook",
                    f"fill the field {self.settings.jira.runbook_field} with a runbook id",
                )
            message = self.start_run(
                trigger.runbook,
                trigger.ticket,
                dict(trigger.inputs),
                trigger.requested_by or self.tickets.name,
                self.tickets.name,
                title=trigger.title,
                url=trigger.url,
            )
        except TocsinError as error:
            text = f"Tocsin did not start a runbook: {error.message}"
            if error.hint:
                text += f"\n{error.hint}"
            self._comment(trigger.ticket, text)
            return 422, text
        return 202, message

    def _comment(self, ticket: str, text: str) -> None:
        assert self.tickets is not None
        try:
            self.tickets.comment(ticket, text)
        except TocsinError as error:
            _log.warning("cannot comment on %s: %s", ticket, error.message)


__all__ = [
    "GATEWAY_CHAIN",
    "Click",
    "Gateway",
    "RunLauncher",
    "SlackRequestCheck",
    "UsergroupMembers",
    "click_from_payload",
]


class GatewayServer:
    """The gateway served by uvicorn in a background thread (the demo, tests, benchmarks)::

    with GatewayServer(gateway.app) as server:
        httpx.post(server.url + "/slack/interactions", ...)
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        import socket

        import uvicorn

        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))
        self.host, self.port = self.socket.getsockname()[:2]
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run,
            kwargs={"sockets": [self.socket]},
            name=f"gateway:{self.port}",
            daemon=True,
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> GatewayServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise ConfigurationError(f"the gateway did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
