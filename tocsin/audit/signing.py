"""Signed checkpoints over the head of a chain, and the Ed25519 key that signs them."""

from __future__ import annotations

import base64
import errno
import hashlib
import hmac
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tocsin.audit.canonical import canonical_json, parse_timestamp, timestamp
from tocsin.errors import ConfigurationError, InputError
from tocsin.private_paths import private_folder, write_file_atomically

REDACTED_PREFIX = "hmac-sha256:"


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
