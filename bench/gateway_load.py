"""200 Slack clicks per second against the gateway for 10 s: none lost, none applied twice,
p95 acknowledgement under 100 ms.

The gateway runs in its own process (uvicorn on loopback, SQLite journal in a temporary
folder, a fake Slack for the private refusals); this process sends clicks at a fixed
rate whatever the answers' speed (an open loop, as Slack does), each signed as Slack signs:

- valid: an approver of an open gate clicks Approve (each (gate, person) pair once);
- duplicate: the same pair again, at least half a second after the first;
- forged: a click signed with the wrong secret (must get 401).

Gates are opened directly in the journal (20 incidents, one gate each, 60 approvers,
quorum 60), so the figures are the gateway's own: signature check, judging, journalling
the decision with its audit record, the answer. Afterwards the decisions are applied with
the flow's own function (``tocsin.gates.apply_decisions``: judged again, claimed at most
once) and checked: every valid click recorded and applied exactly once, every duplicate
refused, every forged click refused and audited, every audit chain intact.

Usage: .venv/bin/python bench/gateway_load.py [RATE] [SECONDS] [JOURNAL_URL]
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

INCIDENTS = 20
APPROVERS = 60
SECRET = "bench-signing-secret"
P95_TARGET_MS = 100.0


def ticket(n: int) -> str:
    return f"LOAD-{n}"


def approver(n: int) -> str:
    return f"U0LOAD{n:03d}"


def open_gates(journal_url: str, key_path: Path) -> dict[str, int]:
    """One run waiting at gate ``approve`` per incident; returns ticket -> run id."""
    from tocsin.audit import AuditKey
    from tocsin.gates import WaitRequest, gate_hash
    from tocsin.journal import Journal, now

    key = AuditKey.generate(key_path)
    journal = Journal(journal_url, audit_key=key)
    runs: dict[str, int] = {}
    for n in range(INCIDENTS):
        run, _ = journal.open_run(
            incident=ticket(n),
            runbook_id="load",
            runbook_version="1",
            runbook_digest="0" * 64,
            inputs={},
            requested_by="U0REQUESTER",
            requested_via="bench",
        )
        request = WaitRequest(
            kind="approval",
            prompt="Cut the office off?",
            deadline=(now().replace(year=now().year + 1)).isoformat(),
            requester="U0REQUESTER",
            gate_hash=gate_hash("0" * 64, "approve", {}),
            approvers=[approver(i) for i in range(APPROVERS)],
            group="leads",
            quorum=APPROVERS,
        )
        journal.set_step(
            run.id, "approve", status="waiting", request=request.as_data(), waiting_since=now()
        )
        journal.set_run(run.id, status="waiting")
        journal.record(ticket(n), "approval.requested", run_id=run.id, step_id="approve")
        runs[ticket(n)] = run.id
    journal.close()
    return runs


def serve(journal_url: str, key_path: str, slack_url: str, port_queue: Any) -> None:
    """The gateway process."""
    os.environ["TOCSIN_JOURNAL_URL"] = journal_url
    os.environ["TOCSIN_AUDIT__KEY_PATH"] = key_path
    os.environ["TOCSIN_SLACK__API_URL"] = slack_url
    os.environ["TOCSIN_SECRET_SLACK_SIGNING_SECRET"] = SECRET
    os.environ["TOCSIN_SECRET_SLACK_BOT_TOKEN"] = "xoxb-tocsin-sandbox"
    # Every forged click audited one by one (the worst case for the journal), not summarised.
    os.environ["TOCSIN_GATEWAY__REFUSALS_AUDITED_PER_MINUTE"] = "1000000"
    from tocsin.gateway import Gateway, GatewayServer
    from tocsin.settings import load_settings

    gateway = Gateway(load_settings())
    server = GatewayServer(gateway.app).start()
    port_queue.put(server.port)
    while True:
        time.sleep(3600)


def fake_slack(url_queue: Any) -> None:
    """Slack, in its own process: the gateway tells refused clickers privately through it."""
    from tocsin.integrations.slack.fake import FakeSlack

    slack = FakeSlack().start()
    url_queue.put(slack.url)
    while True:
        time.sleep(3600)


def click_body(ticket_key: str, run_id: int, user: str, gate: str) -> bytes:
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": "T0SANDBOX"},
        "team": {"id": "T0SANDBOX", "domain": "tocsin-sandbox"},
        "channel": {"id": "C0INCIDENTS", "name": "support-incidents"},
        "container": {
            "type": "message",
            "message_ts": "1700000000.000100",
            "channel_id": "C0INCIDENTS",
        },
        "actions": [
            {
                "action_id": "tocsin_approve",
                "block_id": "gate:approve",
                "type": "button",
                "value": json.dumps(
                    {"ticket": ticket_key, "run": run_id, "step": "approve", "hash": gate[:16]}
                ),
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


class RawClient:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams, so that the load generator
    spends its CPU sending clicks, not in a client library (it shares the machine)."""

    def __init__(self, host: str, port: int, connections: int) -> None:
        self.host, self.port = host, port
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self.connections = connections

    async def open(self) -> None:
        for _ in range(self.connections):
            self.idle.put_nowait(await asyncio.open_connection(self.host, self.port))

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        reader, writer = await self.idle.get()
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode()
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


