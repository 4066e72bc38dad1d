"""Finding runbooks by id: the configured folders, ./runbooks, then the runbooks shipped with Tocsin."""

from __future__ import annotations

import difflib
from pathlib import Path

from tocsin.action_registry import ActionRegistry
from tocsin.errors import InputError, RunbookError
from tocsin.settings import Settings
from tocsin.validation import LoadedRunbook, find_runbook_files, load_runbook

SHIPPED = Path(__file__).resolve().parent / "runbooks"


def search_paths(settings: Settings) -> list[Path]:
    """Where runbooks are looked up by id: settings, ./runbooks, then the shipped ones."""
    candidates = [*settings.runbook_paths, Path("runbooks"), SHIPPED]
    seen: set[Path] = set()
    result: list[Path] = []
    for path in candidates:
        resolved = path.resolve()
        if resolved.is_dir() and resolved not in seen:
            seen.add(resolved)
            result.append(path)
    return result


def resolve_runbook(reference: str, registry: ActionRegistry, settings: Settings) -> LoadedRunbook:
    """Load a runbook given as a file path or as an id found on the search path."""
    path = Path(reference)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise InputError(f"no runbook file {reference}", "give a file path or a runbook id")
        return load_runbook(path, registry)
    return runbook_by_id(reference, registry, settings)


def runbook_ids(registry: ActionRegistry, settings: Settings) -> list[str]:
    """The ids of the valid runbooks on the search path."""
    files, _ = find_runbook_files(search_paths(settings))
    ids: list[str] = []
    for file in files:
        try:
            ids.append(load_runbook(file, registry).id)
        except RunbookError:
            continue
    return sorted(set(ids))


def runbook_by_id(runbook_id: str, registry: ActionRegistry, settings: Settings) -> LoadedRunbook:
    """The runbook with this id on the search path (never a file path: Slack and Jira use this)."""
    files, _ = find_runbook_files(search_paths(settings))
    known: list[str] = []
    broken = 0
    for file in files:
        try:
            loaded = load_runbook(file, registry)
        except RunbookError:  # one broken file never hides the others; it is counted below
            broken += 1
            continue
        if loaded.id == runbook_id:
            return loaded
        known.append(loaded.id)
    close = difflib.get_close_matches(runbook_id, known, n=1)
    hint = (
        f"did you mean {close[0]!r}?"
        if close
        else f"known runbooks: {', '.join(sorted(known)) or 'none'}"
    )
    if broken:  # the runbook asked for may be one of them: say so, without naming files
        hint += (
            f"; {broken} runbook file{'s' if broken != 1 else ''} on the search path "
            f"{'have' if broken != 1 else 'has'} problems (`tocsin validate` shows them)"
        )
    raise InputError(f"no runbook with id {runbook_id!r}", hint)
