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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar

from pydantic import Field

from tocsin.errors import IntegrationError
from tocsin.integrations.microsoft.client import SERVICE, BatchOutcome, Graph
from tocsin.integrations.microsoft.exchange import ExchangeOnline

if TYPE_CHECKING:
    from tocsin.actions import ActionContext

Thing = TypeVar("Thing")

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


@dataclass(frozen=True)
class FoundUser:
    """The user an action acts on, as Graph names them, and the Graph client it found them with."""

    graph: Graph
    id: str
    upn: str
    fields: dict[str, Any]
    """Everything ``find_user`` read (accountEnabled, onPremisesSyncEnabled...)."""


def look_up_user(context: ActionContext, action_name: str, user: str) -> FoundUser:
    """Graph for ``action_name`` and the user ``user`` names; a 404 names them."""
    graph = Graph.for_action(context, action_name)
    found = find_user(graph, user)
    return FoundUser(graph, str(found["id"]), str(found["userPrincipalName"]), found)


def exchange_for(context: ActionContext, action_name: str, user: str) -> tuple[str, ExchangeOnline]:
    """The user's UPN (found through Graph, which names a missing user) and Exchange Online."""
    found = look_up_user(context, action_name, user)
    return found.upn, ExchangeOnline.for_action(context, action_name)


@dataclass(frozen=True)
class KeepSplit(Generic[Thing]):
    """The user's things a removal considers, split by ``keep``: those kept, those to remove."""

    kept: list[Thing]
    targets: list[Thing]


def split_by_keep(
    action_name: str,
    keep: Iterable[str],
    things: Sequence[Thing],
    *,
    keys: Callable[[Thing], Iterable[str]],
    label: Callable[[Thing], str],
    what: str,
    removable: Callable[[Thing], bool] = lambda _: True,
) -> KeepSplit[Thing]:
    """Split the ``removable`` things into those ``keep`` names (by any of their ``keys``) and
    the rest; refused, nothing removed, when an entry of ``keep`` names none of ``things``."""
    keep = list(keep)
    names = [{name_key(key) for key in keys(thing)} - {""} for thing in things]
    refuse_unknown_keep(action_name, unmatched(keep, names), what, [label(t) for t in things])
    wanted = {name_key(entry) for entry in keep}
    considered = [(t, known) for t, known in zip(things, names, strict=True) if removable(t)]
    return KeepSplit(
        kept=[t for t, known in considered if known & wanted],
        targets=[t for t, known in considered if not known & wanted],
    )


@dataclass
class Removals(Generic[Thing]):
    """What a removal action removed and what it could not, each failure named: the others
    stay removed, and ``removed()`` raises one error naming every failure."""

    action_name: str
    targets: Sequence[Thing]
    gone: list[Thing] = field(default_factory=list)
    failures: list[tuple[str, IntegrationError]] = field(default_factory=list)

    def remove_each(self, remove: Callable[[Thing], object], label: Callable[[Thing], str]) -> None:
        """Remove the targets one at a time, each failure kept with its label."""
        for target in self.targets:
            try:
                remove(target)
            except IntegrationError as error:
                self.failures.append((label(target), error))
            else:
                self.gone.append(target)

    def record(self, target: Thing, outcome: BatchOutcome, label: str) -> None:
        """A ``$batch`` item's outcome: removed, already gone (404, a re-run), or failed."""
        if outcome.ok or outcome.status == 404:
            self.gone.append(target)
        else:
            assert outcome.error is not None
            self.failures.append((label, outcome.error))

    def failed(self, label: str, error: IntegrationError) -> None:
        self.failures.append((label, error))

    def removed(self) -> list[Thing]:
        """What was removed; ``failed_items``' error when anything could not be."""
        if self.failures:
            raise failed_items(self.action_name, self.failures, len(self.targets))
        return self.gone


def unmatched(keep: Iterable[str], names: Iterable[set[str]]) -> list[str]:
    """The entries of ``keep`` that name none of the user's things (``names``: each one's keys)."""
    known: set[str] = set().union(*names)
    return [entry for entry in keep if name_key(entry) not in known]


def batch_message(outcome: BatchOutcome) -> str:
    """The error message Graph gave one item of a ``$batch``."""
    error = outcome.body.get("error") if isinstance(outcome.body, dict) else None
    return str(error.get("message", "")) if isinstance(error, dict) else ""


def odata_literal(text: str) -> str:
    """``text`` inside an OData string literal (``'`` doubled), for a ``$filter``."""
    return text.replace("'", "''")


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
        unapplied=all(error.unapplied for _, error in failures),
        # Removing again is what the step does when retried: it waits as long as the
        # service asked of the item that asked the most.
        retry_after=max(
            (e.retry_after for _, e in failures if e.retry_after is not None), default=None
        ),
    )
