"""The gateway (``tocsin gateway``): how Slack and the ticket tool reach running runbooks.

A small ASGI application (Starlette, served by uvicorn) whose routes come from the
installed integrations (``Integration.gateway``), plus ``GET /healthz``. Each route reads,
verifies, then hands off:

- ``reading``: every body read only up to ``gateway.max_body_bytes`` (413 past it, before
  it is read); forms and JSON read strictly; ``RequestRefused``, the refusal and its status;
- the integration's route checks the request is the service's (Slack's signature, in
  ``integrations/slack/gateway_routes.py``; Jira's shared secret, the event's age and
  replays, in ``integrations/jira/webhook.py``) and reads it; 401 when the check fails,
  400 when it is malformed;
- ``app``: the core they hand off to (``Gateway``): queueing a click (committed in the
  journal's click queue before the service gets its answer, so an acknowledged click is
  never lost, and the answer waits on nothing else), judging it (decision and audit
  record in one transaction), starting a run (``access.start``), an incident's status;
  who is in a user group is asked of the chat integration;
- ``click_judge``: each gateway process's judge, claiming queued clicks from the journal
  (any gateway takes any click; a dead gateway's claims lapse), and waking flows, once
  per run at a time;
- ``refusals``: every refusal audited in the gateway's own chain (``GATEWAY``), never in an
  incident's: what an unauthenticated request claims is kept short and printable, and past
  ``gateway.refusals_audited_per_minute`` refusals from one address a minute, the rest are
  counted in one summary record. An unexpected error is answered 500 without detail, and
  audited there too;
- ``launcher``: runs started on a deployment, or in this process;
- ``server``: uvicorn with the gateway's limits, and ``GatewayServer`` in a thread.
"""

from __future__ import annotations

from tocsin.gateway.app import Click, Gateway, Judged
from tocsin.gateway.launcher import RunLauncher
from tocsin.gateway.reading import MAX_CLAIM_CHARS, RequestRefused, claim_text
from tocsin.gateway.refusals import RefusalAudit
from tocsin.gateway.server import GatewayServer, server_config
from tocsin.incident import GATEWAY_CHAIN

__all__ = [
    "GATEWAY_CHAIN",
    "MAX_CLAIM_CHARS",
    "Click",
    "Gateway",
    "GatewayServer",
    "Judged",
    "RefusalAudit",
    "RequestRefused",
    "RunLauncher",
    "claim_text",
    "server_config",
]
