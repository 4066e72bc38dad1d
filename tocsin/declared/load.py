"""Reading declaration files, with every problem located (file:line) like a runbook's.

``load_declaration`` checks the structure (``tocsin.declared.model``) and then what needs the
whole file: each template parses and names declared parameters only, each ``{name}`` of a
path is a whole segment, no path leaves the base URL (``..``, ``//host``, ``https://``), the
auth's secret is declared, the error pointers are pointers. ``declaration_files`` lists the
shipped files and those of the ``declared.folder`` setting.
"""

from __future__ import annotations

import difflib
import json
import re
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from pydantic import BaseModel, TypeAdapter, ValidationError

from tocsin.declared.model import Declaration, Defaults, ErrorShape, Operation, Parameter, Retry
from tocsin.errors import Location, Problem, RunbookError
from tocsin.outbound.urls import _is_dot_segment, _parse, _Refused
from tocsin.templating import contains_template, parse_template
from tocsin.validation import display_path, structure_problems
from tocsin.yaml_source import PathKey, SourceMap, load_yaml_file

SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class LoadedDeclaration:
    """A declaration that passed every check, and the file it came from."""

    declaration: Declaration
    file: str
    source_map: SourceMap


def shipped_folder() -> Path:
    """Where Tocsin's own declarations are (``integrations/*.yaml``)."""
    # The folder beside the integration packages, found as a path: the core never imports them.
    return (Path(__file__).resolve().parent.parent / "integrations").resolve()


def declaration_files(folder: Path | None) -> list[Path]:
    """The shipped declaration files, then those of ``folder`` (the ``declared.folder`` setting)."""
    files = _yaml_in(shipped_folder())
    if folder is not None and folder.resolve() != shipped_folder().resolve():
        files.extend(_yaml_in(folder))
    return files


def _yaml_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file())


def is_declaration(document: Any) -> bool:
    """Whether a loaded YAML document is a declaration (it names a ``service:``), not a runbook."""
    return isinstance(document, dict) and "service" in document and "runbook" not in document


def load_declaration(path: Path) -> LoadedDeclaration:
    """Load and check one declaration file; ``RunbookError`` lists every located problem."""
    name = display_path(path)
    document, source_map = load_yaml_file(path, name)
    if not isinstance(document, dict):
        raise RunbookError(
            [
                Problem(
                    source_map.locate(()),
                    "a declaration is a mapping (service:, base_url:, operations:, ...)",
                    "see docs/declared-integrations.md",
                )
            ]
        )
    try:
        declaration = Declaration.model_validate(document)
    except ValidationError as exc:
        raise RunbookError(
            [_as_declaration(problem, document) for problem in structure_problems(exc, source_map)]
        ) from None
    problems = list(_Checker(declaration, source_map).problems())
    if problems:
        raise RunbookError(problems)
    return LoadedDeclaration(declaration, name, source_map)


_UNKNOWN_KEY = re.compile(r"^unknown key `(?P<key>[^`]+)` in `(?P<where>[^`]+)`$")
_MODELS: dict[tuple[str, ...], type[BaseModel]] = {
    (): Declaration,
    ("defaults",): Defaults,
    ("defaults", "retry"): Retry,
    ("error",): ErrorShape,
    ("operations", "*"): Operation,
    ("operations", "*", "retry"): Retry,
    ("operations", "*", "error"): ErrorShape,
    ("operations", "*", "parameters", "*"): Parameter,
}


def _as_declaration(problem: Problem, document: Any) -> Problem:
    """A structure problem worded for a declaration: the shared wording says "runbook" and
    suggests a runbook's keys."""
    message = problem.message.replace("the runbook", "the declaration")
    hint = "see docs/declared-integrations.md"
    unknown = _UNKNOWN_KEY.match(message)
    if unknown is not None:
        where = tuple(unknown.group("where").split("."))
        shape = tuple(
            "*" if i % 2 and where[i - 1] in ("operations", "parameters") else part
            for i, part in enumerate(where)
        )
        model = _MODELS.get(shape)
        if model is not None:
            keys = list(model.model_fields)
            close = difflib.get_close_matches(unknown.group("key"), keys, n=1, cutoff=0.6)
            hint = (
                f"did you mean {close[0]!r}?" if close else f"allowed keys here: {', '.join(keys)}"
            )
    elif message.startswith("the declaration is missing") or "missing the required key" in message:
        hint = "see docs/declared-integrations.md for the keys each part needs"
    return Problem(problem.location, message, hint)