async def fire(
    rate: int, seconds: int, port: int, runs: dict[str, int], gate: str
) -> list[tuple[str, tuple[str, str], int, float]]:
    """Send the clicks; (kind, (ticket, user), status, ms) for each."""
    from tocsin.integrations.slack.simulated_user import sign_slack_request

    rng = random.Random(7)
    pairs = [(ticket(n), approver(i)) for n in range(INCIDENTS) for i in range(APPROVERS)]
    rng.shuffle(pairs)
    total = rate * seconds
    plan: list[tuple[str, tuple[str, str]]] = []
    sent_valid: list[tuple[int, tuple[str, str]]] = []
    for index in range(total):
        roll = rng.random()
        old_enough = [p for i, p in sent_valid if index - i >= rate // 2]
        if roll < 0.25 and old_enough:
            plan.append(("duplicate", rng.choice(old_enough)))
        elif roll < 0.5:
            plan.append(("forged", pairs[index % len(pairs)]))
        else:
            pair = pairs.pop()
            plan.append(("valid", pair))
            sent_valid.append((index, pair))
    bodies = [click_body(pair[0], runs[pair[0]], pair[1], gate) for _, pair in plan]
    results: list[tuple[str, tuple[str, str], int, float]] = []
    client = RawClient("127.0.0.1", port, connections=128)
    await client.open()

    async def one(kind: str, pair: tuple[str, str], body: bytes) -> None:
        secret = SECRET if kind != "forged" else "not-the-secret"
        headers = {
            **sign_slack_request(secret, body),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        started = time.perf_counter()
        status = await client.post("/slack/interactions", body, headers)
        results.append((kind, pair, status, (time.perf_counter() - started) * 1000))

    tasks = []
    begin = time.perf_counter()
    for index, ((kind, pair), body) in enumerate(zip(plan, bodies, strict=True)):
        delay = begin + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(kind, pair, body)))
    await asyncio.gather(*tasks)
    await client.close()
    return results


def apply_like_the_flow(journal: Any, runs: dict[str, int]) -> None:
    """Apply the pending decisions with the flow's own function, each claimed once."""
    from tocsin.gates import Applied, WaitRequest, apply_decisions
    from tocsin.statuses import DecisionStatus

    for run_id in runs.values():
        record = journal.step(run_id, "approve")
        request = WaitRequest.from_data(record.request)
        applied = [
            d.actor
            for d in journal.decisions_of(run_id, "approve")
            if d.status == DecisionStatus.APPLIED
            and d.kind == "approve"
            and d.gate_hash in (None, request.gate_hash)
        ]
        changes = apply_decisions(
            journal.pending_decisions(run_id),
            {"approve": request},
            {"approve": record.status},
            {"approve": applied},
        )
        for change in changes:
            if isinstance(change, Applied):
                journal.settle_decision(change.decision.id, DecisionStatus.APPLIED)
            else:
                journal.settle_decision(change.decision.id, DecisionStatus.REFUSED, change.reason)


