"""The toy's ticket desk: a ticket system whose keys look like ServiceNow's (``INC0010001``).

It exists to show that the CLI checks keys in the configured ticket system's form without
building it: building it needs the toy's token, checking a key does not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from tests.toy_integration import TOKEN_SECRET
from tocsin.errors import ConfigurationError, InputError, IntegrationError
from tocsin.settings import SecretStore
from tocsin.tickets import TicketKeys, TicketTrigger

SERVICENOW_STYLE_KEYS = TicketKeys(
    re.compile(r"INC[0-9]{7}"), example="INC0010001", described="INC and seven digits"
)


class ToyDesk:
    """A ``TicketSystem`` that knows its keys and its tickets' URLs, and keeps nothing else."""

    name = "toy"
    keys = SERVICENOW_STYLE_KEYS

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self._token = token

    @classmethod
    def from_settings(cls, url: str, secrets: SecretStore) -> ToyDesk:
        token = secrets.get(TOKEN_SECRET)
        if not token:
            raise ConfigurationError(
                "secret 'toy_token' is not set", "set TOCSIN_SECRET_TOY_TOKEN to the desk's token"
            )
        return cls(url, token)

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> bool:
        return False  # the toy desk sends no webhooks

    def parse_webhook(self, body: bytes, *, delivery_id: str | None = None) -> TicketTrigger:
        raise InputError("the toy desk sends no webhooks")

    def comment(self, ticket: str, text: str) -> str:
        raise IntegrationError("toy.comment", "toy desk", "keeps no comments")

    def attach(self, ticket: str, filename: str, content: bytes, media_type: str) -> str:
        raise IntegrationError("toy.attach", "toy desk", "keeps no files")

    def ticket_url(self, ticket: str) -> str:
        return f"{self.url}/tickets/{ticket}"
