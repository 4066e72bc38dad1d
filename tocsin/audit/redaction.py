"""Keeping secret values out of the trail and the logs: each is written as its keyed HMAC."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from tocsin.actions import SecretStore
from tocsin.audit.signing import AuditKey


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