class _Checker:
    """What a declaration needs besides its structure; every finding located."""

    def __init__(self, declaration: Declaration, source_map: SourceMap) -> None:
        self.declaration = declaration
        self.source_map = source_map

    def at(self, path: PathKey, *, key: bool = False) -> Location:
        return self.source_map.locate(path, key=key)

    def problems(self) -> Iterator[Problem]:
        declaration = self.declaration
        yield from self._base_url()
        named = declaration.auth_secret()
        if named is not None and named[1] not in declaration.secrets:
            key, secret = named
            yield Problem(
                self.at(("auth", key)),
                f"the auth uses the secret {secret!r}, which the declaration does not declare",
                f"declare it under `secrets:` with what it holds ({secret}: ...), so that "
                f"`tocsin integrations` and the plan name TOCSIN_SECRET_{secret.upper()}",
            )
        for name, operation in declaration.operations.items():
            yield from self._operation(("operations", name), operation)

    def _base_url(self) -> Iterator[Problem]:
        base_url = self.declaration.base_url
        try:
            _parse(base_url)
        except _Refused as exc:
            yield Problem(self.at(("base_url",)), f"`base_url` {base_url!r}: {exc.message}")
            return
        if "?" in base_url or "#" in base_url:
            yield Problem(
                self.at(("base_url",)),
                f"`base_url` {base_url!r} has a query or a fragment",
                "give http(s)://host[:port][/path] only",
            )

    def _operation(self, where: PathKey, operation: Operation) -> Iterator[Problem]:
        parameters = set(operation.parameters)
        yield from self._path(where, operation.path, parameters)
        templated: list[tuple[PathKey, str]] = [
            ((*where, "query", key), value) for key, value in operation.query.items()
        ]
        try:
            json.dumps(operation.body, allow_nan=False)
        except (TypeError, ValueError):
            yield Problem(
                self.at((*where, "body")),
                "`body` holds a value JSON cannot carry (infinity, not-a-number)",
                "quote it to send it as text, or give a number",
            )
        templated.extend(_strings((*where, "body"), operation.body))
        if operation.describe is not None:
            templated.append(((*where, "describe"), operation.describe))
        for path, text in templated:
            yield from self._template(path, text, parameters)
        for name, parameter in operation.parameters.items():
            at = (*where, "parameters", name)
            if parameter.type == "enum" and not parameter.values:
                yield Problem(
                    self.at(at),
                    f"parameter {name!r} is an enum without `values:`",
                    "list the values it may take",
                )
                continue
            if parameter.type != "enum" and parameter.values is not None:
                yield Problem(
                    self.at((*at, "values"), key=True),
                    f"parameter {name!r} has `values:` but is of type {parameter.type}",
                    "use `type: enum` for a closed list of values",
                )
            if parameter.pattern is not None and parameter.type not in ("string", "list"):
                yield Problem(
                    self.at((*at, "pattern"), key=True),
                    f"parameter {name!r} has a `pattern:` but is of type {parameter.type}",
                    "a pattern applies to string parameters (and the items of lists)",
                )
            try:
                checker = TypeAdapter(parameter.annotation())
            except Exception as exc:  # a pattern pydantic cannot compile, whatever its error
                yield Problem(
                    self.at((*at, "pattern"), key=True),
                    f"parameter {name!r}: its pattern cannot be used: {str(exc).splitlines()[0]}",
                    "write a regular expression without look-arounds or back-references",
                )
                continue
            if not parameter.required and parameter.default is not None:
                try:
                    checker.validate_python(parameter.default)
                except ValidationError as exc:
                    yield Problem(
                        self.at((*at, "default")),
                        f"parameter {name!r}: the default {parameter.default!r} is not a valid "
                        f"{parameter.type}: {exc.errors()[0]['msg']}",
                        "give a default of the parameter's own type",
                    )
            if parameter.required and parameter.default is not None:
                yield Problem(
                    self.at((*at, "default"), key=True),
                    f"parameter {name!r} is required and has a default",
                    "set `required: false` to give it a default",
                )
        for name, pointer in operation.outputs.items():
            if pointer and not pointer.startswith("/"):
                yield Problem(
                    self.at((*where, "outputs", name)),
                    f"output {name!r}: {pointer!r} is not a JSON pointer",
                    "write a JSON pointer into the answer, like /status or /rules/0/id",
                )

    def _path(self, where: PathKey, path: str, parameters: set[str]) -> Iterator[Problem]:
        at = self.at((*where, "path"))
        if not path.startswith("/") or path.startswith("//") or "://" in path:
            yield Problem(
                at,
                f"`path` {path!r} must be a path under the base URL, starting with a single /",
                "write the host in `base_url`; a path cannot name another host or scheme",
            )
            return
        if any(c in path for c in "?#\\") or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in path):
            yield Problem(
                at,
                f"`path` {path!r} contains ?, #, a backslash, a space or a control character",
                "give query parameters under `query:`; a path holds segments only",
            )
            return
        if contains_template(path):
            yield Problem(
                at,
                f"`path` {path!r} uses {{{{ }}}}: a path takes {{name}} placeholders only",
                "write /offices/{office_id}/disconnect: each {name} is encoded as one segment",
            )
            return
        for segment in path.split("/")[1:]:
            if _is_dot_segment(segment) or _is_dot_segment(unquote(segment)):
                yield Problem(
                    at,
                    f"`path` {path!r} has the segment {segment!r}, which climbs out of its place "
                    "(possibly out of the base URL)",
                    "write the path under the base URL without . or .. segments",
                )
                return
            try:
                pieces = list(string.Formatter().parse(segment))
            except ValueError as exc:
                yield Problem(at, f"`path` {path!r}: {exc}", "write {name} with both braces")
                return
            names = [field for _, field, _, _ in pieces if field is not None]
            if not names:
                continue
            if len(pieces) != 1 or pieces[0][0] or pieces[0][2] or pieces[0][3]:
                yield Problem(
                    at,
                    f"`path` {path!r}: the segment {segment!r} mixes a placeholder with other "
                    "text; a parameter fills a whole segment",
                    "write the placeholder alone between slashes: /rules/{rule_id}",
                )
                return
            if names[0] not in parameters:
                yield Problem(
                    at,
                    f"`path` {path!r} names {{{names[0]}}}, which is not a parameter of the "
                    "operation",
                    _choices(parameters),
                )

    def _template(self, path: PathKey, text: str, parameters: set[str]) -> Iterator[Problem]:
        parsed = parse_template(text)
        base = self.at(path)
        for issue in parsed.issues:
            yield Problem(
                Location(base.file, base.line + issue.line - 1, base.column),
                f"{_shown(path)}: {issue.message}",
                issue.hint,
            )
        for reference in parsed.references:
            if reference.root not in parameters:
                yield Problem(
                    Location(base.file, base.line + reference.line - 1, base.column),
                    f"{_shown(path)} reads {reference.root!r}, which is not a parameter of "
                    "the operation",
                    _choices(parameters),
                )


def _strings(where: PathKey, value: Any) -> Iterable[tuple[PathKey, str]]:
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings((*where, key), item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings((*where, index), item)


def _shown(path: PathKey) -> str:
    return "`" + ".".join(str(part) for part in path) + "`"


def _choices(parameters: set[str]) -> str:
    if not parameters:
        return "declare it under the operation's `parameters:`"
    return f"the operation's parameters: {', '.join(sorted(parameters))}; or declare it"
