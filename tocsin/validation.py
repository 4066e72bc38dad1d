"""Load a runbook file and check everything that can be checked before a run.

Two passes. The structure pass (``runbook_structure``) validates the document against the
pydantic model and maps each error back to ``file:line:column``. The semantic pass
(``runbook_semantics``), on a structurally valid runbook, checks what needs the whole
document or the action registry: duplicate step ids, unknown actions, ``with:`` parameters,
template references, approver groups, handlers and their cycles. Every problem found is
reported at once.

A valid runbook may still carry warnings, which do not stop it from loading: a step
calling an action that needs approval (``@action(needs_approval=True)``, a device wipe)
without an approval gate covering it that always runs and stops the run when nobody
answers (``approval_warnings``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from tocsin.action_registry import ActionRegistry
from tocsin.errors import Problem, RunbookError
from tocsin.model import Runbook
from tocsin.runbook_semantics import SemanticChecker
from tocsin.runbook_structure import kind_of, structure_problems
from tocsin.yaml_source import SourceMap, load_yaml_bytes, load_yaml_file, read_runbook_bytes

__all__ = [
    "RUNBOOK_SUFFIXES",
    "LoadedRunbook",
    "Problem",
    "SemanticChecker",
    "ValidationReport",
    "display_path",
    "find_runbook_files",
    "load_runbook",
    "load_runbook_bytes",
    "structure_problems",
    "validate_files",
]

RUNBOOK_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class LoadedRunbook:
    """A validated runbook, where it came from, and the exact bytes that were validated."""

    runbook: Runbook
    path: Path
    source_map: SourceMap
    digest: str
    """sha256 of ``source``: what the run journal and every gate hash are bound to."""
    source: bytes = field(repr=False)
    """The bytes validated: a run executes these, never the file as it is later."""
    warnings: tuple[Problem, ...] = ()
    """What validation advises against without refusing the runbook (located like problems)."""

    @property
    def id(self) -> str:
        return self.runbook.runbook

    @property
    def text(self) -> str:
        """``source`` as text; encoded as UTF-8 it gives ``source`` back, byte for byte."""
        return self.source.decode("utf-8")  # validated as UTF-8 (a BOM stays in the text)


def display_path(path: Path) -> str:
    """``path`` relative to the current folder when it is inside it."""
    try:
        return os.path.relpath(path) if not os.path.relpath(path).startswith("..") else str(path)
    except ValueError:
        return str(path)


def load_runbook(path: Path, registry: ActionRegistry) -> LoadedRunbook:
    """Load and fully validate one runbook file; raise ``RunbookError`` listing every problem."""
    name = display_path(path)
    data = read_runbook_bytes(path, name)  # never more than MAX_BYTES read into memory
    return load_runbook_bytes(data, name, registry, path=path)


def load_runbook_bytes(
    data: bytes, name: str, registry: ActionRegistry, *, path: Path | None = None
) -> LoadedRunbook:
    """Validate a runbook given as bytes; ``name`` is what error locations show."""
    document, source_map = load_yaml_bytes(data, name)
    if not isinstance(document, dict):
        raise RunbookError(
            [
                Problem(
                    source_map.locate(()),
                    "a runbook is a mapping of keys (runbook:, title:, steps:, ...), "
                    f"not {kind_of(document)}",
                    "see docs/runbook-format.md for a complete example",
                )
            ]
        )
    try:
        runbook = Runbook.model_validate(document)
    except ValidationError as exc:
        raise RunbookError(structure_problems(exc, source_map)) from None
    checker = SemanticChecker(runbook, source_map, registry)
    problems = checker.check()
    if problems:
        raise RunbookError(problems)
    return LoadedRunbook(
        runbook=runbook,
        path=path or Path(name),
        source_map=source_map,
        digest=hashlib.sha256(data).hexdigest(),
        source=bytes(data),  # a caller's bytearray changed later cannot change the run
        warnings=tuple(checker.warnings),
    )


# --- files and folders ----------------------------------------------------------------------


NOT_RUNBOOK_FOLDERS = frozenset({"templates"})
"""Folders whose YAML files are not runbooks: an integration's message templates
(``integrations/notify/templates/``), skipped when a folder is walked."""


def find_runbook_files(paths: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """Runbook files under the given files and folders (message-template folders left out),
    and the paths that do not exist."""
    files: list[Path] = []
    missing: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.suffix in RUNBOOK_SUFFIXES
                    and p.is_file()
                    and not NOT_RUNBOOK_FOLDERS & set(p.relative_to(path).parts[:-1])
                )
            )
        elif path.is_file():
            files.append(path)
        else:
            missing.append(path)
    return files, missing


@dataclass
class ValidationReport:
    """The outcome of validating several files."""

    runbooks: list[LoadedRunbook] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    """Advice on valid runbooks; they do not make the report fail."""
    files_checked: int = 0
    declarations: list[str] = field(default_factory=list)
    """Services of the declared HTTP integrations among the files (``tocsin.declared``)."""

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_files(files: Iterable[Path], registry: ActionRegistry) -> ValidationReport:
    """Validate each file; runbook ids must also be unique across the files."""
    report = ValidationReport()
    ids: dict[str, LoadedRunbook] = {}
    from tocsin.declared.load import is_declaration, load_declaration

    for file in files:
        report.files_checked += 1
        try:
            document, _ = load_yaml_file(file, display_path(file))
            if is_declaration(document):
                # A declared integration (integrations/*.yaml) is checked as one, not as a runbook.
                report.declarations.append(load_declaration(file).declaration.service)
                continue
            loaded = load_runbook(file, registry)
        except RunbookError as exc:
            report.problems.extend(exc.problems)
            continue
        if loaded.id in ids:
            report.problems.append(
                Problem(
                    loaded.source_map.locate(("runbook",)),
                    f"runbook id {loaded.id!r} is also used by {display_path(ids[loaded.id].path)}",
                    "runbook ids must be unique: `tocsin run ID` picks a runbook by its id",
                )
            )
            continue
        ids[loaded.id] = loaded
        report.runbooks.append(loaded)
        report.warnings.extend(loaded.warnings)
    return report
