"""The tamper-evident audit trail: one SHA-256 hash chain per incident, signed checkpoints.

Every event Tocsin records is an ``AuditRecord``. Records of one incident are numbered
1, 2, 3... and each holds the hash of the one before it, so that changing, removing,
inserting or reordering a record breaks the chain at that record. Checkpoints sign the
head of the chain with an Ed25519 key: whoever rewrites the chain from some record on
must also forge the signatures of the later checkpoints, and a head hash published
outside Tocsin (an *anchor*) catches a log truncated and re-signed by the key holder.

The storage lives in ``tocsin.journal`` (the ``events`` and ``checkpoints`` tables); this
module holds what a third party needs to verify an export with the public key alone:
the canonical form, the hashing, the signatures, and the verifier.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import hmac
import json
import logging
import os
import re
import stat
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tocsin.actions import SecretStore
from tocsin.errors import ConfigurationError, InputError
from tocsin.private_paths import private_folder, write_file_atomically

EXPORT_FORMAT = "tocsin-audit/1"
GENESIS = "0" * 64
"""The ``prev_hash`` of an incident's first record."""

REDACTED_PREFIX = "hmac-sha256:"

EXPORT_REASON = "export"
"""The reason of the checkpoint ``tocsin audit export`` signs over an export's last record."""
FINISHED_KIND = "run.finished"


def canonical_json(value: Any) -> bytes:
    """The one byte form that is hashed and signed: sorted keys, no spaces, UTF-8."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def timestamp(moment: datetime) -> str:
    """A UTC instant as hashed and exported: ``2026-11-24T09:19:56.827606Z``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def plain_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """Event data as JSON holds it (dates become ISO text), so that hashing is stable."""
    return json.loads(json.dumps(data, default=_json_default))  # type: ignore[no-any-return]


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


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


@dataclass(frozen=True)
class Checkpoint:
    """A signature over the head of an incident's chain at record ``seq``."""

    incident: str
    seq: int
    head: str
    at: datetime
    reason: str
    key_id: str
    signature: str

    def signed_part(self) -> dict[str, Any]:
        return checkpoint_message(
            incident=self.incident,
            seq=self.seq,
            head=self.head,
            at=self.at,
            reason=self.reason,
            key_id=self.key_id,
        )

    def export(self) -> dict[str, Any]:
        return {"type": "checkpoint", **self.signed_part(), "signature": self.signature}

    @classmethod
    def from_export(cls, line: Mapping[str, Any]) -> Checkpoint:
        return cls(
            incident=str(line["incident"]),
            seq=int(line["seq"]),
            head=str(line["head"]),
            at=parse_timestamp(str(line["at"])),
            reason=str(line["reason"]),
            key_id=str(line["key_id"]),
            signature=str(line["signature"]),
        )


def checkpoint_message(
    *, incident: str, seq: int, head: str, at: datetime, reason: str, key_id: str
) -> dict[str, Any]:
    return {
        "incident": incident,
        "seq": seq,
        "head": head,
        "at": timestamp(at),
        "reason": reason,
        "key_id": key_id,
    }


