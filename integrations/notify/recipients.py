"""Who a campaign writes to: a CSV file of the recipients folder, or an earlier step's output.

Each row is checked; a row that cannot be sent to is reported by its number, never by its
address (reports and the trail must not quote people's addresses). Duplicates are kept once.

A CSV file is read only from the recipients folder (``notify.recipients_folder``): a
runbook started from Slack or Jira names a file there, and a name that leads outside it
(an absolute path, ``..``, a symbolic link pointing out) is refused, so an input cannot make
Tocsin mail the lines of another file.
"""

from __future__ import annotations

import csv
import io
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tocsin.errors import ConfigurationError

MAX_ROWS = 100_000
MAX_CELL = 2_000
MAX_COLUMNS = 64
MAX_ADDRESS = 254

ADDRESS_COLUMNS = ("email", "e-mail", "mail", "address", "adresse", "adres", "courriel")
NAME_COLUMNS = ("name", "nom", "naam")
LANGUAGE_COLUMNS = ("language", "langue", "taal", "lang")

_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$")
_DOMAIN_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


@dataclass(frozen=True, eq=False, repr=False)
class Recipient:
    """One person to write to; the repr shows the row, never the address or the name."""

    row: int
    """1 for the first data row of a CSV file (or the first item of a list)."""
    address: str
    key_address: str
    """The address as Tocsin compares it (trimmed, lower case): the value its HMAC is of."""
    name: str
    language: str | None
    data: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Recipient(row={self.row})"


@dataclass(frozen=True)
class RecipientProblem:
    row: int
    reason: str
    """Why the row is not sent to, without its address."""


@dataclass(frozen=True)
class RecipientList:
    recipients: list[Recipient]
    problems: list[RecipientProblem]
    duplicates: int
    source: str


def normalized(address: str) -> str:
    """The address as Tocsin compares it and takes its HMAC of: trimmed, lower case."""
    return address.strip().lower()


def check_address(address: str) -> str | None:
    """Why ``address`` cannot be sent to, or None when it can (an RFC 5321 mailbox,
    practically: one @, no spaces or control characters, a domain with a dot)."""
    if not address:
        return "no e-mail address"
    if any(ord(char) < 32 or char == "\x7f" for char in address):
        return "the address holds a control character (a line break?)"
    if len(address) > MAX_ADDRESS:
        return f"the address is longer than {MAX_ADDRESS} characters"
    if "<" in address or ">" in address or " " in address:
        return "not a bare address (a name, spaces or <...> around it)"
    if address.count("@") != 1:
        return "not an e-mail address (no @)" if "@" not in address else "more than one @"
    local, domain = address.split("@")
    if not local or len(local) > 64 or not _LOCAL.match(local):
        return "the part before @ is not valid"
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return "the part before @ has a misplaced dot"
    labels = domain.split(".")
    if len(labels) < 2 or not all(_DOMAIN_LABEL.match(label) for label in labels):
        return "the domain is not valid (like broker-office.be)"
    return None


def read_recipients_file(name: str, folder: Path) -> RecipientList:
    """The recipients of the CSV file ``name`` of ``folder``; see the module docstring."""
    path = _inside(name, folder)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the recipient list {name}: {exc.strerror}",
            f"put the file in {folder}",
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigurationError(
            f"the recipient list {name} is not UTF-8 text",
            "save it as CSV UTF-8 (spreadsheet: Save as > CSV UTF-8)",
        ) from None
    return _parse(text, name)


def _inside(name: str, folder: Path) -> Path:
    hint = f"name a CSV file of the recipients folder {folder} (notify.recipients_folder)"
    if not name or not name.strip():
        raise ConfigurationError("no recipient list was named", hint)
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise ConfigurationError(
            f"the recipient list {name!r} is outside the recipients folder", hint
        )
    try:
        base = folder.resolve(strict=True)
    except OSError:
        raise ConfigurationError(
            f"the recipients folder {folder} does not exist",
            f"create it (mkdir -m 700 {folder}) and put the list there",
        ) from None
    path = (base / relative).resolve()
    if base not in path.parents:
        raise ConfigurationError(
            f"the recipient list {name!r} leads outside the recipients folder (a symbolic link?)",
            hint,
        )
    try:
        mode = os.stat(path).st_mode
    except OSError:
        raise ConfigurationError(f"there is no recipient list {name} in {folder}", hint) from None
    if not stat.S_ISREG(mode):
        raise ConfigurationError(f"the recipient list {name} is not a regular file", hint)
    return path


