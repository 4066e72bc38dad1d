"""Verifying a chain: its hashes, its checkpoint signatures, what is unsigned, published heads."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tocsin.audit.canonical import canonical_json, timestamp
from tocsin.audit.export import EXPORT_REASON
from tocsin.audit.published_heads import AnchorPlace
from tocsin.audit.records import FINISHED_KIND, GENESIS, AuditRecord, chain_hash
from tocsin.audit.signing import Checkpoint, key_id_of


@dataclass(frozen=True)
class ChainProblem:
    """One thing wrong with a chain, located at a record (its number) when it can be. The
    error tree's ``Problem`` is a runbook's, located by file and line; this is the trail's."""

    seq: int | None
    message: str


@dataclass
class Verification:
    """What ``tocsin audit verify`` found."""

    incident: str
    records: int = 0
    checkpoints: int = 0
    head: str | None = None
    last_checkpoint_seq: int | None = None
    key_ids: set[str] = field(default_factory=set)
    problems: list[ChainProblem] = field(default_factory=list)
    anchor: str | None = None
    anchor_seq: int | None = None
    anchors: list[AnchorPlace] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Things worth knowing that are not faults (a run still going, a place not reachable)."""
    hashes: dict[str, int] = field(default_factory=dict, repr=False)
    """Record number of each hash in the chain (to look published heads up)."""

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def unsigned_tail(self) -> int:
        """Records after the last checkpoint (a run still going, or a crash before signing)."""
        return self.records - (self.last_checkpoint_seq or 0)

    def as_data(self) -> dict[str, Any]:
        return {
            "incident": self.incident,
            "ok": self.ok,
            "records": self.records,
            "checkpoints": self.checkpoints,
            "head": self.head,
            "last_checkpoint_seq": self.last_checkpoint_seq,
            "unsigned_tail": self.unsigned_tail,
            "key_ids": sorted(self.key_ids),
            "anchor": self.anchor,
            "anchor_seq": self.anchor_seq,
            "anchors": [place.as_data() for place in self.anchors],
            "problems": [{"seq": p.seq, "message": p.message} for p in self.problems],
            "notes": list(self.notes),
        }


def verify_chain(
    incident: str,
    records: Iterable[AuditRecord],
    checkpoints: Iterable[Checkpoint],
    public_key: Ed25519PublicKey | None,
    *,
    anchor: str | None = None,
    export: bool = False,
) -> Verification:
    """Recompute the chain and the checkpoint signatures; name each record that is wrong.

    ``records`` come in stored order (by number from the database, in file order from
    an export). Without ``public_key`` the signatures are not checked, only the chain
    and that each checkpoint's head is in it.

    What is not signed fails too: a chain with no checkpoint at all, a finished run
    (``run.finished``) with no checkpoint at or after it, and, for an ``export``, a last
    record without the export checkpoint ``tocsin audit export`` signs over it.
    Records after the last checkpoint of a chain in the database are only a note
    (a run still going).
    """
    result = Verification(incident=incident, anchor=anchor)
    problems = result.problems
    ordered = list(records)
    by_seq: dict[int, AuditRecord] = {}
    expected_seq = 1
    prev_hash = GENESIS
    hashes: list[str] = []
    previous: AuditRecord | None = None
    renumbered: list[tuple[AuditRecord, int]] = []  # (record, its original number)
    swapped_with_next = False
    for index, record in enumerate(ordered):
        result.records += 1
        if record.incident != incident:
            problems.append(
                ChainProblem(
                    record.seq, f"{record.describe()} belongs to incident {record.incident}"
                )
            )
            continue
        if record.computed_hash() != record.hash:
            original = _original_number(record)
            if original is not None:
                renumbered.append((record, original))
            else:
                problems.append(
                    ChainProblem(
                        record.seq,
                        f"{record.describe()} was modified: its content no longer matches its hash",
                    )
                )
        following = ordered[index + 1] if index + 1 < len(ordered) else None
        if swapped_with_next:
            swapped_with_next = False
        elif record.seq in by_seq:
            problems.append(
                ChainProblem(
                    record.seq,
                    f"{record.describe()} was inserted: record {record.seq} already exists "
                    f"({by_seq[record.seq].kind}), and only one of them is in the chain",
                )
            )
        elif record.seq == expected_seq + 1 and following and following.seq == expected_seq:
            problems.append(
                ChainProblem(
                    expected_seq,
                    f"records {expected_seq} and {record.seq} are in the wrong order "
                    f"(reordered): record {record.seq} comes first",
                )
            )
            swapped_with_next = True
        elif record.seq > expected_seq:
            missing = (
                f"record {expected_seq} is"
                if record.seq == expected_seq + 1
                else f"records {expected_seq} to {record.seq - 1} are"
            )
            problems.append(
                ChainProblem(
                    expected_seq, f"{missing} missing (deleted): the chain jumps to {record.seq}"
                )
            )
        elif record.seq < expected_seq:
            after = f" after record {previous.seq}" if previous else ""
            problems.append(
                ChainProblem(
                    record.seq,
                    f"{record.describe()} is out of order: it comes{after} (reordered)",
                )
            )
        elif record.prev_hash != prev_hash and previous is not None:
            moved = {id(r) for r, _ in renumbered[-2:]}
            skips_previous = len(hashes) >= 2 and record.prev_hash == hashes[-2]
            if id(previous) in moved or (id(record) in moved and not skips_previous):
                pass  # explained by the renumbering, reported below
            elif skips_previous:
                problems.append(
                    ChainProblem(
                        previous.seq,
                        f"{previous.describe()} was inserted: record {record.seq} links past "
                        f"it to the record before",
                    )
                )
            else:
                problems.append(
                    ChainProblem(
                        record.seq,
                        f"{record.describe()} does not follow record {previous.seq}: its link "
                        "to the previous record is broken (a record was inserted, removed or "
                        "reordered before it)",
                    )
                )
        elif record.prev_hash != prev_hash:
            problems.append(
                ChainProblem(record.seq, f"{record.describe()} does not start the chain")
            )
        by_seq.setdefault(record.seq, record)
        expected_seq = max(expected_seq, record.seq + 1)
        prev_hash = record.hash
        hashes.append(record.hash)
        previous = record
    problems.extend(_renumbering_problems(renumbered))
    problems.sort(key=lambda problem: (problem.seq is None, problem.seq or 0))
    last_seq = max(by_seq, default=0)
    result.head = by_seq[last_seq].hash if last_seq else None

    signed: list[Checkpoint] = []  # checkpoints whose signature and head are right
    for checkpoint in checkpoints:
        result.checkpoints += 1
        result.key_ids.add(checkpoint.key_id)
        label = f"checkpoint at record {checkpoint.seq} ({checkpoint.reason}, {timestamp(checkpoint.at)})"
        if public_key is not None:
            if checkpoint.key_id != key_id_of(public_key):
                problems.append(
                    ChainProblem(
                        checkpoint.seq,
                        f"{label} was signed with key {checkpoint.key_id}, not with the given "
                        f"key {key_id_of(public_key)}",
                    )
                )
                continue
            try:
                public_key.verify(
                    base64.b64decode(checkpoint.signature), canonical_json(checkpoint.signed_part())
                )
            except (InvalidSignature, ValueError):
                problems.append(
                    ChainProblem(checkpoint.seq, f"{label} has a bad signature (altered or forged)")
                )
                continue
        covered = by_seq.get(checkpoint.seq)
        if checkpoint.seq > last_seq:
            problems.append(
                ChainProblem(
                    last_seq + 1,
                    f"the log was truncated: {label} signed {checkpoint.seq} records but the "
                    f"chain ends at record {last_seq}; records {last_seq + 1} to "
                    f"{checkpoint.seq} were removed",
                )
            )
        elif covered is None:
            problems.append(
                ChainProblem(checkpoint.seq, f"{label} covers a record that is missing")
            )
        elif covered.hash != checkpoint.head:
            problems.append(
                ChainProblem(
                    checkpoint.seq,
                    f"{label} does not match the chain: the records up to {checkpoint.seq} "
                    "were rewritten after it was signed",
                )
            )
        else:
            result.last_checkpoint_seq = max(result.last_checkpoint_seq or 0, checkpoint.seq)
            signed.append(checkpoint)

    _unsigned_problems(result, ordered, signed, last_seq, export=export)
    result.hashes = {record.hash: record.seq for record in by_seq.values()}

    if anchor is not None:
        wanted = anchor.removeprefix("sha256:").lower()
        found = next((r for r in by_seq.values() if r.hash == wanted), None)
        if found is None:
            problems.append(
                ChainProblem(
                    None,
                    f"the anchor {anchor} is not in the chain: the log was truncated or "
                    "rewritten after that head was published",
                )
            )
        else:
            result.anchor_seq = found.seq
    return result


def _unsigned_problems(
    result: Verification,
    records: list[AuditRecord],
    signed: list[Checkpoint],
    last_seq: int,
    *,
    export: bool,
) -> None:
    """What no valid checkpoint covers: failures, or a note for a chain still growing."""
    if not records:
        return
    if not result.checkpoints:
        result.problems.append(
            ChainProblem(
                None,
                f"no signed checkpoint: nothing signs the {last_seq} records of this chain "
                "(every checkpoint was deleted, or the records were written without the "
                "signing key)",
            )
        )
        return
    last_signed = max((c.seq for c in signed), default=0)
    finished = [r for r in records if r.kind == FINISHED_KIND and r.seq > last_signed]
    for record in finished:
        result.problems.append(
            ChainProblem(
                record.seq,
                f"{record.describe()} ends a run, but no checkpoint signs the chain at or "
                "after it: the end-of-run checkpoint is missing (deleted, or the log was cut "
                "short after it)",
            )
        )
    if export:
        sealed = any(c.reason == EXPORT_REASON and c.seq == last_seq for c in signed)
        if not sealed and last_signed < last_seq:
            first = last_signed + 1
            which = (
                f"record {first} comes"
                if first == last_seq
                else f"records {first} to {last_seq} come"
            )
            result.problems.append(
                ChainProblem(
                    first,
                    f"the end of the export is not signed: {which} after the last "
                    f"checkpoint (record {last_signed}), and `tocsin audit export` signs the "
                    "last record of every export; records were cut from its end, with their "
                    "checkpoints, or added after it was written",
                )
            )
        elif not sealed:
            result.problems.append(
                ChainProblem(
                    last_seq,
                    f"the export ends at record {last_seq} without its export checkpoint "
                    "(`tocsin audit export` signs the last record of every export): it was "
                    "cut short at an earlier checkpoint",
                )
            )
    elif result.unsigned_tail and not finished:
        result.notes.append(
            f"the last {result.unsigned_tail} records are after the last checkpoint "
            "(a run still going, or stopped before signing)"
        )


def check_published_heads(result: Verification, places: Iterable[AnchorPlace]) -> None:
    """Each head published where it could be read must be a record hash of the chain."""
    for place in places:
        result.anchors.append(place)
        if not place.reachable:
            result.notes.append(
                f"published heads in {place.place} not checked: {place.error or 'unreachable'}"
            )
            continue
        for published in place.heads:
            seq = result.hashes.get(published.head)
            named = f"record {published.seq}" if published.seq is not None else "a record"
            if seq is None:
                place.mismatched.append(published)
                result.problems.append(
                    ChainProblem(
                        published.seq,
                        f"the head sha256:{published.head} published in {published.where} "
                        f"({named}) is not in the chain: the log was truncated or rewritten "
                        "after that head was published",
                    )
                )
            elif published.seq is not None and published.seq != seq:
                place.mismatched.append(published)
                result.problems.append(
                    ChainProblem(
                        seq,
                        f"the head published in {published.where} names record "
                        f"{published.seq}, but that hash is record {seq} of the chain "
                        "(the message was altered)",
                    )
                )


def _original_number(record: AuditRecord, reach: int = 5) -> int | None:
    """The number a record had when it was hashed, if only its number changed since."""
    for delta in range(1, reach + 1):
        for candidate in (record.seq - delta, record.seq + delta):
            if candidate >= 1 and chain_hash({**record.body(), "seq": candidate}) == record.hash:
                return candidate
    return None


def _renumbering_problems(renumbered: list[tuple[AuditRecord, int]]) -> list[ChainProblem]:
    """One problem per swap or per run of records moved by the same amount."""
    problems: list[ChainProblem] = []
    index = 0
    while index < len(renumbered):
        record, original = renumbered[index]
        if index + 1 < len(renumbered):
            other, other_original = renumbered[index + 1]
            if original == other.seq and other_original == record.seq:
                problems.append(
                    ChainProblem(
                        record.seq,
                        f"records {record.seq} and {other.seq} were swapped (reordered): "
                        f"{record.describe()} was record {original}",
                    )
                )
                index += 2
                continue
        shift = record.seq - original
        end = index
        while (
            end + 1 < len(renumbered)
            and renumbered[end + 1][0].seq - renumbered[end + 1][1] == shift
            and renumbered[end + 1][0].seq == renumbered[end][0].seq + 1
        ):
            end += 1
        last = renumbered[end][0]
        which = (
            f"{record.describe()} was renumbered (it was record {original})"
            if end == index
            else f"records {record.seq} to {last.seq} were renumbered by {shift:+d} "
            f"(record {record.seq} was record {original})"
        )
        cause = "inserted" if shift > 0 else "deleted"
        problems.append(
            ChainProblem(record.seq, f"{which}: a record was {cause} or the records reordered")
        )
        index = end + 1
    return problems
