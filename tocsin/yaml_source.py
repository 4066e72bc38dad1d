"""Safe YAML loading that remembers where every value came from.

PyYAML composes the document into nodes (which carry line and column); this
module turns the nodes into plain Python values itself, so that it can refuse
what a runbook never needs (duplicate keys, Python tags, alias bombs, recursive
aliases, huge files) and record a ``Location`` for every path such as
``("steps", 2, "with", "user")``.

Limits, each refused with the place where it was crossed (docs/runbook-format.md, "Limits"):

* ``MAX_BYTES``: the file, checked before it is read whole;
* ``MAX_DEPTH``: nesting, checked while PyYAML composes (its composer recurses, so a file
  nested thousands deep would otherwise end in ``RecursionError``);
* ``MAX_NODES`` and ``MAX_EXPANDED_BYTES``: values and characters of text once every
  alias is expanded, so that a small file cannot make validation build or walk megabytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from tocsin.errors import Location, Problem, RunbookError

MAX_BYTES = 1024 * 1024
MAX_NODES = 50_000
MAX_DEPTH = 64
MAX_EXPANDED_BYTES = 2 * MAX_BYTES
_DEPTH_HINT = (
    "a runbook needs a handful of levels (steps, a step, its `with:`, a value); "
    "flatten the structure"
)
_ALIAS_HINT = (
    "each alias repeats its anchor's whole value; write shared values once or split the runbook"
)

PathKey = tuple[str | int, ...]

_SCALAR_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:timestamp",
}
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass
class SourceMap:
    """Where each value (and each mapping key) of a loaded document sits in its file."""

    file: str
    values: dict[PathKey, Location] = field(default_factory=dict)
    keys: dict[PathKey, Location] = field(default_factory=dict)
    block_scalars: set[PathKey] = field(default_factory=set)

    def locate(self, path: PathKey, *, key: bool = False) -> Location:
        """The location of ``path``, or of its nearest ancestor that exists in the file."""
        if key and path in self.keys:
            return self.keys[path]
        probe = path
        while probe:
            if probe in self.values:
                return self.values[probe]
            probe = probe[:-1]
        return self.values.get((), Location(self.file, 1, 1))

    def is_block_scalar(self, path: PathKey) -> bool:
        """True when the value at ``path`` was written as a ``|`` or ``>`` block."""
        return path in self.block_scalars


@dataclass
class _Budget:
    nodes: int = 0
    text: int = 0


class _LimitExceeded(Exception):
    """Raised inside PyYAML's composer; turned into a located ``RunbookError``."""

    def __init__(self, mark: Any, message: str, hint: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message
        self.hint = hint


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with a depth and node budget, and aliases that keep their place.

    An alias is composed as a shallow copy of its anchor's node carrying the alias's own
    position, so that a limit crossed while expanding it is reported where the alias is
    written. A copy shares its anchor's ``value``: a recursive alias is still recognised.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0
        self.composed = 0
        self.alias_copies: set[int] = set()
        self._copies: list[Node] = []  # keeps the copies (and so their ids) alive

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        if self.check_event(AliasEvent):
            anchored = super().compose_node(parent, index)
            return self._alias_copy(anchored, mark) if anchored is not None else None
        self.depth += 1
        self.composed += 1
        if self.depth > MAX_DEPTH:
            raise _LimitExceeded(
                mark, f"values are nested more than {MAX_DEPTH} levels deep", _DEPTH_HINT
            )
        if self.composed > 2 * MAX_NODES:  # keys and values: memory, before expansion
            raise _LimitExceeded(
                mark,
                f"the document holds more than {2 * MAX_NODES} keys and values",
                "split the procedure into several runbooks",
            )
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        return node

    def _alias_copy(self, node: Node, mark: Any) -> Node:
        copy: Node
        if isinstance(node, ScalarNode):
            copy = ScalarNode(node.tag, node.value, mark, mark, style=node.style)
        elif isinstance(node, SequenceNode):
            copy = SequenceNode(node.tag, node.value, mark, mark, flow_style=node.flow_style)
        elif isinstance(node, MappingNode):
            copy = MappingNode(node.tag, node.value, mark, mark, flow_style=node.flow_style)
        else:  # pragma: no cover - PyYAML composes only these three
            return node
        self._copies.append(copy)
        self.alias_copies.add(id(copy))
        return copy


def read_runbook_bytes(path: Path, name: str) -> bytes:
    """The bytes of a runbook file, never reading more than ``MAX_BYTES`` (+1) of it."""
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_BYTES + 1)
    except OSError as exc:
        raise _single(name, f"cannot read file: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise _single(
            name,
            f"the file is larger than {MAX_BYTES // 1024} KiB; a runbook may be at most "
            f"{MAX_BYTES // 1024} KiB",
            "split the procedure into several runbooks",
        )
    return data


