"""What a Jira issue webhook says: whether it is signed with the shared secret, and the
ticket, runbook and inputs it starts a run with (``TicketTrigger``).

Webhooks registered with a secret (Cloud admin webhooks, Data Center webhooks) carry
``X-Hub-Signature: sha256=<hex HMAC-SHA256 of the raw body>`` and the delivery id in
``X-Atlassian-Webhook-Identifier`` (unchanged when Jira retries a delivery).

``JiraWebhookReader`` is the part of ``JiraTickets`` (``client``) that reads webhooks; its
attributes are set by ``JiraTickets.__init__``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from typing import Any

from tocsin.errors import InputError
from tocsin.tickets import TicketTrigger, parse_inputs_text

SIGNATURE_HEADER = "x-hub-signature"
DELIVERY_ID_HEADER = "x-atlassian-webhook-identifier"
"""The header holding a webhook delivery's id; pass its value to ``parse_webhook``."""


class JiraWebhookReader:
    """Checks and reads the webhooks of the Jira site ``JiraTickets`` stands for."""

    runbook_field: str
    inputs_field: str
    ticket_url: Callable[[str], str]
    _webhook_secret: str | None

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> bool:
        if self._webhook_secret is None:
            return False
        lowered = {name.lower(): value for name, value in headers.items()}
        signature = lowered.get(SIGNATURE_HEADER)
        if not signature:
            return False
        scheme, _, given = signature.strip().partition("=")
        if scheme.lower() != "sha256" or not given:
            return False
        expected = hmac.new(self._webhook_secret.encode("utf-8"), body, hashlib.sha256)
        return hmac.compare_digest(
            expected.hexdigest().encode("ascii"), given.lower().encode("utf-8", "replace")
        )

    def parse_webhook(self, body: bytes, *, delivery_id: str | None = None) -> TicketTrigger:
        """The trigger in a Jira issue webhook; pass the ``X-Atlassian-Webhook-Identifier`` header as ``delivery_id``."""
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise InputError(
                f"the Jira webhook body is not JSON ({exc})", _WEBHOOK_EVENTS_HINT
            ) from None
        if not isinstance(document, dict):
            raise InputError("the Jira webhook body is not a JSON object", _WEBHOOK_EVENTS_HINT)
        event = str(document.get("webhookEvent") or "")
        issue = document.get("issue")
        if not isinstance(issue, dict):
            issue = {}
        key = issue.get("key")
        if not isinstance(key, str) or not key.strip():
            raise InputError(
                f"the Jira webhook ({event or 'no webhookEvent'}) carries no issue key",
                _WEBHOOK_EVENTS_HINT,
            )
        key = key.strip()
        fields = issue.get("fields")
        fields = fields if isinstance(fields, dict) else {}
        summary = fields.get("summary")
        return TicketTrigger(
            ticket=key,
            runbook=self._runbook_of(key, fields.get(self.runbook_field)),
            inputs=self._inputs_of(key, fields.get(self.inputs_field)),
            title=summary if isinstance(summary, str) else "",
            url=self.ticket_url(key),
            requested_by=_requested_by(document.get("user")),
            event=event,
            delivery_id=delivery_id or None,
            requester_email=_requester_email(document.get("user")),
            issue_type=_issue_type(fields.get("issuetype")),
        )

    def _runbook_of(self, ticket: str, value: Any) -> str:
        # A text field holds a string; a select list an option {"value": ...}.
        if isinstance(value, list):
            if len(value) > 1:
                raise InputError(
                    f"ticket {ticket} names {len(value)} runbooks in field {self.runbook_field}",
                    "choose exactly one runbook in the ticket",
                )
            value = value[0] if value else None
        if isinstance(value, dict):
            value = value.get("value", value.get("name"))
        if value is None:
            return ""
        if not isinstance(value, str):
            raise InputError(
                f"ticket {ticket}: field {self.runbook_field} holds {type(value).__name__}, "
                "not a runbook name",
                "settings.jira.runbook_field must name a text or select-list field",
            )
        return value.strip()

    def _inputs_of(self, ticket: str, value: Any) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, str):
            raise InputError(
                f"ticket {ticket}: field {self.inputs_field} holds {type(value).__name__}, "
                "not text",
                "settings.jira.inputs_field must name a multi-line text field",
            )
        try:
            return parse_inputs_text(value)
        except InputError as exc:
            raise InputError(
                f"ticket {ticket}, field {self.inputs_field}: {exc.message}", exc.hint
            ) from None


_WEBHOOK_EVENTS_HINT = (
    "Tocsin reads the JSON Jira sends for issue events; register the webhook in Jira for "
    "'Issue created' / 'Issue updated' events only"
)


def _requester_email(user: Any) -> str:
    # Jira Cloud shares it only when the user's profile visibility allows; Data Center does.
    email = user.get("emailAddress") if isinstance(user, dict) else None
    return email.strip() if isinstance(email, str) and "@" in email else ""


def _issue_type(value: Any) -> str:
    name = value.get("name") if isinstance(value, dict) else None
    return name.strip()[:64] if isinstance(name, str) else ""


def _requested_by(user: Any) -> str:
    if isinstance(user, dict):
        for key in ("displayName", "accountId", "name", "key"):
            value = user.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
    return "unknown Jira user"
