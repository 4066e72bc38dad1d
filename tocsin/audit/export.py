"""An incident's trail as JSON Lines (format ``tocsin-audit/1``), written and read back."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from tocsin.audit.canonical import timestamp
from tocsin.audit.records import AuditRecord
from tocsin.audit.signing import Checkpoint
from tocsin.errors import InputError

EXPORT_FORMAT = "tocsin-audit/1"
EXPORT_REASON = "export"
"""The reason of the checkpoint ``tocsin audit export`` signs over an export's last record."""


def export_lines(
    incident: str,
    records: Iterable[AuditRecord],
    checkpoints: Iterable[Checkpoint],
    *,
    exported_at: datetime,
) -> Iterator[dict[str, Any]]:
    """The JSON Lines of an export: a header, then records, each checkpoint after its record."""
    by_seq: dict[int, list[Checkpoint]] = {}
    for checkpoint in checkpoints:
        by_seq.setdefault(checkpoint.seq, []).append(checkpoint)
    yield {
        "type": "header",
        "format": EXPORT_FORMAT,
        "incident": incident,
        "exported_at": timestamp(exported_at),
        "hash": "sha256 of the canonical JSON of each record without its hash",
    }
    for record in records:
        yield record.export()
        for checkpoint in by_seq.pop(record.seq, []):
            yield checkpoint.export()
    for remaining in by_seq.values():  # checkpoints beyond the last record: keep them visible
        for checkpoint in remaining:
            yield checkpoint.export()


def write_export(lines: Iterable[Mapping[str, Any]], out: IO[str]) -> int:
    count = 0
    for line in lines:
        out.write(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n")
        count += 1
    return count


@dataclass
class ExportFile:
    incident: str
    records: list[AuditRecord]
    checkpoints: list[Checkpoint]


def read_export(path: Path) -> ExportFile:
    """Parse an export; a malformed line is an ``InputError`` naming the file and line."""
    records: list[AuditRecord] = []
    checkpoints: list[Checkpoint] = []
    incident: str | None = None
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
                kind = line["type"]
                if kind == "header":
                    if line.get("format") != EXPORT_FORMAT:
                        raise ValueError(f"unknown format {line.get('format')!r}")
                    incident = str(line["incident"])
                elif kind == "record":
                    records.append(AuditRecord.from_export(line))
                elif kind == "checkpoint":
                    checkpoints.append(Checkpoint.from_export(line))
                else:
                    raise ValueError(f"unknown line type {kind!r}")
            except (ValueError, KeyError, TypeError) as exc:
                detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
                raise InputError(
                    f"{path}:{number}: not a Tocsin audit export line ({detail})",
                    f"the file must be written by `tocsin audit export` ({EXPORT_FORMAT})",
                ) from None
    if incident is None:
        raise InputError(
            f"{path}: no header line", f"the file must start with a {EXPORT_FORMAT} header"
        )
    return ExportFile(incident, records, checkpoints)