# keys -----------------------------------------------------------------------------------------


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key: the first 16 hex digits of its SHA-256."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class AuditKey:
    """The private key that signs checkpoints; it also derives the redaction HMAC key."""

    def __init__(self, private_key: Ed25519PrivateKey, path: Path | None = None) -> None:
        self._private_key = private_key
        self.path = path
        self.public_key = private_key.public_key()
        self.key_id = key_id_of(self.public_key)
        raw = private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        self._redaction_key = HKDF(
            algorithm=SHA256(), length=32, salt=None, info=b"tocsin audit redaction v1"
        ).derive(raw)

    def __repr__(self) -> str:
        return f"AuditKey(key_id={self.key_id!r}, path={self.path!s})"

    def sign(self, message: Mapping[str, Any]) -> str:
        return base64.b64encode(self._private_key.sign(canonical_json(message))).decode("ascii")

    def checkpoint(
        self, *, incident: str, seq: int, head: str, at: datetime, reason: str
    ) -> Checkpoint:
        message = checkpoint_message(
            incident=incident, seq=seq, head=head, at=at, reason=reason, key_id=self.key_id
        )
        return Checkpoint(
            incident=incident,
            seq=seq,
            head=head,
            at=at,
            reason=reason,
            key_id=self.key_id,
            signature=self.sign(message),
        )

    def redact(self, value: Any) -> str:
        """``hmac-sha256:<hex>`` of a secret value: equal secrets give equal tokens."""
        text = value if isinstance(value, str) else canonical_json(value).decode("utf-8")
        digest = hmac.new(self._redaction_key, text.encode("utf-8"), hashlib.sha256).hexdigest()
        return REDACTED_PREFIX + digest

    def public_pem(self) -> bytes:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @classmethod
    def generate(cls, path: Path, *, overwrite: bool = False) -> AuditKey:
        """Create a key pair: ``path`` (private, mode 0600) and ``path.pub`` (public).

        Both are written atomically through a new file of a random name (never a file or
        symbolic link planted beforehand); a symbolic link at ``path`` is refused.
        """
        if path.is_symlink():
            raise ConfigurationError(
                f"the audit key path {path} is a symbolic link; Tocsin does not write a key "
                "through a link",
                "remove the link and give the real file's path (TOCSIN_AUDIT__KEY_PATH)",
            )
        if path.exists() and not overwrite:
            raise InputError(
                f"an audit key already exists at {path}",
                "keep it (checkpoints already signed need its public key), or pass --force "
                "to replace it after saving the old public key",
            )
        private_folder(path.parent)
        key = cls(Ed25519PrivateKey.generate(), path)
        pem = key._private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_file_atomically(path, pem, mode=0o600)
        write_file_atomically(public_path(path), key.public_pem(), mode=0o644)
        return key

    @classmethod
    def load(cls, path: Path) -> AuditKey:
        """The key in ``path``; refused when it is a symbolic link or others may read it."""
        try:
            descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            raise ConfigurationError(
                f"no audit signing key at {path}",
                "create one with `tocsin audit keygen` (or set TOCSIN_AUDIT__KEY_PATH)",
            ) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ConfigurationError(
                    f"the audit signing key {path} is a symbolic link; Tocsin does not follow it",
                    "point TOCSIN_AUDIT__KEY_PATH at the key file itself, readable only by "
                    "the Tocsin service user",
                ) from None
            raise ConfigurationError(
                f"cannot read the audit signing key {path}: {exc.strerror}",
                "the key must be readable by the user Tocsin runs as",
            ) from None
        with os.fdopen(descriptor, "rb") as handle:
            status = os.fstat(handle.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise ConfigurationError(f"the audit signing key {path} is not a regular file")
            if status.st_mode & 0o077:
                raise ConfigurationError(
                    f"the audit signing key {path} may be read or changed by other users "
                    f"(mode {stat.S_IMODE(status.st_mode):04o}); Tocsin refuses to use it",
                    f"chmod 600 {path} (owned by the Tocsin service user); if others could "
                    "read it, create a new key with `tocsin audit keygen --force`",
                )
            content = handle.read()
        try:
            loaded = serialization.load_pem_private_key(content, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(
                f"{path} is not an Ed25519 private key in PEM form: {exc}",
                "create a key with `tocsin audit keygen`",
            ) from None
        if not isinstance(loaded, Ed25519PrivateKey):
            raise ConfigurationError(f"{path} holds a key that is not Ed25519")
        return cls(loaded, path)


def public_path(private_path: Path) -> Path:
    return private_path.with_name(private_path.name + ".pub")


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        loaded = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise InputError(f"no public key file {path}") from None
    except ValueError as exc:
        raise InputError(f"{path} is not a public key in PEM form: {exc}") from None
    if not isinstance(loaded, Ed25519PublicKey):
        raise InputError(f"{path} holds a key that is not Ed25519")
    return loaded


# redaction ------------------------------------------------------------------------------------


class Redactor:
    """Keeps secret values out of the audit trail: each becomes its keyed HMAC.

    Named fields (secret inputs, sensitive parameters and outputs) are replaced whole;
    every value it has seen, and every secret read from the secret store, is also
    replaced wherever it appears inside recorded text (a password pasted in a message).
    """

    MIN_SCRUBBED_LENGTH = 4

    def __init__(self, key: AuditKey) -> None:
        self.key = key
        self._known: dict[str, str] = {}
        self._lock = threading.Lock()

    def remember(self, value: Any) -> None:
        if isinstance(value, str) and len(value) >= self.MIN_SCRUBBED_LENGTH:
            with self._lock:
                self._known.setdefault(value, self.key.redact(value))

    def fields(self, values: Mapping[str, Any], secret_names: Iterable[str]) -> dict[str, Any]:
        """``values`` with every field named in ``secret_names`` redacted (when set)."""
        secret = set(secret_names)
        redacted: dict[str, Any] = {}
        for name, value in values.items():
            if name in secret and value is not None and value != "":
                self.remember(value)
                redacted[name] = self.key.redact(value)
            else:
                redacted[name] = value
        return redacted

    def scrub(self, value: Any) -> Any:
        """``value`` with every known secret replaced inside strings, at any depth."""
        with self._lock:
            known = sorted(self._known.items(), key=lambda item: -len(item[0]))
        if not known:
            return value
        return _scrub(value, known)


def _scrub(value: Any, known: list[tuple[str, str]]) -> Any:
    if isinstance(value, str):
        for secret, token in known:
            if secret in value:
                value = value.replace(secret, token)
        return value
    if isinstance(value, Mapping):
        return {key: _scrub(item, known) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(item, known) for item in value]
    return value


class RedactingFilter(logging.Filter):
    """A log filter that writes every known secret of a run as its HMAC, like the trail."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._redactor.scrub(record.getMessage())
        record.args = ()
        return True


def redacting_logger(name: str, redactor: Redactor) -> logging.Logger:
    """A logger for one run's actions: its lines reach ``name``'s handlers with secrets redacted.

    Not registered with ``logging``: a filter per run on a shared logger would pile up.
    """
    logger = logging.Logger(name)
    logger.parent = logging.getLogger(name)
    logger.addFilter(RedactingFilter(redactor))
    return logger


class RecordingSecrets:
    """A secret store that tells the redactor each value it hands out."""

    def __init__(self, store: SecretStore, redactor: Redactor) -> None:
        self._store = store
        self._redactor = redactor

    def get(self, name: str) -> str | None:
        value = self._store.get(name)
        self._redactor.remember(value)
        return value

    def __repr__(self) -> str:
        return f"RecordingSecrets({self._store!r})"


# verification ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a chain, located at a record when it can be."""

    seq: int | None
    message: str


@dataclass(frozen=True)
class PublishedHead:
    """A head hash found where Tocsin published it (a Slack message, a ticket comment)."""

    head: str
    seq: int | None
    """The record number the message names."""
    where: str
    """How a person finds it: ``Slack C0AUDIT message 1700000000.000100``."""


@dataclass
class AnchorPlace:
    """One place where heads are published, as ``verify`` read it."""

    place: str
    """``Slack channel #incident-audit``, ``Slack incident thread``, ``Jira INC-1``."""
    reachable: bool
    heads: list[PublishedHead] = field(default_factory=list)
    error: str | None = None
    """Why it could not be read (when not reachable)."""
    mismatched: list[PublishedHead] = field(default_factory=list)
    """Published heads that are not in the chain."""

    @property
    def state(self) -> str:
        if not self.reachable:
            return "unreachable"
        return "mismatch" if self.mismatched else "reachable"

    def as_data(self) -> dict[str, Any]:
        return {
            "place": self.place,
            "state": self.state,
            "heads": [{"head": h.head, "seq": h.seq, "where": h.where} for h in self.heads],
            "mismatched": [h.head for h in self.mismatched],
            "error": self.error,
        }


@dataclass
class Verification:
    """What ``tocsin audit verify`` found."""

    incident: str
    records: int = 0
    checkpoints: int = 0
    head: str | None = None
    last_checkpoint_seq: int | None = None
    key_ids: set[str] = field(default_factory=set)
    problems: list[Problem] = field(default_factory=list)
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
                Problem(record.seq, f"{record.describe()} belongs to incident {record.incident}")
            )
            continue
        if record.computed_hash() != record.hash:
            original = _original_number(record)
            if original is not None:
                renumbered.append((record, original))
            else:
                problems.append(
                    Problem(
                        record.seq,
                        f"{record.describe()} was modified: its content no longer matches its hash",
                    )
                )
        following = ordered[index + 1] if index + 1 < len(ordered) else None
        if swapped_with_next:
            swapped_with_next = False
        elif record.seq in by_seq:
            problems.append(
                Problem(
                    record.seq,
                    f"{record.describe()} was inserted: record {record.seq} already exists "
                    f"({by_seq[record.seq].kind}), and only one of them is in the chain",
                )
            )
        elif record.seq == expected_seq + 1 and following and following.seq == expected_seq:
            problems.append(
                Problem(
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
                Problem(
                    expected_seq, f"{missing} missing (deleted): the chain jumps to {record.seq}"
                )
            )
        elif record.seq < expected_seq:
            after = f" after record {previous.seq}" if previous else ""
            problems.append(
                Problem(
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
                    Problem(
                        previous.seq,
                        f"{previous.describe()} was inserted: record {record.seq} links past "
                        f"it to the record before",
                    )
                )
            else:
                problems.append(
                    Problem(
                        record.seq,
                        f"{record.describe()} does not follow record {previous.seq}: its link "
                        "to the previous record is broken (a record was inserted, removed or "
                        "reordered before it)",
                    )
                )
        elif record.prev_hash != prev_hash:
            problems.append(Problem(record.seq, f"{record.describe()} does not start the chain"))
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
                    Problem(
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
                    Problem(checkpoint.seq, f"{label} has a bad signature (altered or forged)")
                )
                continue
        covered = by_seq.get(checkpoint.seq)
        if checkpoint.seq > last_seq:
            problems.append(
                Problem(
                    last_seq + 1,
                    f"the log was truncated: {label} signed {checkpoint.seq} records but the "
                    f"chain ends at record {last_seq}; records {last_seq + 1} to "
                    f"{checkpoint.seq} were removed",
                )
            )
        elif covered is None:
            problems.append(Problem(checkpoint.seq, f"{label} covers a record that is missing"))
        elif covered.hash != checkpoint.head:
            problems.append(
                Problem(
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
                Problem(
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
            Problem(
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
            Problem(
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
                Problem(
                    first,
                    f"the end of the export is not signed: {which} after the last "
                    f"checkpoint (record {last_signed}), and `tocsin audit export` signs the "
                    "last record of every export; records were cut from its end, with their "
                    "checkpoints, or added after it was written",
                )
            )
        elif not sealed:
            result.problems.append(
                Problem(
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


_PUBLISHED_HEAD = re.compile(
    r"Audit checkpoint(?: for (?P<ticket>[^\s:]+))?:?\s+record (?P<seq>\d+),\s+head\W{0,3}"
    r"sha256:(?P<head>[0-9a-f]{64})"
)


def heads_in_text(text: str, incident: str) -> list[tuple[int, str]]:
    """(record number, head) of each audit checkpoint of ``incident`` a published message states.

    The messages read ``Audit checkpoint for INC-1: record 52, head sha256:<hex>`` (the
    ticket's own comments leave out ``for INC-1``).
    """
    found = []
    for match in _PUBLISHED_HEAD.finditer(text):
        ticket = match.group("ticket")
        if ticket is not None and ticket.strip("*_`") != incident:
            continue
        found.append((int(match.group("seq")), match.group("head")))
    return found


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
                    Problem(
                        published.seq,
                        f"the head sha256:{published.head} published in {published.where} "
                        f"({named}) is not in the chain: the log was truncated or rewritten "
                        "after that head was published",
                    )
                )
            elif published.seq is not None and published.seq != seq:
                place.mismatched.append(published)
                result.problems.append(
                    Problem(
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


def _renumbering_problems(renumbered: list[tuple[AuditRecord, int]]) -> list[Problem]:
    """One problem per swap or per run of records moved by the same amount."""
    problems: list[Problem] = []
    index = 0
    while index < len(renumbered):
        record, original = renumbered[index]
        if index + 1 < len(renumbered):
            other, other_original = renumbered[index + 1]
            if original == other.seq and other_original == record.seq:
                problems.append(
                    Problem(
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
            Problem(record.seq, f"{which}: a record was {cause} or the records reordered")
        )
        index = end + 1
    return problems


# export ---------------------------------------------------------------------------------------


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
