"""Recipient lists: read only from the recipients folder, every row checked, bad rows named by
number without their address, duplicates sent once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tocsin.errors import ConfigurationError
from tocsin.integrations.notify.recipients import (
    MAX_CELL,
    check_address,
    read_recipients_file,
    recipients_from_values,
)


def write(folder: Path, name: str, text: str, *, encoding: str = "utf-8") -> Path:
    path = folder / name
    path.write_text(text, encoding=encoding)
    return path


def test_a_csv_with_names_languages_and_other_columns(tmp_path: Path) -> None:
    write(
        tmp_path,
        "clients.csv",
        "Email,Nom,Langue,contract\na@example.be,Ann,nl,C-1\nB@Example.BE ,Bob,,C-2\n",
    )
    found = read_recipients_file("clients.csv", tmp_path)
    assert [(r.row, r.name, r.language, r.data) for r in found.recipients] == [
        (1, "Ann", "nl", {"contract": "C-1"}),
        (2, "Bob", None, {"contract": "C-2"}),
    ]
    assert found.recipients[1].address == "B@Example.BE"
    assert found.recipients[1].key_address == "b@example.be"
    assert found.problems == [] and found.duplicates == 0
    assert "example" not in repr(found.recipients[0])


def test_excel_csv_with_a_bom_and_semicolons(tmp_path: Path) -> None:
    write(tmp_path, "l.csv", "\ufeffadresse;naam\nc@example.fr;Chloé\n")
    [person] = read_recipients_file("l.csv", tmp_path).recipients
    assert person.address == "c@example.fr" and person.name == "Chloé"


def test_bad_rows_are_reported_by_number_without_their_address(tmp_path: Path) -> None:
    write(
        tmp_path,
        "l.csv",
        'email\nok@example.be\nnot-an-address\nx@nodot\n"Eve <eve@evil.example>"\nok@example.be\n'
        "line@example.be\r\nBcc: a@b.c\n",
    )
    found = read_recipients_file("l.csv", tmp_path)
    assert [r.address for r in found.recipients] == ["ok@example.be", "line@example.be"]
    assert [p.row for p in found.problems] == [2, 3, 4, 7]
    assert found.duplicates == 1
    for problem in found.problems:
        for quoted in ("not-an-address", "nodot", "eve", "evil", "Bcc"):
            assert quoted not in problem.reason


@pytest.mark.parametrize("name", ["../outside.csv", "/etc/passwd", "", "sub/../../x.csv"])
def test_a_name_outside_the_folder_is_refused(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "recipients"
    folder.mkdir()
    write(tmp_path, "outside.csv", "email\na@example.be\n")
    with pytest.raises(ConfigurationError) as caught:
        read_recipients_file(name, folder)
    assert str(folder) in caught.value.hint


def test_a_symbolic_link_leading_out_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "recipients"
    folder.mkdir()
    secret = write(tmp_path, "secret.csv", "email\nboss@example.be\n")
    os.symlink(secret, folder / "clients.csv")
    with pytest.raises(ConfigurationError, match="outside the recipients folder"):
        read_recipients_file("clients.csv", folder)


def test_a_folder_or_a_missing_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    with pytest.raises(ConfigurationError, match="not a regular file"):
        read_recipients_file("adir", tmp_path)
    with pytest.raises(ConfigurationError, match="no recipient list"):
        read_recipients_file("nope.csv", tmp_path)


def test_no_address_column_or_not_utf8_says_what_to_do(tmp_path: Path) -> None:
    write(tmp_path, "a.csv", "nom,tel\nAnn,1\n")
    with pytest.raises(ConfigurationError) as caught:
        read_recipients_file("a.csv", tmp_path)
    assert "email" in caught.value.hint
    (tmp_path / "b.csv").write_bytes("email\nann@exämple.be\n".encode("latin-1"))
    with pytest.raises(ConfigurationError, match="not UTF-8"):
        read_recipients_file("b.csv", tmp_path)


def test_a_runaway_cell_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "l.csv", 'email,name\na@example.be,"' + "x" * (MAX_CELL + 1) + '"\n')
    with pytest.raises(ConfigurationError, match="longer than"):
        read_recipients_file("l.csv", tmp_path)


def test_recipients_from_a_steps_output() -> None:
    found = recipients_from_values(
        [
            "a@example.be",
            {"email": "b@example.be", "name": "Bo", "language": "en", "ref": 7},
            {"address": "c@example.be"},
            42,
            "bad",
        ],
        "step",
    )
    assert [r.address for r in found.recipients] == ["a@example.be", "b@example.be", "c@example.be"]
    assert found.recipients[1].data == {"ref": "7"}
    assert [p.row for p in found.problems] == [4, 5]


@pytest.mark.parametrize(
    ("address", "ok"),
    [
        ("jean.dupont@cabinet-dupont.be", True),
        ("a+tag@example.co.uk", True),
        ("no-at.example.be", False),
        ("two@@example.be", False),
        ("a@b", False),
        ("a b@example.be", False),
        (".a@example.be", False),
        ("a@-example.be", False),
        ("x" * 250 + "@e.be", False),
    ],
)
def test_addresses_are_checked(address: str, ok: bool) -> None:
    assert (check_address(address) is None) is ok
