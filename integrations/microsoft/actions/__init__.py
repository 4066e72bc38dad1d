"""Microsoft 365 actions: contain a compromised user and clean what the attacker left.

Each action names the user by sign-in address (UPN) or object id, reads before it writes
(so that a second run changes nothing and says so), and returns what it found and what
it changed; docs/microsoft.md lists the application permission each one needs. One module
per job: ``account`` (block, let back in, sign out, mark compromised), ``sign_in_methods``,
``consents``, ``sign_ins``, ``mailbox`` (inbox rules, and the forwarding only Exchange
Online's admin API reaches), ``mailbox_access`` (hidden rules, protocols, delegates: Exchange
Online), ``entra`` (password reset, admin roles). This module holds what they share: how a user is named and
found, and how ``keep`` lists and partly failed removals are judged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Annotated, Any

from pydantic import Field

from tocsin.errors import IntegrationError
from tocsin.integrations.microsoft.client import SERVICE, BatchOutcome, Graph

UserRef = Annotated[
    str,
    Field(
        min_length=3,
        max_length=256,
        description="The user's sign-in address (UPN, alice@contoso.com) or Entra object id",
    ),
]
Keep = Annotated[
    list[str],
    Field(
        description="What to keep, each by id or by name; every entry must match one of the "
        "user's, or nothing is removed (a misspelt name must not remove the genuine one)",
    ),
]

_USER_FIELDS = "id,userPrincipalName,displayName,accountEnabled,onPremisesSyncEnabled"


def find_user(graph: Graph, user: str) -> dict[str, Any]:
    """The user (id, UPN, whether enabled, whether synchronised); a 404 names them."""
    found = graph.call("GET", "/users/{user}", user=user, query={"$select": _USER_FIELDS})
    body = found.body if isinstance(found.body, dict) else {}
    return body


def unmatched(keep: Iterable[str], names: Iterable[set[str]]) -> list[str]:
    """The entries of ``keep`` that name none of the user's things (``names``: each one's keys)."""
    known: set[str] = set().union(*names)
    return [entry for entry in keep if name_key(entry) not in known]


def batch_message(outcome: BatchOutcome) -> str:
    """The error message Graph gave one item of a ``$batch``."""
    error = outcome.body.get("error") if isinstance(outcome.body, dict) else None
    return str(error.get("message", "")) if isinstance(error, dict) else ""


def name_key(text: str) -> str:
    """A name as ``keep`` compares it: without spaces, in lower case."""
    return re.sub(r"\s+", "", text).lower()


def refuse_unknown_keep(
    action_name: str, unknown: Sequence[str], what: str, present: Iterable[str]
) -> None:
    """Stop before anything is removed when ``keep`` names something the user does not have."""
    if unknown:
        # Not retried: the user's data will not change by waiting, the runbook's input must.
        raise IntegrationError(
            action_name,
            SERVICE,
            f"user has no {what} matching {', '.join(repr(u) for u in unknown)} in `keep`; "
            "nothing was removed",
            f"the user's {what}s are: {', '.join(present) or 'none'}; fix `keep` and run the step again",
        )


def failed_items(
    action_name: str, failures: Sequence[tuple[str, IntegrationError]], total: int
) -> IntegrationError:
    """One error for the items a call could not remove, each named, grouped by reason."""
    reasons: dict[str, list[str]] = {}
    for label, error in failures:
        reasons.setdefault(error.message.split(f"{SERVICE} ", 1)[-1], []).append(label)
    listed = "; ".join(f"{', '.join(labels)}: {reason}" for reason, labels in reasons.items())
    hints = sorted({error.hint for _, error in failures if error.hint})
    statuses = {error.status_code for _, error in failures}
    return IntegrationError(
        action_name,
        SERVICE,
        f"could not remove {len(failures)} of {total} item(s)"
        + (" (the others are gone)" if len(failures) < total else "")
        + f": {listed}",
        " / ".join(hints) + "; the step can be run again: what is gone stays gone",
        status_code=statuses.pop() if len(statuses) == 1 else None,
        retryable=all(error.retryable for _, error in failures),
    )
