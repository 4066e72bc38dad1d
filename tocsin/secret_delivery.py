"""Where a secret an action makes goes (a temporary password, a private key): to one secure
channel the settings name, never to the audit trail, the logs, the step's outputs or Prefect.

A channel is named by a short text, ``scheme:target``:

- ``folder:/var/lib/tocsin/handover`` — a 0600 file per secret in a 0700 folder of Tocsin's
  machine, read by the responder who hands it over by phone or in person (built in);
- ``slack-dm:U0123ABCD`` — a direct message from Tocsin's Slack bot to that person, or any
  other scheme an installed integration offers (``Integration.secret_channels``).

``SecretDelivery`` is the interface: ``stage`` a note before the secret is used (so that a
channel that cannot take it fails the step before anything changes), then ``commit`` once
the service accepted the secret, or ``discard`` when it did not.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from tocsin.errors import ConfigurationError

if TYPE_CHECKING:
    from tocsin.settings import SecretStore, Settings

FOLDER_SCHEME = "folder"


@dataclass(frozen=True, repr=False)
class SecretNote:
    """What the responder receives; its repr never shows the secret."""

    label: str
    """Whose or what's secret, for the file name and the message (alice@contoso.com)."""
    what: str
    """One line saying what the secret is: "Temporary password for alice@contoso.com"."""
    incident: str
    step_id: str
    secret: str
    handling: str
    """What to do with it: "The user must change it at the next sign-in...". """

    def text(self) -> str:
        """The note as the responder reads it (it holds the secret)."""
        return (
            f"{self.what} (incident {self.incident}, step {self.step_id})\n"
            f"{self.secret}\n"
            f"{self.handling}\n"
        )

    def __repr__(self) -> str:
        return f"SecretNote(label={self.label!r}, incident={self.incident!r})"


class StagedDelivery(Protocol):
    def commit(self) -> str:
        """Deliver; a sentence saying where the secret went (never the secret)."""

    def discard(self) -> None:
        """Forget the staged secret: it was never used."""


class SecretDelivery(Protocol):
    def stage(self, note: SecretNote) -> StagedDelivery:
        """Get ready to deliver ``note``; raise a ``TocsinError`` when the channel cannot."""


class FolderDelivery:
    """A 0600 file per secret in a 0700 folder of Tocsin's machine."""

    def __init__(self, folder: Path, *, setting: str = "the secret folder") -> None:
        self.folder = folder
        self.setting = setting
        self._check_folder()  # again at each stage: a folder opened to others since is refused

    def stage(self, note: SecretNote) -> StagedFile:
        self._check_folder()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        base = "-".join(_safe(part) for part in (note.incident, note.step_id, note.label, stamp))
        # Two secrets within a second get two files: a name is never reused.
        unique = f"{base}-{secrets.token_hex(3)}"
        final = self.folder / f"{unique}.txt"
        pending = self.folder / f".{unique}.pending"
        descriptor = os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(note.text())
        return StagedFile(pending, final)

    def _check_folder(self) -> None:
        try:
            mode = self.folder.stat().st_mode
        except OSError as exc:
            raise ConfigurationError(
                f"the folder {self.folder} cannot be used for secrets: {exc.strerror}",
                f"create it (mkdir -m 700) or fix {self.setting}",
            ) from None
        if not stat.S_ISDIR(mode) or mode & 0o077:
            raise ConfigurationError(
                f"the folder {self.folder} is not a folder only its owner can open "
                f"(mode {stat.filemode(mode)})",
                f"chmod 700 {self.folder}; no secret is written where others can read it",
            )


@dataclass(frozen=True)
class StagedFile:
    pending: Path
    final: Path

    def commit(self) -> str:
        try:
            os.link(self.pending, self.final)  # never over an existing file, unlike a rename
        except OSError:
            # The secret is in use by now: the staged file is where it is, say so.
            return f"file {self.pending} (mode 0600; it could not be renamed)"
        self.pending.unlink()
        return f"file {self.final} (mode 0600)"

    def discard(self) -> None:
        self.pending.unlink(missing_ok=True)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9@._]+", "_", text)[:80]


def secret_channel(
    spec: str, settings: Settings, secrets: SecretStore, *, setting: str
) -> SecretDelivery:
    """The channel ``spec`` names (``folder:/path``, ``slack-dm:U0123ABCD``...); ``setting``
    is the setting it came from, named in the errors."""
    from tocsin.integration import installed_integrations

    scheme, colon, target = spec.strip().partition(":")
    offered = {
        name: factory
        for integration in installed_integrations()
        for name, factory in integration.secret_channels.items()
    }
    known = ", ".join(f"{name}:…" for name in [FOLDER_SCHEME, *sorted(offered)])
    if not colon or not target.strip():
        raise ConfigurationError(
            f"{setting} is {spec!r}, which names no channel",
            f"write it as scheme:target, one of {known} (docs/microsoft.md, Password reset)",
        )
    if scheme == FOLDER_SCHEME:
        return FolderDelivery(Path(target.strip()), setting=setting)
    factory = offered.get(scheme)
    if factory is None:
        raise ConfigurationError(
            f"{setting} names the channel {scheme!r}, which no installed integration offers",
            f"use one of {known}",
        )
    return factory(settings, secrets, target.strip())


__all__ = [
    "FolderDelivery",
    "SecretDelivery",
    "SecretNote",
    "StagedDelivery",
    "secret_channel",
]
