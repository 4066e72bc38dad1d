"""Where a temporary password goes: to a secure channel the settings name, never to the
audit trail, the logs, the step's outputs or Prefect.

``PasswordDelivery`` is the interface: ``stage`` a password before it is set (so that a
channel that cannot take it fails the step before the user's password changes), then
``commit`` once Graph accepted it or ``discard`` when it did not. ``FolderDelivery`` is the
one channel so far: a 0600 file per reset in ``microsoft.password_folder`` (a 0700 folder on
Tocsin's machine, read by the responder who hands the password over by phone or in
person). Another channel (a Slack DM to a named person, a password manager's API) is one
more class and one more setting; the action does not change.

The passwords are made here with Python's ``secrets`` module: a secret the runbook named
would be one fixed value, known to whoever set it and reused from incident to incident.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
import string
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from tocsin.errors import ConfigurationError

if TYPE_CHECKING:
    from tocsin.integrations.microsoft.settings import MicrosoftSettings

PASSWORD_LENGTH = 24
_SYMBOLS = "!#$%&*+-=?@^_~"
_ALPHABET = string.ascii_letters + string.digits + _SYMBOLS


def temporary_password(length: int = PASSWORD_LENGTH) -> str:
    """A random password with upper and lower case letters, digits and symbols (Entra asks
    for three of the four, 8 to 256 characters)."""
    while True:
        password = "".join(secrets.choice(_ALPHABET) for _ in range(length))
        if (
            any(c in string.ascii_lowercase for c in password)
            and any(c in string.ascii_uppercase for c in password)
            and any(c in string.digits for c in password)
            and any(c in _SYMBOLS for c in password)
        ):
            return password


@dataclass(frozen=True, repr=False)
class PasswordNote:
    """What the responder receives; its repr never shows the password."""

    user: str
    incident: str
    step_id: str
    password: str

    def __repr__(self) -> str:
        return f"PasswordNote(user={self.user!r}, incident={self.incident!r})"


class StagedDelivery(Protocol):
    def commit(self) -> str:
        """Deliver; a sentence saying where the password went (no password in it)."""

    def discard(self) -> None:
        """Forget the staged password: it was never set."""


class PasswordDelivery(Protocol):
    def stage(self, note: PasswordNote) -> StagedDelivery:
        """Get ready to deliver ``note``; raise ``ConfigurationError`` when the channel cannot."""


class FolderDelivery:
    """A 0600 file per reset in a 0700 folder of Tocsin's machine."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def stage(self, note: PasswordNote) -> _StagedFile:
        self._check_folder()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        base = "-".join(_safe(part) for part in (note.incident, note.step_id, note.user, stamp))
        # Two resets within a second get two files: a name is never reused.
        unique = f"{base}-{secrets.token_hex(3)}"
        final = self.folder / f"{unique}.txt"
        pending = self.folder / f".{unique}.pending"
        text = (
            f"Temporary password for {note.user} (incident {note.incident}, step {note.step_id})\n"
            f"{note.password}\n"
            "The user must change it at the next sign-in. Hand it over by phone or in person, "
            "never to the user's mailbox, then delete this file.\n"
        )
        descriptor = os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(text)
        return _StagedFile(pending, final)

    def _check_folder(self) -> None:
        try:
            mode = self.folder.stat().st_mode
        except OSError as exc:
            raise ConfigurationError(
                f"the password folder {self.folder} cannot be used: {exc.strerror}",
                "create it (mkdir -m 700) or fix TOCSIN_MICROSOFT__PASSWORD_FOLDER",
            ) from None
        if not stat.S_ISDIR(mode) or mode & 0o077:
            raise ConfigurationError(
                f"the password folder {self.folder} is not a folder only its owner can open "
                f"(mode {stat.filemode(mode)})",
                f"chmod 700 {self.folder}; no password is written where others can read it",
            )


@dataclass(frozen=True)
class _StagedFile:
    pending: Path
    final: Path

    def commit(self) -> str:
        try:
            os.link(self.pending, self.final)  # never over an existing file, unlike a rename
        except OSError:
            # The password is set by now: the staged file is where it is, say so.
            return f"file {self.pending} (mode 0600; it could not be renamed)"
        self.pending.unlink()
        return f"file {self.final} (mode 0600)"

    def discard(self) -> None:
        self.pending.unlink(missing_ok=True)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9@._]+", "_", text)[:80]


def password_delivery(settings: MicrosoftSettings) -> PasswordDelivery:
    """The channel the settings name; ``ConfigurationError`` when none is."""
    if settings.password_folder is None:
        raise ConfigurationError(
            "no secure channel is configured for temporary passwords, so none is reset",
            "set TOCSIN_MICROSOFT__PASSWORD_FOLDER to a 0700 folder on this machine "
            "(docs/microsoft.md, Password reset)",
        )
    return FolderDelivery(settings.password_folder)