def load_yaml_file(path: Path, display_name: str | None = None) -> tuple[Any, SourceMap]:
    """Read and load one YAML file; raise ``RunbookError`` with a located problem if it cannot."""
    name = display_name or str(path)
    return load_yaml_bytes(read_runbook_bytes(path, name), name)


def load_yaml_bytes(data: bytes, name: str) -> tuple[Any, SourceMap]:
    """Load one YAML document from bytes; see ``load_yaml_file``."""
    if len(data) > MAX_BYTES:
        raise _single(
            name,
            f"document is {len(data) // 1024} KiB; a runbook may be at most "
            f"{MAX_BYTES // 1024} KiB",
            "split the procedure into several runbooks",
        )
    if b"\x00" in data:
        raise _single(name, "this is a binary file, not a YAML runbook")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise _single(
            name,
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line})",
            "save the runbook as UTF-8",
            line=line,
        ) from None
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
    except _LimitExceeded as exc:
        location = Location(name, exc.mark.line + 1, exc.mark.column + 1)
        raise RunbookError([Problem(location, exc.message, exc.hint)]) from None
    except yaml.MarkedYAMLError as exc:
        raise _from_yaml_error(name, exc) from None
    except yaml.YAMLError as exc:
        raise _single(name, f"not valid YAML: {exc}") from None
    except RecursionError:  # the depth limit should make this unreachable; never a crash
        raise _single(name, "values are nested too deeply to load", _DEPTH_HINT) from None
    finally:
        loader.dispose()
    source_map = SourceMap(name)
    if node is None:
        raise _single(
            name, "the file is empty", "start from `tocsin schema` or docs/runbook-format.md"
        )
    builder = _Builder(name, source_map, loader.alias_copies)
    value = builder.build(node, (), depth=0, active=set(), alias=None)
    if builder.problems:
        raise RunbookError(builder.problems)
    return value, source_map


