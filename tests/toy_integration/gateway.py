"""The toy's route on ``tocsin gateway``: a bell pressed asks Tocsin to run a runbook.

``POST /toy/pressed`` with ``X-Toy-Token`` (the ``toy_token`` secret) and a JSON body
``{"runbook": ..., "ticket": ...}``: checked, then handed to the gateway's core.
"""

from __future__ import annotations

import hmac
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.toy_integration import TOKEN_SECRET
from tocsin.errors import TocsinError
from tocsin.gateway import Gateway, RequestRefused
from tocsin.gateway.reading import parse_json
from tocsin.integration import GatewayPart, InboundRoute


def _claimed(body: bytes) -> dict[str, Any]:
    document = parse_json(body, "the body")
    return {"ticket": document.get("ticket")} if isinstance(document, dict) else {}


def gateway_part(gateway: Gateway) -> GatewayPart:
    token = gateway.secrets.get(TOKEN_SECRET) or ""

    async def pressed(request: Request) -> Response:
        body = await gateway.read_body(request)
        given = request.headers.get("x-toy-token", "")
        if not token or not hmac.compare_digest(given.encode(), token.encode()):
            raise RequestRefused(401, "the bell's token is wrong")
        document = parse_json(body, "the body")
        if not isinstance(document, dict):
            raise RequestRefused(400, "malformed bell press: the body is not an object")
        runbook, ticket = document.get("runbook"), document.get("ticket")
        if not isinstance(runbook, str) or not isinstance(ticket, str):
            raise RequestRefused(400, "malformed bell press: no runbook or ticket")
        try:
            loaded, key, where = await run_in_threadpool(
                gateway.start_run, runbook, ticket, {}, "toy:bell", "toy"
            )
        except TocsinError as error:
            return JSONResponse({"ok": False, "error": error.message}, status_code=422)
        return JSONResponse({"ok": True, "message": f"{loaded.id} {where} for {key}"}, 202)

    return GatewayPart(routes=(InboundRoute("/toy/pressed", pressed, "Toy bell", _claimed),))
