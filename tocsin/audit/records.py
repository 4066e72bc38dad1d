"""The audit record and the chain hash that links each record of an incident to the one before."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tocsin.audit.canonical import canonical_json, parse_timestamp, timestamp

GENESIS = "0" * 64
"""The ``prev_hash`` of an incident's first record."""
FINISHED_KIND = "run.finished"


@dataclass(frozen=True)
class AuditRecord:
    """One event of an incident, chained to the one before it."""

    incident: str
    seq: int
    at: datetime
    kind: str
    run_id: int | None
    step_id: str | None
    actor: str | None
    data: dict[str, Any]
    prev_hash: str
    hash: str

    def body(self) -> dict[str, Any]:
        """The fields the hash covers (everything but the hash itself)."""
        return record_body(
            incident=self.incident,
            seq=self.seq,
            at=self.at,
            kind=self.kind,
            run_id=self.run_id,
            step_id=self.step_id,
            actor=self.actor,
            data=self.data,
            prev_hash=self.prev_hash,
        )

    def computed_hash(self) -> str:
        return hashlib.sha256(canonical_json(self.body())).hexdigest()

    def export(self) -> dict[str, Any]:
        return {"type": "record", **self.body(), "hash": self.hash}

    @classmethod
    def from_export(cls, line: Mapping[str, Any]) -> AuditRecord:
        return cls(
            incident=str(line["incident"]),
            seq=int(line["seq"]),
            at=parse_timestamp(str(line["at"])),
            kind=str(line["kind"]),
            run_id=line.get("run_id"),
            step_id=line.get("step_id"),
            actor=line.get("actor"),
            data=dict(line.get("data") or {}),
            prev_hash=str(line["prev_hash"]),
            hash=str(line["hash"]),
        )

    def describe(self) -> str:
        """How a person finds the record: ``record 17 (step.succeeded revoke_sessions, 09:19:56Z)``."""
        what = f"{self.kind} {self.step_id}" if self.step_id else self.kind
        return f"record {self.seq} ({what}, {timestamp(self.at)})"


def record_body(
    *,
    incident: str,
    seq: int,
    at: datetime,
    kind: str,
    run_id: int | None,
    step_id: str | None,
    actor: str | None,
    data: Mapping[str, Any],
    prev_hash: str,
) -> dict[str, Any]:
    return {
        "incident": incident,
        "seq": seq,
        "at": timestamp(at),
        "kind": kind,
        "run_id": run_id,
        "step_id": step_id,
        "actor": actor,
        "data": dict(data),
        "prev_hash": prev_hash,
    }


def chain_hash(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(body)).hexdigest()