class _Builder:
    def __init__(self, name: str, source_map: SourceMap, alias_copies: set[int]) -> None:
        self.name = name
        self.map = source_map
        self.alias_copies = alias_copies
        self.budget = _Budget()
        self.problems: list[Problem] = []
        self.constructor = SafeConstructor()

    def _loc(self, node: Node) -> Location:
        return Location(self.name, node.start_mark.line + 1, node.start_mark.column + 1)

    def _refuse(self, node: Node, alias: Node | None, message: str, hint: str = "") -> None:
        """Stop loading: a limit was crossed at ``node`` (reported at the alias expanding it)."""
        raise RunbookError([Problem(self._loc(alias or node), message, hint)])

    def _count_text(self, node: Node, alias: Node | None) -> None:
        self.budget.text += len(node.value)
        if self.budget.text > MAX_EXPANDED_BYTES:
            self._refuse(
                node,
                alias,
                f"the document expands to more than {MAX_EXPANDED_BYTES // 1024} KiB of text "
                "once its aliases are expanded",
                _ALIAS_HINT,
            )

    def build(
        self, node: Node, path: PathKey, *, depth: int, active: set[int], alias: Node | None
    ) -> Any:
        if alias is None and id(node) in self.alias_copies:
            alias = node  # a limit crossed inside an alias is reported where the alias is written
        self.budget.nodes += 1
        if self.budget.nodes > MAX_NODES:
            self._refuse(
                node,
                alias,
                f"the document expands to more than {MAX_NODES} values (alias expansion bomb?)",
                "runbooks do not need deeply nested anchors and aliases; write the values out",
            )
        if depth > MAX_DEPTH:
            self._refuse(
                node, alias, f"values are nested more than {MAX_DEPTH} levels deep", _DEPTH_HINT
            )
        self.map.values.setdefault(path, self._loc(node))
        if isinstance(node, ScalarNode):
            self._count_text(node, alias)
            return self._scalar(node, path)
        # an alias copy shares its anchor's list of children: that list identifies the value
        if id(node.value) in active:
            self._refuse(
                node, None, "an alias refers to a value that contains it (recursive alias)"
            )
        active = active | {id(node.value)}
        if isinstance(node, SequenceNode):
            self._check_plain_tag(node, "tag:yaml.org,2002:seq")
            return [
                self.build(item, (*path, index), depth=depth + 1, active=active, alias=alias)
                for index, item in enumerate(node.value)
            ]
        if isinstance(node, MappingNode):
            self._check_plain_tag(node, "tag:yaml.org,2002:map")
            return self._mapping(node, path, depth=depth, active=active, alias=alias)
        raise RunbookError([Problem(self._loc(node), "unsupported YAML node")])  # pragma: no cover

    def _check_plain_tag(self, node: Node, expected: str) -> None:
        if node.tag != expected:
            self.problems.append(
                Problem(
                    self._loc(node),
                    f"YAML tag {_shown_tag(node.tag)} is not allowed in a runbook",
                    "remove the tag; runbooks hold plain strings, numbers, lists and mappings",
                )
            )

    def _scalar(self, node: ScalarNode, path: PathKey) -> Any:
        if node.tag not in _SCALAR_TAGS:
            self.problems.append(
                Problem(
                    self._loc(node),
                    f"YAML tag {_shown_tag(node.tag)} is not allowed in a runbook",
                    "remove the tag; runbooks hold plain strings, numbers, lists and mappings",
                )
            )
            return node.value
        if node.style in ("|", ">"):
            self.map.block_scalars.add(path)
        if node.tag == "tag:yaml.org,2002:timestamp":
            return node.value  # dates stay text: runbooks never compute with them
        try:
            value = self.constructor.construct_object(node, deep=True)
        except ConstructorError as exc:
            self.problems.append(Problem(self._loc(node), f"bad value: {exc.problem}"))
            return node.value
        return value

    def _mapping(
        self,
        node: MappingNode,
        path: PathKey,
        *,
        depth: int,
        active: set[int],
        alias: Node | None,
    ) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first_seen: dict[str, Location] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                for key, value in self._merge_sources(value_node, path, depth, active, alias):
                    merged.setdefault(key, value)
                continue
            if not isinstance(key_node, ScalarNode) or key_node.tag not in _SCALAR_TAGS:
                self.problems.append(
                    Problem(
                        self._loc(key_node),
                        "mapping keys must be plain names",
                    )
                )
                continue
            self._count_text(key_node, alias)
            key = str(self.constructor.construct_object(key_node))
            if key_node.tag == "tag:yaml.org,2002:bool" or key_node.tag == "tag:yaml.org,2002:null":
                key = key_node.value  # `on:` or `yes:` as a key means the word, not a boolean
            key_loc = self._loc(key_node)
            if key in first_seen:
                self.problems.append(
                    Problem(
                        key_loc,
                        f"duplicate key {key!r} (first defined on line {first_seen[key].line})",
                        "YAML keeps only the last value silently; remove or rename one of them",
                    )
                )
                continue
            first_seen[key] = key_loc
            self.map.keys[(*path, key)] = key_loc
            result[key] = self.build(
                value_node, (*path, key), depth=depth + 1, active=active, alias=alias
            )
        for key, value in merged.items():
            result.setdefault(key, value)
        return result

    def _merge_sources(
        self, node: Node, path: PathKey, depth: int, active: set[int], alias: Node | None
    ) -> Iterator[tuple[str, Any]]:
        sources = node.value if isinstance(node, SequenceNode) else [node]
        for source in sources:
            value = self.build(source, path, depth=depth + 1, active=active, alias=alias)
            if not isinstance(value, dict):
                self.problems.append(
                    Problem(
                        self._loc(source),
                        "`<<:` can only merge a mapping",
                    )
                )
                continue
            yield from value.items()


def _from_yaml_error(name: str, exc: yaml.MarkedYAMLError) -> RunbookError:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else 1
    column = mark.column + 1 if mark else 1
    problem = exc.problem or "not valid YAML"
    context = f" ({exc.context})" if exc.context else ""
    if exc.context and exc.context_mark and mark and exc.context_mark.line != mark.line:
        context = f" ({exc.context} that starts on line {exc.context_mark.line + 1})"
    hint = "check indentation and quoting around this place"
    if "found character '\\t'" in problem:
        hint = "YAML indents with spaces, never tabs"
    elif "mapping values are not allowed" in problem:
        hint = "quote a value that contains ': ' (for example a prompt or a URL)"
    elif "another document" in problem:
        hint = "a runbook file holds exactly one document; remove the `---` separator"
    return RunbookError(
        [Problem(Location(name, line, column), f"not valid YAML: {problem}{context}", hint)]
    )


def _single(name: str, message: str, hint: str = "", *, line: int = 1) -> RunbookError:
    return RunbookError([Problem(Location(name, line, 1), message, hint)])


def _shown_tag(tag: str) -> str:
    return (
        "!!" + tag.removeprefix("tag:yaml.org,2002:")
        if tag.startswith("tag:yaml.org,2002:")
        else tag
    )
