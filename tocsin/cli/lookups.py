"""What commands look up: the settings, the action registry, a runbook, a ticket key."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tocsin.action_registry import ActionRegistry
    from tocsin.tickets import TicketKeys
    from tocsin.validation import LoadedRunbook


def current_settings() -> Any:
    """The settings, read from the environment and the config file."""
    from tocsin.settings import load_settings

    return load_settings()


def action_registry() -> ActionRegistry:
    """The actions of the installed integrations, the configured action modules and the
    declared HTTP integrations; a declaration skipped for its problems is said on stderr."""
    import sys

    from tocsin.action_registry import ActionRegistry
    from tocsin.settings import load_settings

    registry = ActionRegistry.for_settings(load_settings())
    for skipped in registry.skipped:
        # A broken declaration costs its own actions only; say which file and where.
        for problem in skipped.problems:
            print(f"{problem} (declared integration skipped)", file=sys.stderr)
    return registry


def resolve_runbook(reference: str, registry: ActionRegistry) -> LoadedRunbook:
    """Load a runbook given as a file path or as an id found on the search path."""
    from tocsin.catalogue import resolve_runbook as resolve
    from tocsin.settings import load_settings

    return resolve(reference, registry, load_settings())


def configured_ticket_keys(settings: Any) -> TicketKeys:
    """The configured ticket system's key form (Jira's when none is), read from the settings."""
    from tocsin.integration import ticket_keys
    from tocsin.tickets import JIRA_KEYS

    return ticket_keys(settings) or JIRA_KEYS


def checked_ticket(settings: Any, ticket: str, *, or_gateway: bool = False) -> str:
    """``ticket`` as a key of the configured ticket system (``or_gateway``: or the gateway's
    own audit chain); ``InputError`` saying the form keys take."""
    from tocsin.errors import InputError
    from tocsin.incident import check_chain, check_ticket
    from tocsin.integration import ticket_keys
    from tocsin.tickets import JIRA_KEYS

    keys = ticket_keys(settings)
    try:
        return (check_chain if or_gateway else check_ticket)(ticket, keys or JIRA_KEYS)
    except InputError as exc:
        if keys is not None:
            raise
        raise InputError(
            exc.message,
            f"{exc.hint}: Jira's form, used while no ticket system is configured "
            "(configure yours, and its keys are accepted)",
        ) from None
