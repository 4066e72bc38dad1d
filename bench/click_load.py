"""The clicks of the gateway benchmark (``gateway_load.py``): who clicks what, each body
built as Slack sends it (``SimulatedSlack.click_body``), and sending them open-loop, signed
(``SimulatedSlack.signed_headers``), on a minimal HTTP/1.1 client.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

INCIDENTS = 20
APPROVERS = 60
SECRET = "bench-signing-secret-0123456789ab"


def ticket(n: int) -> str:
    return f"LOAD-{n}"


def approver(n: int) -> str:
    return f"U0LOAD{n:03d}"


def stranger(n: int) -> str:
    return f"U0STRANGE{n:03d}"


@dataclass
class Click:
    kind: str  # valid, duplicate, stranger, forged
    ticket: str
    user: str
    body: bytes
    trigger: str
    sent_at: float = 0.0  # time.time()
    status: int = 0
    ack_ms: float = 0.0


def plan_clicks(rate: int, seconds: int, messages: dict[str, Any]) -> list[Click]:
    """The clicks to send, in order: their kinds mixed, each body as Slack would send it."""
    from tocsin.integrations.slack.simulated_user import SimulatedSlack

    rng = random.Random(7)
    pairs = [(ticket(n), approver(i)) for n in range(INCIDENTS) for i in range(APPROVERS)]
    rng.shuffle(pairs)
    sent: list[tuple[int, tuple[str, str]]] = []
    clicks: list[Click] = []
    with SimulatedSlack("http://unused", SECRET) as slack:  # the bodies only: signed when sent
        for index in range(rate * seconds):
            roll = rng.random()
            old_enough = [p for i, p in sent if index - i >= rate]  # at least a second later
            if roll < 0.2 and old_enough:
                kind, pair = "duplicate", rng.choice(old_enough)
            elif roll < 0.35:
                kind, pair = "stranger", (ticket(rng.randrange(INCIDENTS)), stranger(index % 500))
            elif roll < 0.5:
                kind = "forged"
                pair = (ticket(rng.randrange(INCIDENTS)), approver(index % APPROVERS))
            else:
                kind, pair = "valid", pairs.pop()
                sent.append((index, pair))
            body = slack.click_body(pair[1], messages[pair[0]], "tocsin_approve")
            trigger = json.loads(parse_qs(body.decode())["payload"][0])["trigger_id"]
            clicks.append(Click(kind, pair[0], pair[1], body, trigger))
    return clicks


class RawClient:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams, so that the load generator
    spends its CPU sending clicks, not in a client library (it shares the machine)."""

    def __init__(self, port: int, connections: int) -> None:
        self.port = port
        self.connections = connections
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )

    async def open(self) -> None:
        for _ in range(self.connections):
            self.idle.put_nowait(await asyncio.open_connection("127.0.0.1", self.port))

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        reader, writer = await self.idle.get()
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
            f"{head}\r\n".encode()
            + body
        )
        status_line = await reader.readline()
        length = 0
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        if length:
            await reader.readexactly(length)
        self.idle.put_nowait((reader, writer))
        return int(status_line.split()[1])

    async def close(self) -> None:
        while not self.idle.empty():
            _, writer = self.idle.get_nowait()
            writer.close()


async def fire(rate: int, clicks: list[Click], ports: list[int]) -> float:
    """Send the clicks open-loop, to each gateway in turn; the seconds it took."""
    from tocsin.integrations.slack.simulated_user import SimulatedSlack

    clients = [RawClient(port, connections=100) for port in ports]
    for client in clients:
        await client.open()
    slack = SimulatedSlack("http://unused", SECRET)  # signs; the RawClients send

    async def one(click: Click, client: RawClient) -> None:
        secret = SECRET if click.kind != "forged" else "not-the-signing-secret"
        headers = slack.signed_headers(click.body, secret)
        click.sent_at = time.time()
        started = time.perf_counter()
        click.status = await client.post("/slack/interactions", click.body, headers)
        click.ack_ms = (time.perf_counter() - started) * 1000

    tasks = []
    begin = time.perf_counter()
    for index, click in enumerate(clicks):
        delay = begin + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(click, clients[index % len(clients)])))
    await asyncio.gather(*tasks)
    took = time.perf_counter() - begin
    for client in clients:
        await client.close()
    slack.close()
    return took
