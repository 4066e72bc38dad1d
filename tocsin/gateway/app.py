"""The gateway's core: the routes the integrations contribute, each guarded the same way,
and what they hand off to (queueing and judging a click, starting a run, an incident's
status).

Nothing here knows a service. Each installed integration with a ``gateway`` hook adds
its routes (Slack: ``/slack/interactions`` and ``/slack/commands``; Jira:
``/webhooks/jira``); each route reads its body with ``read_body``, checks the request is
the service's, and calls ``queue_click``, ``start_run``, ``incident_status`` or
``start_from_ticket``. A queued click is judged after the answer by the click judge
(``click_judge``), which hands it back to its integration, which calls ``decide``. Who is in a user group, who a user is and who has an e-mail address
are asked of the integration whose part brings ``people`` (Slack's).
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tocsin.access import (
    ChatRequester,
    StartPolicy,
    TicketRequester,
    refusal_for_chat,
    refusal_for_ticket,
)
from tocsin.action_registry import ActionRegistry
from tocsin.decisions import deliver_decision
from tocsin.errors import ConfigurationError, InputError, TocsinError
from tocsin.gates import WaitRequest
from tocsin.gateway import deciding
from tocsin.gateway.click_judge import (
    CLAIM_BATCH,
    ClickHandler,
    ClickJudge,
    ClickPreparer,
    FlowWaker,
)
from tocsin.gateway.judging_process import JudgingProcess
from tocsin.gateway.launcher import RunLauncher
from tocsin.gateway.reading import RequestRefused, claim_text, read_body
from tocsin.gateway.refusals import RefusalAudit
from tocsin.gateway.server import server_config
from tocsin.incident import GATEWAY_CHAIN, Incident, check_ticket
from tocsin.integration import (
    GatewayPeople,
    InboundRoute,
    installed_integrations,
    ticket_keys,
)
from tocsin.journal import DecisionRecord, Journal, RunRecord
from tocsin.journal.click_queue import ClickQueue, ClickWriter
from tocsin.settings import EnvironmentSecrets, SecretStore, Settings
from tocsin.statuses import RunStatus
from tocsin.tickets import JIRA_KEYS, TicketKeys, TicketSystem, TicketTrigger
from tocsin.validation import LoadedRunbook

_log = logging.getLogger("tocsin.gateway")
_T = TypeVar("_T")

JOURNAL_THREADS = 4
BACKGROUND_THREADS = 8
"""Threads resuming flows and answering refused clicks, after the service got its answer."""
SQLITE_CLAIM_BATCH = 10
"""SQLite has one writer: a batch's transaction holds it, and the clicks being acknowledged
wait for it, so the judge takes fewer at once there."""
JUDGE_THREADS = 1
"""Judge threads of a gateway: one, judging a claimed batch in one read and one write, takes
200 clicks a second; more only fight the answers to Slack for the interpreter (and judge
one person's two clicks on one gate side by side)."""
WAKE_THREADS = 4
"""Threads waking flows (``resume_flow_run``), each with a Prefect client of its own."""
LOOKUP_THREADS = 8
"""Threads looking up the people who clicked, for a batch of clicks being judged."""
SWITCH_INTERVAL_SECONDS = 0.001
"""How long a thread may hold the interpreter before another gets it, in ``tocsin gateway``:
the event loop answering Slack waits at most this for the judge's threads (Python's 5 ms
default adds up to tens of ms per answer under load)."""


@dataclass(frozen=True)
class Click:
    """One Approve or Reject click on a gate, as the chat tool's request says (checked)."""

    user: str
    kind: str
    ticket: str
    run_id: int
    step_id: str
    gate_hash: str


@dataclass(frozen=True)
class Judged:
    """A click judged and journalled: whether it counts, what to tell the clicker, and
    ``deliver``, to call after the answer (it wakes the flow)."""

    accepted: bool
    message: str
    deliver: Callable[[], None]


def _warm_up() -> None:
    """Import now what answering and delivering need, so the first clicks do not wait for it
    (importing Prefect takes over a second, and holds the interpreter while it does)."""
    import gc

    import prefect.exceptions  # noqa: F401
    import prefect.flow_runs  # noqa: F401
    import sqlalchemy.orm  # noqa: F401  (imported lazily on first use: two threads at once fail)

    # What is loaded now lives as long as the process: keep it out of the garbage collector's
    # full passes, which otherwise pause every thread for a tenth of a second now and then.
    gc.collect()
    gc.freeze()


class Gateway:
    """The gateway's state (settings, journal, policy, the integrations' parts) and its ASGI
    application; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        secrets: SecretStore | None = None,
        journal: Journal | None = None,
        tickets: TicketSystem | None = None,
        registry: ActionRegistry | None = None,
        launcher: RunLauncher | None = None,
        clock: Callable[[], float] = time.time,
        judges_clicks: bool = True,
    ) -> None:
        """``judges_clicks``: this process judges the clicks it queues (a thread); False: a
        judging process does (``judged_by``; ``tocsin.gateway.judging_process``)."""
        from tocsin.running import journal_for

        self.settings = settings
        self.secrets = secrets if secrets is not None else EnvironmentSecrets()
        self.clock = clock
        self.tickets = tickets
        # The keys the ticket system uses, as the CLI checks them (Jira's while none is set).
        self.ticket_keys: TicketKeys = (
            tickets.keys if tickets is not None else ticket_keys(settings) or JIRA_KEYS
        )
        self.policy = StartPolicy(settings)
        self.routes: list[tuple[str, InboundRoute]] = []
        self.people: GatewayPeople | None = None
        self.click_handlers: dict[str, ClickHandler] = {}
        self.click_preparers: dict[str, ClickPreparer] = {}
        people_from = ""
        # Each integration's part is built first: one whose secrets are missing (Slack's
        # signing secret) stops the gateway before it opens anything.
        for integration in installed_integrations():
            if integration.gateway is None:
                continue
            part = integration.gateway(self)
            self.routes.extend((integration.name, route) for route in part.routes)
            if part.people is not None:
                if self.people is not None:
                    raise ConfigurationError(
                        f"two integrations say who is in a user group: {people_from} and "
                        f"{integration.name}",
                        "uninstall one of them",
                    )
                self.people, people_from = part.people, integration.name
        self.journal = journal or journal_for(settings, signing=True)
        self.registry = registry or ActionRegistry.for_settings(settings)
        self.launcher = launcher or RunLauncher(settings, self.journal, self.secrets)
        _warm_up()
        # A few threads do the journalling: more would only queue on the database and
        # fight for the interpreter, and make every acknowledgement slower.
        self.journalling = ThreadPoolExecutor(
            max_workers=JOURNAL_THREADS, thread_name_prefix="gateway-journal"
        )
        self.background = ThreadPoolExecutor(
            max_workers=BACKGROUND_THREADS, thread_name_prefix="gateway-background"
        )
        self.refusals = RefusalAudit(self.journal, settings.gateway.refusals_audited_per_minute)
        self.refusals.start()
        # Clicks: acknowledged once queued in the journal, judged after, by this process or
        # another gateway on the same journal (docs/gateway.md, "The click queue").
        self.waking = ThreadPoolExecutor(
            max_workers=WAKE_THREADS, thread_name_prefix="gateway-wake"
        )
        self._waking_thread = threading.local()
        self._prefect_clients: list[Any] = []
        self._lock = threading.Lock()
        self.flows = FlowWaker(self.waking, self._deliver)
        self.click_queue = ClickQueue(self.journal)
        self.decision_batches = deciding.DecisionBatches(self.journal)
        self.click_judge = ClickJudge(
            self.click_queue,
            self.click_handlers,
            self.background,
            preparers=self.click_preparers,
            batches=self.decision_batches.batch,
            threads=JUDGE_THREADS,
            batch=SQLITE_CLAIM_BATCH
            if self.journal.engine.dialect.name == "sqlite"
            else CLAIM_BATCH,
        )
        # Look-ups of people in the chat service for the clicks being judged, side by side.
        self.lookups = ThreadPoolExecutor(
            max_workers=LOOKUP_THREADS, thread_name_prefix="gateway-lookup"
        )
        self.click_writer = ClickWriter(self.click_queue, on_commit=self.click_judge.wake)
        self.app = Starlette(
            routes=[
                Route("/healthz", self.healthz, methods=["GET"]),
                *(
                    Route(
                        route.path,
                        self.guarded(source, route),
                        methods=list(route.methods),
                    )
                    for source, route in self.routes
                ),
            ]
        )
        self.judging: JudgingProcess | None = None
        if judges_clicks:
            self.click_judge.start()  # first, what a gateway that stopped left unjudged

    def judged_by(self, judging: JudgingProcess) -> None:
        """The clicks this process queues are judged by ``judging`` (a process of its own),
        woken after each commit."""
        self.judging = judging
        self.click_writer.on_commit = judging.wake

    def close(self) -> None:
        self.click_writer.close()  # what was answered is queued; then its judge stops
        if self.judging is not None:
            self.judging.close()
        self.click_judge.close()
        self.lookups.shutdown(wait=True, cancel_futures=True)
        self.waking.shutdown(wait=True, cancel_futures=False)
        for client in self._prefect_clients:
            try:
                client.__exit__(None, None, None)
            except Exception as exc:  # closing: nothing more to do with it
                _log.debug("closing a Prefect client: %s", exc)
        self.journalling.shutdown(wait=True, cancel_futures=False)
        self.background.shutdown(wait=True, cancel_futures=False)
        self.refusals.close()
        self.journal.close()

    def serve(self, host: str, port: int) -> None:
        """Serve the gateway with uvicorn until interrupted (``tocsin gateway``)."""
        import sys

        import uvicorn

        sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)  # the process is the gateway's own
        uvicorn.Server(server_config(self.app, self.settings.gateway, host, port)).run()

    # -- what routes use -------------------------------------------------------------------

    async def journalled(self, function: Callable[..., _T], *args: Any) -> _T:
        """``function(*args)`` on the journalling threads (the event loop never waits on it)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.journalling, function, *args)

    def judges_clicks_from(
        self, source: str, handler: ClickHandler, prepare: ClickPreparer | None = None
    ) -> None:
        """``handler`` judges the clicks queued with ``source`` (an integration's name);
        ``prepare``, when given, is called with each claimed batch of them first."""
        self.click_handlers[source] = handler
        if prepare is not None:
            self.click_preparers[source] = prepare

    async def queue_click(self, source: str, payload: str, request_digest: str) -> int | None:
        """Queue a verified click for judging; returns once it is committed (its id), or None:
        its signed request (``request_digest``) was queued before, by any gateway (a replay)."""
        return await asyncio.wrap_future(self.click_writer.submit(source, payload, request_digest))

    async def read_body(self, request: Request) -> bytes:
        """The request's body, bounded (``tocsin.gateway.reading.read_body``)."""
        return await read_body(request, self.settings.gateway)

    async def healthz(self, request: Request) -> Response:
        """``ok``: requests are answered and clicks queued; ``judging``: whether this
        gateway's clicks are being judged (False while its judging process restarts)."""
        judging = self.judging.alive if self.judging is not None else True
        return JSONResponse({"ok": True, "judging": judging})

    def guarded(self, source: str, route: InboundRoute) -> Callable[[Request], Awaitable[Response]]:
        """The route's handler answering every refusal with its status and one sentence, and
        anything unexpected with 500 and no detail; each audited in the gateway's chain."""

        async def guarded(request: Request) -> Response:
            try:
                return await route.handler(request)
            except RequestRefused as refused:
                await self._audit_refusal(request, source, route, refused.status, refused.message)
                body: dict[str, Any] = {"ok": False, "error": refused.message}
                if refused.hint:
                    body["hint"] = refused.hint
                return JSONResponse(body, status_code=refused.status)
            except Exception as exc:  # a bug: answered 500 without detail, logged and audited
                _log.exception("the gateway failed on %s %s", request.method, request.url.path)
                reason = f"internal error ({type(exc).__name__}); the gateway's log has the details"
                await self._audit_refusal(
                    request, source, route, 500, reason, "gateway.request_failed"
                )
                return JSONResponse(
                    {"ok": False, "error": "the gateway could not handle this request (logged)"},
                    status_code=500,
                )

        return guarded

    async def _audit_refusal(
        self,
        request: Request,
        source: str,
        route: InboundRoute,
        status: int,
        reason: str,
        kind: str = "gateway.request_refused",
    ) -> None:
        body: bytes = getattr(request.state, "body", b"")
        peer = request.client.host if request.client else "unknown"
        claimed = _claimed(route, body)
        try:
            await self.journalled(
                self.refusals.refused, peer, kind, source, status, reason, claimed
            )
        except TocsinError as error:  # the answer still goes out; the log says what was lost
            _log.error("cannot audit a refused request from %s (%s): %s", peer, reason, error)

    # -- people ----------------------------------------------------------------------------

    def member_of(self, user: str, usergroup: str) -> bool:
        """Whether the user is in the user group now; False when nobody can say (deny)."""
        if self.people is None:
            return False
        try:
            return self.people.is_member(user, usergroup)
        except TocsinError:
            return False

    def vouched_groups(self, user: str, request: WaitRequest) -> list[str]:
        """The gate's user groups the clicker belongs to, as the chat tool says now (cached)."""
        if user in request.approvers or self.people is None:
            return []
        return [g for g in request.usergroups if self.people.is_member(user, g)]

    # -- decisions -------------------------------------------------------------------------

    def decide(self, click: Click, via: str, *, queued_at: datetime | None = None) -> Judged:
        """Judge and journal a queued click: in the batch the judge of this thread is
        judging, journalled with it in one transaction; else at once (decision and audit
        record in one transaction). See ``tocsin.gateway.deciding``.

        ``queued_at``: for a click claimed again (a gateway claimed it before, and may have
        died after journalling its decision): when it was queued. A decision of this person
        of this kind on this step since then is that click's: it is not decided twice."""
        return deciding.decide(self, click, via, queued_at)

    def read_gates(self, gates: Iterable[tuple[int, str]]) -> None:
        """Read the (run id, step id) gates of the clicks of the batch being judged on this
        thread at once (an integration's preparer; nothing without a batch)."""
        batch = self.decision_batches.current()
        if batch is not None:
            batch.read(gates)

    def _deliver(self, run: RunRecord, decision: DecisionRecord) -> None:
        """Wake the run's flow (retried for 2 s if it is between two pauses). The flow
        applies or refuses the decision, and every other pending one, and tells the person."""
        if run.flow_run_id is None:
            return  # no flow to wake (yet): it reads the journal before it waits
        self._with_a_prefect_client()
        deliver_decision(self.journal, run, decision, wait=False)

    def _with_a_prefect_client(self) -> None:
        """Give this waking thread a Prefect client for its lifetime, which Prefect's calls
        in it use: creating one per wake-up (its TLS context) costs tens of milliseconds of
        interpreter time, taken from the answers to Slack. Made at the first wake-up, not
        before: without a Prefect server configured, Prefect would start one. Closed by
        ``close``."""
        if getattr(self._waking_thread, "has_client", False):
            return
        from prefect.context import SyncClientContext

        self._waking_thread.has_client = True
        try:
            context = SyncClientContext()
            context.__enter__()
        except Exception as exc:  # each call then makes its own client
            _log.warning("no lasting Prefect client for waking flows: %s", exc)
            return
        with self._lock:
            self._prefect_clients.append(context.client)

    # -- incidents and runs asked for from chat ---------------------------------------------

    def may_see(self, ticket: str, who: ChatRequester) -> bool:
        """Whether this person may read the incident's status: they may start one of its
        runbooks, started one of its runs, or may decide one of its steps."""
        for run in self.journal.runs_of(ticket):
            if run.requested_by == who.user or self.policy.chat_may_start(
                run.runbook_id, who, self.member_of
            ):
                return True
            for record in self.journal.steps_of(run.id):
                if not record.request:
                    continue
                request = WaitRequest.from_data(record.request)
                if who.user in request.approvers or any(
                    self.member_of(who.user, g) for g in request.usergroups
                ):
                    return True
        return False

    def incident_status(self, ticket: str, who: ChatRequester, via: str) -> list[str]:
        """What the incident's runs do and wait for, for someone who may see it; the same
        ``InputError`` as for an unknown ticket otherwise (a stranger learns nothing)."""
        from tocsin.status import status_lines

        key = check_ticket(ticket, self.ticket_keys)
        if not self.may_see(key, who):
            self.refused_start(who, "status", key, "not allowed to see this incident", via)
            raise InputError(f"no incident {key} that you may see")
        return status_lines(self.journal, key)

    def refused_start(
        self, who: ChatRequester, runbook: str, ticket: str, reason: str, via: str
    ) -> None:
        """A signed request from someone not allowed: in the gateway's own chain, not the
        incident's (the ticket is only what they typed)."""
        self.journal.record(
            GATEWAY_CHAIN,
            "run.request_refused",
            actor=who.user[:64],
            via=via,
            channel=who.channel[:64],
            runbook=runbook[:64],
            ticket=ticket[:64],
            reason=reason,
        )

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
        who: ChatRequester | None = None,
    ) -> tuple[LoadedRunbook, str, str]:
        """Start a runbook for a ticket; ``who``: the person asking in chat, whose right is
        checked. Returns the runbook, the ticket key and where the run goes."""
        from tocsin.catalogue import runbook_by_id, runbook_ids

        key = check_ticket(ticket, self.ticket_keys)
        if who is not None and not self.policy.chat_may_start(runbook_id, who, self.member_of):
            self.refused_start(who, runbook_id, key, "not allowed by access.start", via)
            raise InputError(refusal_for_chat(runbook_id, who))
        try:
            try:
                loaded = runbook_by_id(runbook_id, self.registry, self.settings)
            except InputError as missing:
                if who is None or self.policy.open:
                    raise
                # Only the runbooks this person may start: the catalogue is not for everyone.
                allowed = self.policy.chat_runbooks(
                    runbook_ids(self.registry, self.settings), who, self.member_of
                )
                close = difflib.get_close_matches(runbook_id, allowed, n=1)
                raise InputError(
                    missing.message,
                    f"did you mean {close[0]!r}? " * bool(close)
                    + f"runbooks you may start: {', '.join(allowed) or 'none'}",
                ) from None
            incident = Incident(
                ticket=key, title=title, url=url, requested_by=requested_by, requested_via=via
            )
            where = self.launcher.start(loaded, incident, inputs)
        except TocsinError as error:
            self.journal.record(
                key,
                "run.request_refused",
                actor=requested_by,
                runbook=runbook_id[:64],
                via=via,
                reason=error.message,
            )
            raise
        return loaded, key, where

    # -- runs asked for by a ticket --------------------------------------------------------

    def start_from_ticket(self, trigger: TicketTrigger) -> tuple[int, str]:
        """Start the runbook a ticket asks for: (HTTP status, message). 202: started; 200:
        nothing to start; 422: refused, and the reason is also written on the ticket."""
        if self.tickets is None:
            raise ConfigurationError("no ticket system is configured")
        tickets = self.tickets
        existing = (
            self.journal.find_run(trigger.ticket, trigger.runbook)
            if trigger.runbook and tickets.keys.matches(trigger.ticket)
            else None
        )
        if existing is not None and (existing.is_alive() or existing.status == RunStatus.SUCCEEDED):
            # A ticket system calls at each edit of the ticket: a run that is going on, or
            # went well, is left alone (a failed or stopped one is resumed).
            state = "is running" if existing.is_alive() else "already succeeded"
            return 200, f"{trigger.runbook} {state} for {trigger.ticket}; nothing started"
        try:
            if not trigger.runbook:
                # The ticket system's field for it (JiraTickets: setting jira.runbook_field).
                field_name = getattr(tickets, "runbook_field", "naming the runbook")
                raise InputError(
                    "the ticket names no runbook", f"fill the field {field_name} with a runbook id"
                )
            origin = TicketRequester(trigger.project, trigger.issue_type)
            if not self.policy.ticket_may_start(trigger.runbook, origin):
                reason = refusal_for_ticket(trigger.runbook, origin)
                self.journal.record(
                    GATEWAY_CHAIN,
                    "run.request_refused",
                    actor=trigger.requested_by[:64],
                    via=tickets.name,
                    runbook=trigger.runbook[:64],
                    ticket=trigger.ticket[:64],
                    reason=reason,
                )
                raise InputError(reason)
            loaded, key, where = self.start_run(
                trigger.runbook,
                trigger.ticket,
                dict(trigger.inputs),
                self.requester_of(trigger),
                tickets.name,
                title=trigger.title,
                url=trigger.url,
            )
        except TocsinError as error:
            text = f"Tocsin did not start a runbook: {error.message}"
            if error.hint:
                text += f"\n{error.hint}"
            self._comment(trigger.ticket, text)
            return 422, text
        return 202, (
            f"{loaded.runbook.title} ({loaded.id} v{loaded.runbook.version}) {where} for {key}"
        )

    def requester_of(self, trigger: TicketTrigger) -> str:
        """The ticket's author as a chat user id (found by e-mail), so that they cannot
        approve their own run; else ``<ticket system>:<name>``, which gates treat as unknown."""
        assert self.tickets is not None
        if trigger.requester_email and self.people is not None:
            user_id = self.people.user_with_email(trigger.requester_email)
            if user_id is not None:
                return user_id
        return f"{self.tickets.name}:{trigger.requested_by or 'unknown'}"[:128]

    def _comment(self, ticket: str, text: str) -> None:
        assert self.tickets is not None
        try:
            self.tickets.comment(ticket, text)
        except TocsinError as error:
            _log.warning("cannot comment on %s: %s", ticket, error.message)


def _claimed(route: InboundRoute, body: bytes) -> dict[str, str]:
    """What a refused request says it is (for the gateway's audit record only; not trusted)."""
    try:
        claimed = route.claims(body)
    except (RequestRefused, ValueError):
        claimed = {}  # nothing readable: the record says what was refused and why
    return {key: claim_text(value) for key, value in claimed.items() if value not in (None, "")}


__all__ = ["BACKGROUND_THREADS", "JOURNAL_THREADS", "Click", "Gateway", "Judged", "claim_text"]
