"""The tamper-evident audit trail: one SHA-256 hash chain per incident, signed checkpoints.

Every event Tocsin records is an ``AuditRecord``. Records of one incident are numbered
1, 2, 3... and each holds the hash of the one before it, so that changing, removing,
inserting or reordering a record breaks the chain at that record. Checkpoints sign the
head of the chain with an Ed25519 key: whoever rewrites the chain from some record on
must also forge the signatures of the later checkpoints, and a head hash published
outside Tocsin (an *anchor*) catches a log truncated and re-signed by the key holder.

The storage lives in ``tocsin.journal`` (the ``events`` and ``checkpoints`` tables); this
package holds what a third party needs to verify an export with the public key alone:
the canonical form, the hashing, the signatures, and the verifier. One module per part:

- ``canonical``: the byte form that is hashed and signed (``canonical_json``), timestamps
- ``records``: ``AuditRecord``, the fields its hash covers (``record_body``), ``chain_hash``
- ``signing``: ``Checkpoint`` and its signed message; ``AuditKey``, the signing key (which
  also derives the redaction HMAC key), and reading its public half
- ``redaction``: ``Redactor`` and what keeps a run's secrets out of its logs and secret reads
- ``published_heads``: the heads published in Slack and on the ticket (``PublishedHead``,
  ``AnchorPlace``) and finding them in a message's text (``heads_in_text``)
- ``verification``: ``verify_chain`` and its ``Verification``, each ``ChainProblem`` located at a
  record; ``check_published_heads`` against the chain
- ``export``: the JSON Lines export (format ``tocsin-audit/1``), written and read back

Every name is importable from ``tocsin.audit`` itself.
"""

from __future__ import annotations

from tocsin.audit.canonical import canonical_json, parse_timestamp, plain_data, timestamp
from tocsin.audit.export import (
    EXPORT_FORMAT,
    EXPORT_REASON,
    ExportFile,
    export_lines,
    read_export,
    write_export,
)
from tocsin.audit.published_heads import AnchorPlace, PublishedHead, heads_in_text
from tocsin.audit.records import FINISHED_KIND, GENESIS, AuditRecord, chain_hash, record_body
from tocsin.audit.redaction import RecordingSecrets, RedactingFilter, Redactor, redacting_logger
from tocsin.audit.signing import (
    REDACTED_PREFIX,
    AuditKey,
    Checkpoint,
    checkpoint_message,
    key_id_of,
    load_public_key,
    public_path,
)
from tocsin.audit.verification import (
    ChainProblem,
    Verification,
    check_published_heads,
    verify_chain,
)

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_REASON",
    "FINISHED_KIND",
    "GENESIS",
    "REDACTED_PREFIX",
    "AnchorPlace",
    "AuditKey",
    "AuditRecord",
    "Checkpoint",
    "ExportFile",
    "ChainProblem",
    "PublishedHead",
    "RecordingSecrets",
    "RedactingFilter",
    "Redactor",
    "Verification",
    "canonical_json",
    "chain_hash",
    "check_published_heads",
    "checkpoint_message",
    "export_lines",
    "heads_in_text",
    "key_id_of",
    "load_public_key",
    "parse_timestamp",
    "plain_data",
    "public_path",
    "read_export",
    "record_body",
    "redacting_logger",
    "timestamp",
    "verify_chain",
    "write_export",
]