def _parse(text: str, source: str) -> RecipientList:
    sample = text[:4096]
    delimiter = ";" if sample.count(";") > sample.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise ConfigurationError(
            f"the recipient list {source} is empty", "give a header row: email,name,language"
        ) from None
    except csv.Error as exc:
        raise ConfigurationError(f"the recipient list {source} is not CSV: {exc}", "") from None
    columns = [column.strip().lower() for column in header]
    if len(columns) > MAX_COLUMNS:
        raise ConfigurationError(
            f"the recipient list {source} has {len(columns)} columns, more than {MAX_COLUMNS}",
            "keep the address, name, language and the columns the template reads",
        )
    address_at = _column(columns, ADDRESS_COLUMNS)
    if address_at is None:
        raise ConfigurationError(
            f"the recipient list {source} has no address column (its header is: "
            f"{', '.join(columns)[:200]})",
            f"name the address column one of: {', '.join(ADDRESS_COLUMNS)}",
        )
    name_at = _column(columns, NAME_COLUMNS)
    language_at = _column(columns, LANGUAGE_COLUMNS)
    rows: list[dict[str, Any]] = []
    try:
        for number, cells in enumerate(reader, start=1):
            if number > MAX_ROWS:
                raise ConfigurationError(
                    f"the recipient list {source} has more than {MAX_ROWS:,} rows",
                    "split it into several lists, one campaign each",
                )
            if not any(cell.strip() for cell in cells):
                continue
            for cell in cells:
                if len(cell) > MAX_CELL:
                    raise ConfigurationError(
                        f"row {number} of the recipient list {source} has a value longer than "
                        f"{MAX_CELL} characters",
                        "check the file: a quote left open joins many rows into one",
                    )
            item = {
                columns[i]: cell.strip()
                for i, cell in enumerate(cells[: len(columns)])
                if columns[i] and i not in (name_at, language_at, address_at)
            }
            item["email"] = cells[address_at].strip() if address_at < len(cells) else ""
            if name_at is not None and name_at < len(cells):
                item["name"] = cells[name_at].strip()
            if language_at is not None and language_at < len(cells):
                item["language"] = cells[language_at].strip()
            rows.append({"row": number, **item})
    except csv.Error as exc:
        raise ConfigurationError(f"the recipient list {source} is not CSV: {exc}", "") from None
    return _collect(rows, source)


def _column(columns: Sequence[str], names: Sequence[str]) -> int | None:
    for index, column in enumerate(columns):
        if column in names:
            return index
    return None


def recipients_from_values(values: Sequence[Any], source: str) -> RecipientList:
    """The recipients of an earlier step's output: addresses, or objects with ``email`` (or
    ``address``), ``name``, ``language`` and any other values the template reads."""
    if len(values) > MAX_ROWS:
        raise ConfigurationError(
            f"{source} holds more than {MAX_ROWS:,} recipients",
            "split the campaign into several steps",
        )
    rows: list[dict[str, Any]] = []
    for number, value in enumerate(values, start=1):
        if isinstance(value, str):
            rows.append({"row": number, "email": value.strip()})
        elif isinstance(value, Mapping):
            item = {str(k).lower(): "" if v is None else str(v) for k, v in value.items()}
            address = item.pop("email", "") or item.pop("address", "")
            rows.append({"row": number, **item, "email": address.strip()})
        else:
            rows.append({"row": number, "email": "", "_bad": type(value).__name__})
    return _collect(rows, source)


def _collect(rows: Sequence[Mapping[str, Any]], source: str) -> RecipientList:
    recipients: list[Recipient] = []
    problems: list[RecipientProblem] = []
    first_row: dict[str, int] = {}
    duplicates = 0
    for item in rows:
        number = int(item["row"])
        if "_bad" in item:
            problems.append(
                RecipientProblem(number, f"row {number}: not an address ({item['_bad']})")
            )
            continue
        address = str(item.get("email") or "")
        reason = check_address(address)
        if reason is not None:
            problems.append(RecipientProblem(number, f"row {number}: {reason}"))
            continue
        key = normalized(address)
        if key in first_row:
            duplicates += 1
            continue
        first_row[key] = number
        data = {
            k: str(v)[:MAX_CELL]
            for k, v in item.items()
            if k not in ("row", "email", "name", "language")
        }
        recipients.append(
            Recipient(
                row=number,
                address=address,
                key_address=key,
                name=str(item.get("name") or "")[:MAX_CELL],
                language=str(item.get("language") or "") or None,
                data=data,
            )
        )
    return RecipientList(recipients, problems, duplicates, source)


__all__ = [
    "Recipient",
    "RecipientList",
    "RecipientProblem",
    "check_address",
    "normalized",
    "read_recipients_file",
    "recipients_from_values",
]
