"""The actions available to runbooks, by dotted name: ``ActionRegistry`` collects the
``ActionDefinition`` of each ``@action`` function (``tocsin.actions``) of the installed
integrations' action modules, of the ``action_modules`` setting, and of the declared HTTP
integrations (``tocsin.declared``)."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Iterator
from importlib import import_module
from pathlib import Path
from types import ModuleType

from tocsin.actions import _MARKER, ActionDefinition
from tocsin.errors import ConfigurationError, Problem, RunbookError, UnknownActionError
from tocsin.integration import installed_integrations
from tocsin.settings import Settings

_log = logging.getLogger("tocsin.actions")


def definitions_in(module: ModuleType) -> list[ActionDefinition]:
    """The actions defined in a module, in source order."""
    found = [getattr(value, _MARKER) for value in vars(module).values() if hasattr(value, _MARKER)]
    return [item for item in found if isinstance(item, ActionDefinition)]


class ActionRegistry:
    """The actions available to runbooks, by dotted name."""

    def __init__(self, definitions: Iterable[ActionDefinition] = ()) -> None:
        self._by_name: dict[str, ActionDefinition] = {}
        self.skipped: list[RunbookError] = []
        """Declared integrations left out, each with its located problems."""
        for definition in definitions:
            self.add(definition)

    def add(self, definition: ActionDefinition) -> None:
        existing = self._by_name.get(definition.name)
        if existing is not None and existing is not definition:
            raise ConfigurationError(
                f"two packages define the action {definition.name!r}: "
                f"{existing.module} and {definition.module}",
                "uninstall one of them, or rename the action in your own package",
            )
        self._by_name[definition.name] = definition

    @classmethod
    def from_modules(cls, modules: Iterable[str | ModuleType]) -> ActionRegistry:
        registry = cls()
        for module in modules:
            registry.add_all(import_module(module) if isinstance(module, str) else module)
        return registry

    @classmethod
    def discover(
        cls, extra_modules: Iterable[str] = (), declared_folder: Path | None = None
    ) -> ActionRegistry:
        """The actions of every installed integration, plus those of ``extra_modules``
        (the ``action_modules`` setting: local actions that are not packaged) and of the
        declared HTTP integrations (``tocsin.declared``: the shipped ones and those in
        ``declared_folder``, the ``declared.folder`` setting).

        A declaration with problems is skipped, its problems kept in ``skipped`` (and
        logged), so that one broken file does not stop every command."""
        registry = cls()
        loaded: set[str] = set()
        for integration in installed_integrations():
            for module in integration.action_modules:
                try:
                    imported = _newly_imported(module, loaded)
                except Exception as exc:  # a broken plug-in must not hide which one it is
                    raise ConfigurationError(
                        f"cannot load action package {module!r} (integration "
                        f"{integration.name!r}): {type(exc).__name__}: {exc}",
                        "reinstall or uninstall that package",
                    ) from exc
                registry.add_all(imported)
        for module in extra_modules:
            try:
                imported = _newly_imported(module, loaded)
            except ImportError as exc:
                raise ConfigurationError(
                    f"cannot import action module {module!r} (setting action_modules): {exc}",
                    "check the module name and that it is importable (PYTHONPATH)",
                ) from None
            registry.add_all(imported)
        registry._add_declared(declared_folder)  # last: a clash skips the declaration
        return registry

    def add_all(self, module: ModuleType | None) -> None:
        """The actions ``module`` defines (none: nothing)."""
        for definition in definitions_in(module) if module is not None else ():
            self.add(definition)

    @classmethod
    def for_settings(cls, settings: Settings) -> ActionRegistry:
        """``discover`` with what the settings add (``action_modules``, ``declared.folder``)."""
        return cls.discover(settings.action_modules, settings.declared.folder)

    def _add_declared(self, folder: Path | None) -> None:
        from tocsin.declared.actions import definitions_of
        from tocsin.declared.load import declaration_files, load_declaration

        for path in declaration_files(folder):
            try:
                loaded = load_declaration(path)
            except RunbookError as exc:
                self.skipped.append(exc)
                _log.warning(
                    "skipped the declared integration %s: %s",
                    path,
                    "; ".join(str(problem).replace("\n    ", " ") for problem in exc.problems),
                )
                continue
            definitions = definitions_of(loaded)
            taken = [
                Problem(
                    loaded.source_map.locate(
                        ("operations", definition.name.partition(".")[2]), key=True
                    ),
                    f"{definition.name} is already an action of {self._by_name[definition.name].module}",
                    "rename the operation, or the service (its action namespace)",
                )
                for definition in definitions
                if definition.name in self._by_name
            ]
            if taken:
                self.skipped.append(RunbookError(taken))
                _log.warning("skipped the declared integration %s: %s", path, taken[0].message)
                continue
            for definition in definitions:
                self.add(definition)

    def get(self, name: str) -> ActionDefinition:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownActionError(name, self.suggest(name)) from None

    def suggest(self, name: str) -> list[str]:
        return difflib.get_close_matches(name, list(self._by_name), n=3, cutoff=0.6)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[ActionDefinition]:
        return iter(sorted(self._by_name.values(), key=lambda item: item.name))

    def __len__(self) -> int:
        return len(self._by_name)


def _newly_imported(module: str, loaded: set[str]) -> ModuleType | None:
    """``module`` imported, unless it is in ``loaded`` (None then); added to it."""
    if module in loaded:
        return None
    imported = import_module(module)
    loaded.add(module)
    return imported
