"""Temporary passwords: made here, sent only to the secure channel the settings name
(``tocsin.secret_delivery``: a 0700 folder, a Slack direct message...), never to the audit
trail, the logs, the step's outputs or Prefect.

The passwords are made with Python's ``secrets`` module: a secret the runbook named would
be one fixed value, known to whoever set it and reused from incident to incident.
"""

from __future__ import annotations

import secrets
import string
from typing import TYPE_CHECKING

from tocsin.errors import ConfigurationError
from tocsin.secret_delivery import FOLDER_SCHEME, SecretDelivery, SecretNote, secret_channel

if TYPE_CHECKING:
    from tocsin.integrations.microsoft.settings import MicrosoftSettings
    from tocsin.settings import SecretStore, Settings

PASSWORD_LENGTH = 24
_SYMBOLS = "!#$%&*+-=?@^_~"
_ALPHABET = string.ascii_letters + string.digits + _SYMBOLS
HANDLING = (
    "The user must change it at the next sign-in. Hand it over by phone or in person, "
    "never to the user's mailbox, then delete this message."
)


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


def password_note(user: str, incident: str, step_id: str, password: str) -> SecretNote:
    """What the person handing the password over receives."""
    return SecretNote(
        label=user,
        what=f"Temporary password for {user}",
        incident=incident,
        step_id=step_id,
        secret=password,
        handling=HANDLING,
    )


def password_delivery(
    microsoft: MicrosoftSettings, settings: Settings, secrets: SecretStore
) -> SecretDelivery:
    """The channel ``microsoft.password_channel`` names, else ``microsoft.password_folder``;
    ``ConfigurationError`` when neither is set."""
    if microsoft.password_channel:
        return secret_channel(
            microsoft.password_channel,
            settings,
            secrets,
            setting="TOCSIN_MICROSOFT__PASSWORD_CHANNEL",
        )
    if microsoft.password_folder is not None:
        return secret_channel(
            f"{FOLDER_SCHEME}:{microsoft.password_folder}",
            settings,
            secrets,
            setting="TOCSIN_MICROSOFT__PASSWORD_FOLDER",
        )
    raise ConfigurationError(
        "no secure channel is configured for temporary passwords, so none is reset",
        "set TOCSIN_MICROSOFT__PASSWORD_CHANNEL (slack-dm:U0123ABCD, a direct message to the "
        "person who hands it over) or TOCSIN_MICROSOFT__PASSWORD_FOLDER (a 0700 folder on this "
        "machine); docs/microsoft.md, Password reset",
    )