def main() -> int:
    rate = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    from tocsin.audit import AuditKey
    from tocsin.gates import gate_hash
    from tocsin.gateway import GATEWAY_CHAIN
    from tocsin.journal import Journal

    folder = Path(tempfile.mkdtemp(prefix="tocsin-gateway-load-"))
    journal_url = sys.argv[3] if len(sys.argv) > 3 else f"sqlite:///{folder / 'journal.db'}"
    key_path = folder / "signing.key"
    runs = open_gates(journal_url, key_path)
    gate = gate_hash("0" * 64, "approve", {})
    spawn = multiprocessing.get_context("spawn")
    urls: Any = spawn.Queue()
    slack = spawn.Process(target=fake_slack, args=(urls,), daemon=True)
    slack.start()
    slack_url = urls.get(timeout=60)
    ports: Any = spawn.Queue()
    process = spawn.Process(
        target=serve, args=(journal_url, str(key_path), f"{slack_url}/api/", ports), daemon=True
    )
    process.start()
    try:
        port = ports.get(timeout=60)
        print(f"gateway in process {process.pid} on port {port}; {rate} clicks/s for {seconds} s")
        results = asyncio.run(fire(rate, seconds, port, runs, gate))
        time.sleep(3)  # let background refusals reach Slack
    finally:
        process.terminate()
        process.join(10)
        slack.terminate()
        slack.join(10)

    journal = Journal(journal_url, audit_key=AuditKey.load(key_path))
    apply_like_the_flow(journal, runs)
    latencies = sorted(ms for *_, ms in results)
    p50 = statistics.median(latencies)
    p95 = latencies[int(len(latencies) * 0.95) - 1]
    by_kind: dict[str, list[int]] = {}
    for kind, _, status, _ in results:
        by_kind.setdefault(kind, []).append(status)
    print(f"sent {len(results)}: " + ", ".join(f"{k} {len(v)}" for k, v in sorted(by_kind.items())))
    print(
        f"ack latency: p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {latencies[-1]:.1f} ms (goal p95 < {P95_TARGET_MS:.0f} ms)"
    )

    problems: list[str] = []
    wrong = [(k, s) for k, _, s, _ in results if s != (401 if k == "forged" else 200)]
    if wrong:
        problems.append(f"{len(wrong)} unexpected status codes, e.g. {wrong[:3]}")
    valid = {pair for kind, pair, _, _ in results if kind == "valid"}
    duplicates = sum(1 for kind, *_ in results if kind == "duplicate")
    forged = sum(1 for kind, *_ in results if kind == "forged")
    applied: dict[tuple[str, str], int] = {}
    refused = 0
    run_ticket = {run_id: key for key, run_id in runs.items()}
    for run_id in runs.values():
        for decision in journal.decisions_of(run_id):
            if decision.status == "applied":
                pair = (run_ticket[run_id], decision.actor)
                applied[pair] = applied.get(pair, 0) + 1
            elif decision.status == "refused":
                refused += 1
            else:
                problems.append(f"decision {decision.id} left {decision.status}")
    lost = valid - set(applied)
    twice = [pair for pair, times in applied.items() if times > 1]
    audited_forged = sum(  # in the gateway's own chain, never the incidents'
        1
        for event in journal.events_of(GATEWAY_CHAIN)
        if event["kind"] == "gateway.request_refused"
    )
    broken = [
        ticket(n)
        for n in range(INCIDENTS)
        if not journal.verify(ticket(n), AuditKey.load(key_path).public_key).ok
    ]
    print(
        f"valid clicks {len(valid)}: applied {len(applied)}, lost {len(lost)}, applied twice {len(twice)}; "
        f"duplicates {duplicates}: refused {refused}; forged {forged}: audited {audited_forged}; "
        f"audit chains intact {INCIDENTS - len(broken)} of {INCIDENTS}"
    )
    if lost:
        problems.append(f"{len(lost)} valid clicks lost")
    if twice:
        problems.append(f"{len(twice)} applied twice")
    if refused != duplicates:
        problems.append(f"{duplicates} duplicates but {refused} refusals")
    if audited_forged != forged:
        problems.append(f"{forged} forged clicks but {audited_forged} audit records")
    if broken:
        problems.append(f"audit chain broken: {broken}")
    if p95 >= P95_TARGET_MS:
        problems.append(f"p95 {p95:.1f} ms over {P95_TARGET_MS:.0f} ms")
    journal.close()
    print("OK" if not problems else "PROBLEMS: " + "; ".join(problems))
    return 0 if not problems else 1


if __name__ == "__main__":
    raise SystemExit(main())
