"""Secret inputs handed to a run without ever reaching Prefect.

Prefect stores a flow run's parameters and serves them to anyone who reaches its API.
A runbook's secret inputs (a temporary password, a token) are therefore not parameters:
the launcher encrypts them (AES-256-GCM, a fresh key per run start) into the journal's
``sealed_inputs`` table and passes the flow only a reference, ``<id>.<key>``. The flow
opens them, and removes them when the run ends. Prefect holds the key but not the
ciphertext; the journal holds the ciphertext but not the key: neither alone can read them.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, insert, select

from tocsin.errors import InputError
from tocsin.journal import Journal, now, sealed_inputs
from tocsin.model import Runbook

FORGOTTEN_AFTER = timedelta(days=30)
"""Sealed inputs of a start whose run never ended (its process vanished) are removed then."""


def split_inputs(
    runbook: Runbook, given: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(inputs that may be parameters, the secret ones)."""
    secret_names = {name for name, spec in runbook.inputs.items() if spec.secret}
    plain = {k: v for k, v in given.items() if k not in secret_names}
    hidden = {k: v for k, v in given.items() if k in secret_names}
    return plain, hidden


def seal(journal: Journal, incident: str, values: Mapping[str, Any]) -> str | None:
    """Store ``values`` encrypted; the reference to pass the flow (None when there are none)."""
    if not values:
        return None
    key = AESGCM.generate_key(bit_length=256)
    ref_id = secrets.token_hex(16)
    nonce = secrets.token_bytes(12)
    plaintext = json.dumps(dict(values), ensure_ascii=False).encode("utf-8")
    ciphertext = nonce + AESGCM(key).encrypt(nonce, plaintext, _associated(ref_id, incident))
    with journal.transaction() as db:
        db.execute(
            delete(sealed_inputs).where(sealed_inputs.c.created_at < now() - FORGOTTEN_AFTER)
        )
        db.execute(
            insert(sealed_inputs).values(
                id=ref_id, incident=incident, ciphertext=ciphertext, created_at=now()
            )
        )
    return f"{ref_id}.{base64.urlsafe_b64encode(key).decode('ascii').rstrip('=')}"


def unseal(journal: Journal, incident: str, reference: str) -> dict[str, Any]:
    """The secret inputs behind ``reference``; ``InputError`` when they are gone or altered."""
    ref_id, key = _parse(reference)
    with journal.transaction() as db:
        row = db.execute(
            select(sealed_inputs.c.ciphertext, sealed_inputs.c.incident).where(
                sealed_inputs.c.id == ref_id
            )
        ).first()
    if row is None:
        raise InputError(
            "the secret inputs of this run are no longer available (its run ended, or they "
            "were started more than 30 days ago)",
            "start the run again with `tocsin run ... --set NAME=...` to give them anew",
        )
    ciphertext, owner = bytes(row[0]), str(row[1])
    if owner != incident:
        raise InputError("these secret inputs belong to another incident's run")
    try:
        plaintext = AESGCM(key).decrypt(
            ciphertext[:12], ciphertext[12:], _associated(ref_id, owner)
        )
    except InvalidTag:
        raise InputError(
            "the secret inputs of this run cannot be opened (wrong key, or altered in the journal)"
        ) from None
    values = json.loads(plaintext)
    assert isinstance(values, dict)
    return values


def discard(journal: Journal, reference: str) -> None:
    """Remove sealed inputs once their run has ended."""
    ref_id, _ = _parse(reference)
    with journal.transaction() as db:
        db.execute(delete(sealed_inputs).where(sealed_inputs.c.id == ref_id))


def _parse(reference: str) -> tuple[str, bytes]:
    ref_id, _, encoded = reference.partition(".")
    try:
        key = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except ValueError:
        key = b""
    if len(ref_id) != 32 or len(key) != 32:
        raise InputError("the reference to this run's secret inputs is malformed")
    return ref_id, key


def _associated(ref_id: str, incident: str) -> bytes:
    return f"tocsin-sealed-inputs/1\x00{ref_id}\x00{incident}".encode()


__all__ = ["discard", "seal", "split_inputs", "unseal"]
