"""The gateway (`tocsin gateway`): how Slack and the ticket tool reach running runbooks.

A small ASGI application (Starlette, served by uvicorn):

- ``POST /slack/interactions``: Approve / Reject clicks on gate messages (``block_actions``);
- ``POST /slack/commands``: ``/tocsin run <runbook> <ticket> name=value...``, ``/tocsin status <ticket>``;
- ``POST /webhooks/jira``: a Jira webhook starting the runbook named in a ticket field;
- ``GET /healthz``.

Each route reads, verifies, then hands off. Every request body is read only up to
``gateway.max_body_bytes`` (a larger one is answered 413 before it is read). Every Slack
request's signature is checked by the Slack integration (``SlackInbound.check``: v0
HMAC-SHA256 with the app's signing secret, timestamp within 5 minutes, the same signed
request never twice), which also says who is in a user group; Jira's by the ticket system
(``TicketSystem.verify_webhook``: the shared secret, ``X-Hub-Signature``), its body's timestamp within
``gateway.jira_event_max_age_seconds`` and the same signed body never twice (remembered
in the journal). A request that fails the check is answered 401; a malformed one 400.
Every refusal is audited in the gateway's own chain (``GATEWAY``), never in an incident's:
what an unauthenticated request claims is kept short and printable, and past
``gateway.refusals_audited_per_minute`` refusals from one address a minute, the rest are
counted in one summary record. An unexpected error is answered 500 without detail, and
audited there too.

A click is judged, then journalled (decision and audit record in one transaction)
before Slack gets its answer, so an acknowledged click is never lost; resuming the paused
Prefect flow happens after the answer, in the background, well within Slack's 3 seconds.
The flow applies decisions at most once and updates the gate message (``chat.update``).
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import json
import logging
import re
import string
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tocsin.access import (
    SlackRequester,
    StartPolicy,
    TicketRequester,
    refusal_for_slack,
    refusal_for_ticket,
)
from tocsin.actions import ActionRegistry
from tocsin.decisions import DecisionRefused, deliver_decision, submit
from tocsin.errors import ConfigurationError, InputError, TocsinError
from tocsin.gates import WaitRequest
from tocsin.incident import GATEWAY_CHAIN, Incident, check_ticket
from tocsin.inputs import parse_assignments, resolve_inputs
from tocsin.integrations.slack.client import slack_text
from tocsin.integrations.slack.inbound import SlackInbound
from tocsin.integrations.slack.incident_thread import APPROVE_ACTION, REJECT_ACTION
from tocsin.journal import Journal
from tocsin.launch import flow_run_request
from tocsin.settings import (
    EnvironmentSecrets,
    GatewaySettings,
    SecretStore,
    Settings,
    configured,
)
from tocsin.tickets import SAFE_KEY, TicketSystem, TicketTrigger
from tocsin.validation import LoadedRunbook

_log = logging.getLogger("tocsin.gateway")
_T = TypeVar("_T")

JOURNAL_THREADS = 4
BACKGROUND_THREADS = 8
"""Threads resuming flows and answering refused clicks, after Slack got its acknowledgement."""
MAX_CLAIM_CHARS = 64
"""What an unauthenticated request claims (user, ticket, step) is cut to this many characters."""
CLAIM_CHARACTERS = frozenset(string.ascii_letters + string.digits + " -_.:/=#@+,")
MAX_REASON_CHARS = 300
MAX_REFUSAL_WINDOWS = 1000
"""Addresses whose refusals are counted separately; past that, together."""
MAX_FORM_FIELDS = 64
MAX_BUTTON_VALUE = 512
MAX_HEADER_BYTES = 16 * 1024
"""Request line and headers, at most (uvicorn's h11 parser refuses more with 400)."""
JIRA_CLOCK_SKEW_SECONDS = 300
"""A Jira event may be dated this much in the future (the two clocks differ a little)."""
STEP_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
GATE_HASH_PATTERN = re.compile(r"^[0-9a-f]{8,64}$")
SLACK_USER_PATTERN = re.compile(r"^[UW][A-Z0-9]{2,31}$")
SLACK_CHANNEL_PATTERN = re.compile(r"^[A-Z0-9]{2,32}$")
USAGE = (
    "Usage:\n"
    "• `/tocsin run <runbook> <ticket> name=value ...` — start a runbook for an incident\n"
    "• `/tocsin status <ticket>` — what its runs do and wait for\n"
    "Runbooks and their inputs: `tocsin list` on a support machine."
)


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
    """The click a payload carries; None when it is not a click on a Tocsin gate button.

    ``RequestRefused`` (400) when it is a click on one, or a ``block_actions`` payload, that
    is not shaped as Slack sends them (what a hand-made request would get wrong).
    """
    if payload.get("type") != "block_actions":
        return None
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions:
        raise _malformed("block_actions without a list of actions")
    action = actions[0]
    if not isinstance(action, dict) or not isinstance(action.get("action_id"), str):
        raise _malformed("an action without an action_id")
    kind = {APPROVE_ACTION: "approve", REJECT_ACTION: "reject"}.get(action["action_id"])
    if kind is None:
        return None  # another app's button, or one of ours Tocsin does not answer
    value = action.get("value")
    if not isinstance(value, str) or len(value) > MAX_BUTTON_VALUE:
        raise _malformed("a gate button without its value")
    gate = _parse_json(value, "the gate button's value")
    if not isinstance(gate, dict):
        raise _malformed("the gate button's value is not an object")
    ticket, run, step, gate_hash = (gate.get(k) for k in ("ticket", "run", "step", "hash"))
    if not isinstance(ticket, str) or not SAFE_KEY.fullmatch(ticket):
        raise _malformed("the gate button names no ticket key")
    if type(run) is not int or not 0 < run < 2**63:
        raise _malformed("the gate button names no run number")
    if not isinstance(step, str) or not STEP_ID_PATTERN.match(step):
        raise _malformed("the gate button names no step id")
    if not isinstance(gate_hash, str) or not GATE_HASH_PATTERN.match(gate_hash):
        raise _malformed("the gate button carries no gate hash")
    user = payload.get("user")
    user_id = user.get("id") if isinstance(user, dict) else None
    if not isinstance(user_id, str) or not SLACK_USER_PATTERN.match(user_id):
        raise _malformed("no Slack user id in user.id")
    return Click(
        user=user_id,
        kind=kind,
        ticket=ticket,
        run_id=run,
        step_id=step,
        gate_hash=gate_hash,
        channel=_channel_of(payload),
    )


def _channel_of(payload: Mapping[str, Any]) -> str:
    """The channel a click came from ("" when the payload does not say)."""
    channel = payload.get("channel")
    container = payload.get("container")
    for found in (
        channel.get("id") if isinstance(channel, dict) else None,
        container.get("channel_id") if isinstance(container, dict) else None,
    ):
        if isinstance(found, str) and SLACK_CHANNEL_PATTERN.match(found):
            return found
    return ""


class RequestRefused(TocsinError):
    """A request the gateway answers with ``status`` and ``message`` (and audits)."""

    def __init__(self, status: int, message: str, hint: str = "") -> None:
        super().__init__(message, hint)
        self.status = status


def _malformed(what: str) -> RequestRefused:
    return RequestRefused(400, f"malformed Slack interaction: {what}")


def _parse_json(text: str | bytes, what: str) -> Any:
    """``text`` as JSON; ``RequestRefused`` (400) when it is not, or nests too deep to read."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: thousands of [ or {
        problem = "nested too deep" if isinstance(exc, RecursionError) else "not JSON"
        raise RequestRefused(400, f"malformed request: {what} is {problem}") from None


def _form(body: bytes) -> dict[str, str]:
    """A form-encoded body's fields (the last value of a repeated one); 400 when it is not
    UTF-8 or has too many fields."""
    try:
        pairs = parse_qsl(body.decode("utf-8"), errors="strict", max_num_fields=MAX_FORM_FIELDS)
    except ValueError as exc:  # UnicodeDecodeError is one
        problem = "is not UTF-8" if isinstance(exc, UnicodeDecodeError) else "has too many fields"
        raise RequestRefused(400, f"malformed request: the form {problem}") from None
    return dict(pairs)


def claim_text(value: object) -> str:
    """What an unauthenticated request says, made harmless to record and to show: at most
    ``MAX_CLAIM_CHARS`` characters, each outside a small printable set replaced by ``?``
    (no markup, no control characters), and ``...`` when it was cut."""
    if isinstance(value, bool) or value is None:
        text = str(value).lower()
    elif isinstance(value, str):
        text = value
    elif isinstance(value, (int, float)):
        text = f"{value:.6g}" if isinstance(value, float) or abs(value) > 10**18 else str(value)
    else:
        text = f"<{type(value).__name__}>"
    shown = "".join(c if c in CLAIM_CHARACTERS else "?" for c in text[:MAX_CLAIM_CHARS])
    return shown + ("..." if len(text) > MAX_CLAIM_CHARS else "")


def _claimed(source: str, body: bytes) -> dict[str, str]:
    """What a refused request says it is (for the gateway's audit record only; not trusted)."""
    claimed: dict[str, Any] = {}
    try:
        if source == "jira":
            document = _parse_json(body, "the body")
            issue = document.get("issue") if isinstance(document, dict) else None
            claimed = {"ticket": issue.get("key") if isinstance(issue, dict) else None}
        else:
            fields = dict(parse_qsl(body.decode("utf-8", "replace"), max_num_fields=100))
            if "payload" in fields:
                claimed = _claimed_click(_parse_json(fields["payload"], "the payload"))
            elif "command" in fields:
                claimed = {
                    "user": fields.get("user_id"),
                    "command": f"{fields.get('command', '')} {fields.get('text', '')}",
                }
    except (RequestRefused, ValueError):
        pass  # nothing readable: the record says what was refused and why, not what it claimed
    return {key: claim_text(value) for key, value in claimed.items() if value not in (None, "")}


def _claimed_click(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        return {}
    user = payload.get("user")
    actions = payload.get("actions")
    action = actions[0] if isinstance(actions, list) and actions else None
    action = action if isinstance(action, dict) else {}
    action_id = action.get("action_id")
    value = action.get("value")
    gate = _parse_json(value, "the value") if isinstance(value, str) else None
    gate = gate if isinstance(gate, dict) else {}
    return {
        "user": user.get("id") if isinstance(user, dict) else None,
        "decision": {APPROVE_ACTION: "approve", REJECT_ACTION: "reject"}.get(action_id)
        if isinstance(action_id, str)
        else None,
        "ticket": gate.get("ticket"),
        "step_id": gate.get("step"),
    }


@dataclass
class _RefusalWindow:
    """Refusals from one address in the current minute."""

    started: float
    audited: int = 0
    counted: int = 0
    first_counted_at: str = ""
    reasons: Counter[str] = field(default_factory=Counter)


class RefusalAudit:
    """Audits requests refused at the door, in the gateway's own chain (``GATEWAY``).

    Up to ``per_minute`` refusals from one address each minute are recorded one by one
    (``gateway.request_refused``); the rest of that minute are only counted, and one
    ``gateway.refusals_summarised`` record says how many there were and why, when the minute
    is over. So a flood of forged requests costs the journal a few writes a minute, and the
    chain stays readable.
    """

    def __init__(
        self,
        journal: Journal,
        per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        window_seconds: float = 60.0,
    ) -> None:
        self.journal = journal
        self.per_minute = per_minute
        self.clock = clock
        self.window_seconds = window_seconds
        self._windows: dict[str, _RefusalWindow] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    def refused(
        self,
        peer: str,
        kind: str,
        source: str,
        status: int,
        reason: str,
        claimed: Mapping[str, str],
    ) -> bool:
        """Audit one refusal (``kind``: the record's kind); False when it was only counted."""
        with self._lock:
            expired = self._expired(self.clock())
            if peer not in self._windows and len(self._windows) >= MAX_REFUSAL_WINDOWS:
                peer = "(many addresses)"  # thousands of addresses at once: count them together
            window = self._windows.setdefault(peer, _RefusalWindow(self.clock()))
            audit = window.audited < self.per_minute
            if audit:
                window.audited += 1
            else:
                if not window.counted:
                    window.first_counted_at = _utc_now()
                window.counted += 1
                window.reasons[f"{status} {reason.split(':')[0][:60]}"] += 1
        self._summarise(expired)
        if audit:
            self.journal.record(
                GATEWAY_CHAIN,
                kind,
                source=source,
                status=status,
                reason=reason[:MAX_REASON_CHARS],
                peer=peer,
                claimed=dict(claimed),
            )
        return audit

    def flush(self, everything: bool = False) -> None:
        """Write the summaries of the minutes that are over (``everything``: of all)."""
        with self._lock:
            expired = self._expired(float("inf") if everything else self.clock())
        self._summarise(expired)

    def start(self) -> None:
        """Summarise finished minutes in the background, even when no more refusals come."""

        def sweep() -> None:
            signed_at = self.clock()
            while not self._stop.wait(min(5.0, self.window_seconds / 4)):
                try:
                    self.flush()
                    if self.clock() - signed_at >= self.window_seconds:
                        # The chain's head is signed at most once a minute, when it grew.
                        self.journal.checkpoint(GATEWAY_CHAIN, "periodic")
                        signed_at = self.clock()
                except Exception:  # the journal is away for a moment: try again later
                    _log.exception("cannot write the summary of refused requests")

        self._sweeper = threading.Thread(target=sweep, name="gateway-refusals", daemon=True)
        self._sweeper.start()

    def close(self) -> None:
        """Write what is still counted and sign the chain's head (the gateway stops)."""
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout=10)
        self.flush(everything=True)
        self.journal.checkpoint(GATEWAY_CHAIN, "gateway_stopped")

    def _expired(self, moment: float) -> list[tuple[str, _RefusalWindow]]:
        """Take out the windows that are over (the caller holds the lock)."""
        over = [
            (peer, window)
            for peer, window in self._windows.items()
            if moment - window.started >= self.window_seconds
        ]
        for peer, _ in over:
            del self._windows[peer]
        return over

    def _summarise(self, expired: list[tuple[str, _RefusalWindow]]) -> None:
        for peer, window in expired:
            if window.counted:
                self.journal.record(
                    GATEWAY_CHAIN,
                    "gateway.refusals_summarised",
                    peer=peer,
                    count=window.counted,
                    reason=f"{window.counted} more requests refused and not audited one by one "
                    f"(over {self.per_minute} a minute from {peer})",
                    since=window.first_counted_at,
                    until=_utc_now(),
                    reasons=dict(window.reasons.most_common(10)),
                )


def _delivery_digests(body: bytes, delivery_id: str | None) -> list[str]:
    """What identifies a webhook delivery: its delivery id (if any), then its signed body."""
    digests = [hashlib.sha256(b"jira-body:" + body).hexdigest()]
    if delivery_id:
        by_id = hashlib.sha256(b"jira-delivery:" + delivery_id.encode("utf-8", "replace"))
        digests.insert(0, by_id.hexdigest())
    return digests


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class RunLauncher:
    """Starts runs asked for from Slack or a ticket: on a Prefect deployment (a worker runs
    them) when ``gateway.deployment`` is set, else in this process, one thread per run."""

    def __init__(
        self, settings: Settings, journal: Journal, secrets: SecretStore | None = None
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.secrets = secrets if secrets is not None else EnvironmentSecrets()
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
        from tocsin.launch import RunRequest, run_on_deployment

        request = flow_run_request(RunRequest(loaded, incident, inputs), self.journal)
        parameters, name, tags = request.parameters, request.name, request.tags
        if self.settings.gateway.deployment:
            run_on_deployment(request, self.settings.gateway.deployment)
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
            # The run uses the gateway's settings and secrets (the sandbox's, in the demo).
            with configured(self.settings, self.secrets), prefect_tags(*tags):
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
        secrets: SecretStore | None = None,
        journal: Journal | None = None,
        tickets: TicketSystem | None = None,
        registry: ActionRegistry | None = None,
        launcher: RunLauncher | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from tocsin.running import journal_for

        self.settings = settings
        self.secrets = secrets if secrets is not None else EnvironmentSecrets()
        self.journal = journal or journal_for(settings, signing=True)
        self.registry = registry or ActionRegistry.discover(settings.action_modules)
        self.launcher = launcher or RunLauncher(settings, self.journal, self.secrets)
        self.policy = StartPolicy(settings)
        self.tickets = tickets
        # Verifying Slack's requests and asking who is in a user group is the Slack
        # integration's; without its signing secret, the gateway refuses to start.
        self.slack = SlackInbound(settings, self.secrets, clock)
        _warm_up()
        # A few threads do the journalling: more would only queue on the database and
        # fight for the interpreter, and make every acknowledgement slower.
        self.journalling = ThreadPoolExecutor(
            max_workers=JOURNAL_THREADS, thread_name_prefix="gateway-journal"
        )
        self.background = ThreadPoolExecutor(
            max_workers=BACKGROUND_THREADS, thread_name_prefix="gateway-background"
        )
        self.clock = clock
        self.refusals = RefusalAudit(self.journal, settings.gateway.refusals_audited_per_minute)
        self.refusals.start()
        self.app = Starlette(
            routes=[
                Route("/healthz", self.healthz, methods=["GET"]),
                Route(
                    "/slack/interactions",
                    self._guarded("slack", self.slack_interactions),
                    methods=["POST"],
                ),
                Route(
                    "/slack/commands", self._guarded("slack", self.slack_commands), methods=["POST"]
                ),
                Route("/webhooks/jira", self._guarded("jira", self.jira_webhook), methods=["POST"]),
            ]
        )

    async def _journalling(self, function: Callable[..., _T], *args: Any) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.journalling, function, *args)

    def close(self) -> None:
        self.journalling.shutdown(wait=True, cancel_futures=False)
        self.background.shutdown(wait=True, cancel_futures=False)
        self.refusals.close()
        self.journal.close()

    def serve(self, host: str, port: int) -> None:
        """Serve the gateway with uvicorn until interrupted (``tocsin gateway``)."""
        import uvicorn

        uvicorn.Server(server_config(self.app, self.settings.gateway, host, port)).run()

    # -- common ---------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    def _guarded(
        self, source: str, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` answering every refusal with its status and one sentence, and anything
        unexpected with 500 and no detail; each audited in the gateway's chain."""

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestRefused as refused:
                await self._audit_refusal(request, source, refused.status, refused.message)
                body: dict[str, Any] = {"ok": False, "error": refused.message}
                if refused.hint:
                    body["hint"] = refused.hint
                return JSONResponse(body, status_code=refused.status)
            except Exception as exc:
                _log.exception("the gateway failed on %s %s", request.method, request.url.path)
                reason = f"internal error ({type(exc).__name__}); the gateway's log has the details"
                await self._audit_refusal(request, source, 500, reason, "gateway.request_failed")
                return JSONResponse(
                    {"ok": False, "error": "the gateway could not handle this request (logged)"},
                    status_code=500,
                )

        return guarded

    async def _audit_refusal(
        self,
        request: Request,
        source: str,
        status: int,
        reason: str,
        kind: str = "gateway.request_refused",
    ) -> None:
        body: bytes = getattr(request.state, "body", b"")
        peer = request.client.host if request.client else "unknown"
        try:
            await self._journalling(
                self.refusals.refused, peer, kind, source, status, reason, _claimed(source, body)
            )
        except Exception:  # the answer still goes out; the log says what could not be audited
            _log.exception("cannot audit a refused request from %s: %s", peer, reason)

    async def _body(self, request: Request) -> bytes:
        """The request's body, read only up to ``gateway.max_body_bytes`` (413 past it, before
        reading when Content-Length says so) and within ``gateway.body_timeout_seconds``."""
        limit = self.settings.gateway.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not re.fullmatch(r"[0-9]{1,19}", declared.strip()):
                raise RequestRefused(400, "malformed request: Content-Length is not a number")
            if int(declared) > limit:
                raise RequestRefused(
                    413,
                    f"request body too large: {int(declared)} bytes, the gateway reads at most "
                    f"{limit} (setting gateway.max_body_bytes); not read",
                )
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.settings.gateway.body_timeout_seconds):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise RequestRefused(
                            413,
                            f"request body too large: over {limit} bytes (setting "
                            "gateway.max_body_bytes); reading stopped there",
                        )
                    chunks.append(chunk)
        except TimeoutError:
            raise RequestRefused(
                408,
                f"request body not received within {self.settings.gateway.body_timeout_seconds:g} s",
            ) from None
        except ClientDisconnect:
            raise RequestRefused(
                400, "the client went away before sending its whole body"
            ) from None
        body = b"".join(chunks)
        request.state.body = body  # for the audit record, if the request is refused
        return body

    # -- Slack ----------------------------------------------------------------------------

    async def _slack_form(self, request: Request) -> dict[str, str]:
        """The fields of a request Slack signed; ``RequestRefused`` otherwise."""
        body = await self._body(request)
        headers = {name.lower(): value for name, value in request.headers.items()}
        refusal = self.slack.check.refusal(body, headers)
        if refusal is not None:
            raise RequestRefused(401, refusal)
        return _form(body)

    async def slack_interactions(self, request: Request) -> Response:
        form = await self._slack_form(request)
        if "payload" not in form:
            raise _malformed("no payload field")
        payload = _parse_json(form["payload"], "the interaction payload")
        if not isinstance(payload, dict):
            raise _malformed("the payload is not an object")
        click = click_from_payload(payload)
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
        if click.user in request.approvers:
            return []
        return [g for g in request.usergroups if self.slack.members.is_member(click.user, g)]

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
                actor_details=self.slack.people.details(click.user),
                deliver=False,
            )
        except DecisionRefused as refused:
            return False, refused.message, lambda: None
        run = outcome.run

        def delivery() -> None:
            if run is not None:
                # After Slack has its answer: wake the flow (retried for 2 s if it is between
                # two pauses) and free the thread. The flow applies or refuses the decision
                # and tells the person; it reads pending decisions before each pause anyway.
                deliver_decision(self.journal, run, outcome.decision, wait=False)

        return True, outcome.message, delivery

    def tell_clicker(self, click: Click, message: str) -> None:
        """Say privately to the clicker why the click did not count."""
        if not click.channel:
            return
        self.slack.tell(
            click.channel,
            click.user,
            f":no_entry_sign: Your {click.kind} of {click.step_id} was not counted: {message}",
        )

    async def slack_commands(self, request: Request) -> Response:
        form = await self._slack_form(request)
        if not SLACK_USER_PATTERN.match(form.get("user_id", "")):
            raise RequestRefused(400, "malformed slash command: no Slack user id in user_id")
        channel = form.get("channel_id", "")
        text = await run_in_threadpool(
            self.command,
            form.get("text", ""),
            form["user_id"],
            channel if SLACK_CHANNEL_PATTERN.match(channel) else "",
        )
        return JSONResponse({"response_type": "ephemeral", "text": text})

    def command(self, text: str, user: str, channel: str) -> str:
        """The answer to ``/tocsin <text>`` (shown only to the person who typed it)."""
        words = text.split()
        if not words or words[0] in ("help", "-h", "--help"):
            return USAGE
        who = SlackRequester(user, channel)
        try:
            if words[0] == "status" and len(words) == 2:
                from tocsin.status import status_lines

                ticket = check_ticket(words[1])
                if not self.may_see(ticket, who):
                    self.refused_start(who, "status", ticket, "not allowed to see this incident")
                    # The same answer as for an unknown ticket: a stranger learns nothing.
                    return f":warning: no incident {ticket} that you may see"
                lines = [slack_text(line) for line in status_lines(self.journal, ticket)]
                return "```\n" + "\n".join(lines)[:2900] + "\n```"
            if words[0] == "run" and len(words) >= 3:
                return self.start_run(
                    words[1], words[2], parse_assignments(words[3:]), user, "slack", who=who
                )
        except TocsinError as error:
            return f":warning: {error.message}" + (f"\n{error.hint}" if error.hint else "")
        return f":warning: I do not understand `{text[:100]}`.\n{USAGE}"

    def member_of(self, user: str, usergroup: str) -> bool:
        try:
            return self.slack.members.is_member(user, usergroup)
        except TocsinError:
            return False  # Slack cannot say: deny

    def may_see(self, ticket: str, who: SlackRequester) -> bool:
        """Whether this person may read the incident's status: they may start one of its
        runbooks, started one of its runs, or may decide one of its steps."""
        for run in self.journal.runs_of(ticket):
            if run.requested_by == who.user or self.policy.slack_may_start(
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

    def refused_start(self, who: SlackRequester, runbook: str, ticket: str, reason: str) -> None:
        """A signed request from someone not allowed: in the gateway's own chain, not the
        incident's (the ticket is only what they typed)."""
        self.journal.record(
            GATEWAY_CHAIN,
            "run.request_refused",
            actor=who.user[:64],
            via="slack",
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
        who: SlackRequester | None = None,
    ) -> str:
        """Start a runbook for a ticket; ``who``: the Slack person asking, whose right is checked."""
        from tocsin.catalogue import runbook_by_id, runbook_ids

        key = check_ticket(ticket)
        if who is not None and not self.policy.slack_may_start(runbook_id, who, self.member_of):
            self.refused_start(who, runbook_id, key, "not allowed by access.start")
            raise InputError(refusal_for_slack(runbook_id, who))
        try:
            try:
                loaded = runbook_by_id(runbook_id, self.registry, self.settings)
            except InputError as missing:
                if who is None or self.policy.open:
                    raise
                # Only the runbooks this person may start: the catalogue is not for everyone.
                allowed = self.policy.slack_runbooks(
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
        return (
            f":rocket: {loaded.runbook.title} (`{loaded.id}` v{loaded.runbook.version}) {where} "
            f"for {key}; progress and approvals follow in the incident thread."
        )

    # -- tickets --------------------------------------------------------------------------

    def jira_event_refusal(self, document: Mapping[str, Any]) -> str | None:
        """Why a signed Jira event is too old (or dated in the future) to act on; None: it is
        fresh. Its ``timestamp`` (milliseconds) is in the signed body."""
        stamp = document.get("timestamp")
        if isinstance(stamp, bool) or not isinstance(stamp, (int, float)) or not 0 < stamp < 1e15:
            return "malformed Jira webhook: no timestamp (milliseconds) in the body"
        age = self.clock() - stamp / 1000
        window = self.settings.gateway.jira_event_max_age_seconds
        if age > window:
            return (
                f"stale Jira event: sent {int(age)} s ago, more than {window:g} s "
                "(setting gateway.jira_event_max_age_seconds): a replay, or a delivery Jira "
                "kept retrying that long"
            )
        if age < -JIRA_CLOCK_SKEW_SECONDS:
            return (
                f"Jira event dated {int(-age)} s in the future: this machine's clock or "
                "Jira's is wrong"
            )
        return None

    def claim_jira_delivery(self, body: bytes, delivery_id: str | None) -> str | None:
        """Remember a Jira delivery (its signed body, and its delivery id) in the journal:
        ``"delivery"`` when that delivery was handled before (Jira retrying it), ``"body"``
        when the same signed body came before under another id (a replay), None: new."""
        digests = _delivery_digests(body, delivery_id)
        keep_for = timedelta(
            seconds=self.settings.gateway.jira_event_max_age_seconds + 2 * JIRA_CLOCK_SKEW_SECONDS
        )
        seen = self.journal.claim_delivery("jira", digests, keep_for=keep_for)
        if seen is None:
            return None
        return "body" if seen == digests[-1] else "delivery"

    def release_jira_delivery(self, body: bytes, delivery_id: str | None) -> None:
        """Forget a delivery the gateway failed to handle, so that Jira's retry is handled."""
        self.journal.release_delivery(_delivery_digests(body, delivery_id))

    async def jira_webhook(self, request: Request) -> Response:
        if self.tickets is None:
            return JSONResponse(
                {"ok": False, "error": "Jira is not configured (settings jira.url)"},
                status_code=404,
            )
        body = await self._body(request)
        headers = {name.lower(): value for name, value in request.headers.items()}
        if not self.tickets.verify_webhook(headers, body):
            raise RequestRefused(
                401, "bad or missing X-Hub-Signature: not signed with the shared webhook secret"
            )
        document = _parse_json(body, "the Jira webhook body")
        if not isinstance(document, dict):
            raise RequestRefused(400, "malformed Jira webhook: the body is not a JSON object")
        stale = self.jira_event_refusal(document)
        if stale is not None:
            raise RequestRefused(400 if stale.startswith("malformed") else 401, stale)
        delivery = headers.get("x-atlassian-webhook-identifier", "")[:200] or None
        try:
            trigger = self.tickets.parse_webhook(body, delivery_id=delivery)
        except InputError as error:
            raise RequestRefused(400, error.message, error.hint) from None
        if not self.tickets.keys.matches(trigger.ticket):
            raise RequestRefused(
                400,
                f"malformed Jira webhook: the issue key {claim_text(trigger.ticket)!r} "
                "is not a ticket key",
            )
        seen = await self._journalling(self.claim_jira_delivery, body, trigger.delivery_id)
        if seen == "delivery":  # Jira retrying a delivery it thinks failed: handled once
            return JSONResponse({"ok": True, "duplicate": True})
        if seen == "body":
            raise RequestRefused(
                401,
                "replayed Jira webhook: this signed body was already received, under another "
                "delivery id; nothing started",
            )
        try:
            status, message = await run_in_threadpool(self.start_from_ticket, trigger)
        except BaseException:
            await self._journalling(self.release_jira_delivery, body, trigger.delivery_id)
            raise
        return JSONResponse({"ok": status < 400, "message": message}, status_code=status)

    def start_from_ticket(self, trigger: TicketTrigger) -> tuple[int, str]:
        """Start the runbook a ticket asks for: (HTTP status, message). 202: started; 200:
        nothing to start; 422: refused, and the reason is also written on the ticket."""
        assert self.tickets is not None
        existing = (
            self.journal.find_run(trigger.ticket, trigger.runbook)
            if trigger.runbook and self.tickets.keys.matches(trigger.ticket)
            else None
        )
        if existing is not None and (existing.is_alive() or existing.status == "succeeded"):
            # Jira sends a webhook at each edit of the ticket: a run that is going on, or
            # went well, is left alone (a failed or stopped one is resumed).
            state = "is running" if existing.is_alive() else "already succeeded"
            return 200, f"{trigger.runbook} {state} for {trigger.ticket}; nothing started"
        try:
            if not trigger.runbook:
                # The ticket system's field for it (JiraTickets: setting jira.runbook_field).
                field_name = getattr(self.tickets, "runbook_field", "naming the runbook")
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
                    via=self.tickets.name,
                    runbook=trigger.runbook[:64],
                    ticket=trigger.ticket[:64],
                    reason=reason,
                )
                raise InputError(reason)
            message = self.start_run(
                trigger.runbook,
                trigger.ticket,
                dict(trigger.inputs),
                self.requester_of(trigger),
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

    def requester_of(self, trigger: TicketTrigger) -> str:
        """The ticket's author as a Slack user id (``users.lookupByEmail``), so that they cannot
        approve their own run; else ``jira:<name>``, which gates treat as unknown."""
        assert self.tickets is not None
        if trigger.requester_email:
            user_id = self.slack.user_with_email(trigger.requester_email)
            if user_id is not None:
                return user_id
        return f"{self.tickets.name}:{trigger.requested_by or 'unknown'}"[:128]

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
    "RefusalAudit",
    "RequestRefused",
    "RunLauncher",
    "claim_text",
    "click_from_payload",
    "server_config",
]


def server_config(app: Any, settings: GatewaySettings, host: str, port: int) -> Any:
    """uvicorn's configuration for the gateway, with its limits: the h11 parser (which,
    unlike httptools, bounds the request line and headers: ``MAX_HEADER_BYTES``), at most
    ``gateway.max_connections`` connections and requests at once (503 past that), idle
    connections closed after 5 s. Bodies are bounded by the application itself."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http="h11",
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=5,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
    )


class GatewayServer:
    """The gateway served by uvicorn in a background thread (the demo, tests, benchmarks)::

    with GatewayServer(gateway.app) as server:
        httpx.post(server.url + "/slack/interactions", ...)
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        settings: GatewaySettings | None = None,
    ) -> None:
        import socket

        import uvicorn

        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))
        self.host, self.port = self.socket.getsockname()[:2]
        config = server_config(app, settings or GatewaySettings(), self.host, self.port)
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
