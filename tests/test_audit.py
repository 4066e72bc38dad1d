"""The audit trail: chain, checkpoints, tampering of every kind, exports verified offline."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, insert, select, text, update

from tests.cli_runner import run_tocsin
from tocsin.audit import (
    GENESIS,
    AuditKey,
    Redactor,
    chain_hash,
    public_path,
    record_body,
    verify_chain,
)
from tocsin.journal import Journal, checkpoints, events

TICKET = "INC-7"
RECORDS = 20
EVERY = 5


@pytest.fixture()
def key(tmp_path: Path) -> AuditKey:
    return AuditKey.generate(tmp_path / "keys" / "signing.key")


@pytest.fixture()
def journal(tmp_path: Path, key: AuditKey) -> Iterator[Journal]:
    journal = Journal(f"sqlite:///{tmp_path / 'journal.db'}", audit_key=key, checkpoint_every=EVERY)
    for number in range(1, RECORDS + 1):
        journal.record(TICKET, "step.succeeded", step_id=f"step_{number}", n=number)
    yield journal
    journal.close()


def problems(journal: Journal, key: AuditKey, anchor: str | None = None) -> list[str]:
    return [p.message for p in journal.verify(TICKET, key.public_key, anchor=anchor).problems]


def test_an_untouched_chain_verifies_with_its_checkpoints(journal: Journal, key: AuditKey) -> None:
    result = journal.verify(TICKET, key.public_key)
    assert result.ok, result.problems
    assert result.records == RECORDS
    assert result.checkpoints == 1 + RECORDS // EVERY  # the first record, then every 5th
    assert result.last_checkpoint_seq == RECORDS
    records = journal.audit_records(TICKET)
    assert [r.seq for r in records] == list(range(1, RECORDS + 1))
    assert records[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in zip(records, records[1:], strict=False))
    assert result.head == records[-1].hash


def test_a_modified_record_is_named(journal: Journal, key: AuditKey) -> None:
    with journal.transaction() as db:
        db.execute(
            update(events)
            .where(events.c.incident == TICKET, events.c.seq == 7)
            .values(data={"n": 700})
        )
    found = problems(journal, key)
    assert len(found) == 1
    assert found[0].startswith("record 7 (step.succeeded step_7, ")
    assert "was modified" in found[0]


def test_a_modified_actor_or_time_is_caught_too(journal: Journal, key: AuditKey) -> None:
    with journal.transaction() as db:
        db.execute(
            update(events)
            .where(events.c.incident == TICKET, events.c.seq == 3)
            .values(actor="U0SOMEONEELSE")
        )
    assert ["record 3" in p and "was modified" in p for p in problems(journal, key)] == [True]


def test_a_deleted_record_is_named(journal: Journal, key: AuditKey) -> None:
    with journal.transaction() as db:
        db.execute(delete(events).where(events.c.incident == TICKET, events.c.seq == 12))
    found = problems(journal, key)
    assert found[0] == "record 12 is missing (deleted): the chain jumps to 13"


def test_an_inserted_record_is_named(journal: Journal, key: AuditKey) -> None:
    """A forged record slipped in at 8, the later ones renumbered: even a valid hash shows."""
    with journal.transaction() as db:
        for seq in range(RECORDS, 7, -1):
            db.execute(
                update(events)
                .where(events.c.incident == TICKET, events.c.seq == seq)
                .values(seq=seq + 1)
            )
        prev = db.execute(
            select(events.c.hash).where(events.c.incident == TICKET, events.c.seq == 7)
        ).scalar_one()
        body = record_body(
            incident=TICKET,
            seq=8,
            at=journal.audit_records(TICKET)[6].at,
            kind="decision.applied",
            run_id=None,
            step_id="approve",
            actor="U0FORGER",
            data={},
            prev_hash=prev,
        )
        db.execute(
            insert(events).values(
                incident=TICKET,
                seq=8,
                at=journal.audit_records(TICKET)[6].at,
                kind="decision.applied",
                step_id="approve",
                actor="U0FORGER",
                data={},
                prev_hash=prev,
                hash=chain_hash(body),
            )
        )
    found = problems(journal, key)
    assert found[0].startswith("record 8 (decision.applied approve, ")
    assert "was inserted" in found[0]
    assert any("records 9 to 21 were renumbered by +1" in p for p in found)


def test_reordered_records_are_named(journal: Journal, key: AuditKey) -> None:
    with journal.transaction() as db:
        for old, new in ((9, -9), (10, 9), (-9, 10)):
            db.execute(
                update(events)
                .where(events.c.incident == TICKET, events.c.seq == old)
                .values(seq=new)
            )
    found = problems(journal, key)
    assert found[0].startswith("records 9 and 10 were swapped (reordered)")


def test_truncation_after_a_checkpoint_is_caught(journal: Journal, key: AuditKey) -> None:
    with journal.transaction() as db:
        db.execute(delete(events).where(events.c.incident == TICKET, events.c.seq > 17))
    found = problems(journal, key)
    assert found == [
        f"the log was truncated: checkpoint at record 20 (periodic, "
        f"{_checkpoint_at(journal, 20)}) signed 20 records but the chain ends at record 17; "
        "records 18 to 20 were removed"
    ]


def test_truncation_that_also_removes_checkpoints_is_caught_by_the_anchor(
    journal: Journal, key: AuditKey
) -> None:
    published = journal.audit_records(TICKET)[-1].hash
    assert problems(journal, key, anchor=f"sha256:{published}") == []
    with journal.transaction() as db:
        db.execute(delete(events).where(events.c.incident == TICKET, events.c.seq > 15))
        db.execute(delete(checkpoints).where(checkpoints.c.seq > 15))
    assert problems(journal, key) == []  # the rest is consistent: only the anchor can tell
    found = problems(journal, key, anchor=f"sha256:{published}")
    assert found == [
        f"the anchor sha256:{published} is not in the chain: the log was truncated or "
        "rewritten after that head was published"
    ]


def test_a_chain_rewritten_without_the_key_fails_at_the_next_checkpoint(
    journal: Journal, key: AuditKey
) -> None:
    """Changing record 12 and recomputing every later hash keeps the links, not the signatures."""
    records = journal.audit_records(TICKET)
    prev = records[10].hash
    with journal.transaction() as db:
        for record in records[11:]:
            data = {"n": 1200} if record.seq == 12 else record.data
            body = {**record.body(), "data": data, "prev_hash": prev}
            prev = chain_hash(body)
            db.execute(
                update(events)
                .where(events.c.incident == TICKET, events.c.seq == record.seq)
                .values(data=data, prev_hash=body["prev_hash"], hash=prev)
            )
    found = problems(journal, key)
    assert found[0].startswith("checkpoint at record 15 (periodic, ")
    assert "the records up to 15 were rewritten after it was signed" in found[0]


def test_a_forged_checkpoint_signature_is_caught(journal: Journal, key: AuditKey) -> None:
    other = AuditKey.generate(key.path.parent / "other.key")  # type: ignore[union-attr]
    with journal.transaction() as db:
        forged = other.checkpoint(
            incident=TICKET,
            seq=10,
            head="f" * 64,
            at=journal.audit_records(TICKET)[9].at,
            reason="periodic",
        )
        db.execute(
            update(checkpoints)
            .where(checkpoints.c.seq == 10)
            .values(head=forged.head, signature=forged.signature)
        )
    found = problems(journal, key)
    assert len(found) == 1
    assert "checkpoint at record 10" in found[0] and "bad signature" in found[0]


def test_checkpoints_are_signed_at_the_end_and_not_twice(journal: Journal, key: AuditKey) -> None:
    journal.record(TICKET, "run.finished", status="succeeded")
    first = journal.checkpoint(TICKET, "run.finished")
    again = journal.checkpoint(TICKET, "run.finished")
    assert first is not None and again == first
    assert first.seq == RECORDS + 1
    assert journal.verify(TICKET, key.public_key).unsigned_tail == 0


def test_an_old_journal_without_a_chain_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, incident TEXT, data TEXT)")
    from tocsin.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as caught:
        Journal(f"sqlite:///{path}")
    assert "written by an older Tocsin" in caught.value.message
    assert "move that database aside" in caught.value.hint


# concurrent writers -----------------------------------------------------------------------------


def _append_many(url: str, key_path: str, writer: int, count: int) -> None:
    journal = Journal(url, audit_key=AuditKey.load(Path(key_path)), checkpoint_every=EVERY)
    try:
        for number in range(count):
            journal.record("INC-9", "step.succeeded", step_id=f"w{writer}", n=number)
    finally:
        journal.close()


def _check_concurrent_chain(url: str, key: AuditKey, expected: int) -> None:
    journal = Journal(url)
    try:
        result = journal.verify("INC-9", key.public_key)
        assert result.ok, result.problems[:3]
        assert result.records == expected
        assert sorted(r.seq for r in journal.audit_records("INC-9")) == list(range(1, expected + 1))
    finally:
        journal.close()


def _concurrent_writers(url: str, key: AuditKey) -> None:
    assert key.path is not None
    threads = [
        threading.Thread(target=_append_many, args=(url, str(key.path), writer, 40))
        for writer in range(6)
    ]
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_append_many, args=(url, str(key.path), 100 + writer, 40))
        for writer in range(2)
    ]
    for worker in [*threads, *processes]:
        worker.start()
    for thread in threads:
        thread.join()
    for process in processes:
        process.join()
        assert process.exitcode == 0
    _check_concurrent_chain(url, key, 8 * 40)


def test_concurrent_writers_never_fork_the_chain_on_sqlite(tmp_path: Path, key: AuditKey) -> None:
    """Six threads and two other processes (workers) append to one incident at once."""
    _concurrent_writers(f"sqlite:///{tmp_path / 'shared.db'}", key)


@pytest.fixture()
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database on the local server, dropped afterwards."""
    import uuid

    from sqlalchemy import create_engine

    admin_url = "postgresql+psycopg://root@127.0.0.1:5432/postgres"
    name = f"tocsin_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as db:
            db.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001
        admin.dispose()
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is needed for this test: {exc}")
    yield f"postgresql+psycopg://root@127.0.0.1:5432/{name}"
    with admin.connect() as db:
        db.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.mark.postgres
def test_concurrent_writers_never_fork_the_chain_on_postgresql(
    postgres_url: str, key: AuditKey
) -> None:
    _concurrent_writers(postgres_url, key)


@pytest.mark.postgres
def test_tampering_is_caught_on_postgresql(postgres_url: str, key: AuditKey) -> None:
    journal = Journal(postgres_url, audit_key=key, checkpoint_every=EVERY)
    try:
        for number in range(1, 8):
            journal.record(TICKET, "step.succeeded", step_id=f"s{number}", at_ms=number * 1.5)
        assert journal.verify(TICKET, key.public_key).ok
        with journal.transaction() as db:
            db.execute(update(events).where(events.c.seq == 4).values(data={"at_ms": 0}))
        found = [p.message for p in journal.verify(TICKET, key.public_key).problems]
        assert len(found) == 1 and found[0].startswith("record 4 (") and "modified" in found[0]
    finally:
        journal.close()


# redaction --------------------------------------------------------------------------------------


def test_redaction_is_keyed_and_stable(key: AuditKey, tmp_path: Path) -> None:
    redactor = Redactor(key)
    once = redactor.fields({"password": "Winter2026!", "user": "anne"}, ["password"])
    twice = redactor.fields({"password": "Winter2026!"}, ["password"])
    assert once["password"] == twice["password"] != "Winter2026!"
    assert once["password"].startswith("hmac-sha256:") and once["user"] == "anne"
    other = Redactor(AuditKey.generate(tmp_path / "other.key"))
    assert other.fields({"password": "Winter2026!"}, ["password"]) != once
    scrubbed = redactor.scrub({"text": ["your new password is Winter2026! (change it)"]})
    assert scrubbed == {"text": [f"your new password is {once['password']} (change it)"]}


def test_a_verification_without_key_checks_the_chain_only(journal: Journal) -> None:
    records = journal.audit_records(TICKET)
    result = verify_chain(TICKET, records, journal.checkpoints_of(TICKET), None)
    assert result.ok and result.checkpoints == 1 + RECORDS // EVERY


def _checkpoint_at(journal: Journal, seq: int) -> str:
    from tocsin.audit import timestamp

    found = [c for c in journal.checkpoints_of(TICKET) if c.seq == seq]
    return timestamp(found[0].at)


# the command line -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_trail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A journal and key where `tocsin` finds them, with one incident of 12 records."""
    base = tmp_path_factory.mktemp("cli-audit")
    env = {"TOCSIN_DATA_DIR": str(base / "data"), "TOCSIN_AUDIT__CHECKPOINT_EVERY": "4"}
    created = run_tocsin("audit", "keygen", env=env)
    assert created.returncode == 0, created.stderr
    key_path = base / "data" / "audit" / "signing.key"
    journal = Journal(
        f"sqlite:///{base / 'data' / 'journal.db'}",
        audit_key=AuditKey.load(key_path),
        checkpoint_every=4,
    )
    for number in range(1, 13):
        journal.record("INC-42", "step.succeeded", step_id=f"step_{number}", n=number)
    journal.close()
    yield {**env, "KEY": str(key_path), "BASE": str(base)}


def test_keygen_refuses_to_overwrite_a_key(cli_trail: dict[str, str]) -> None:
    again = run_tocsin("audit", "keygen", env=cli_trail)
    assert again.returncode == 2
    assert "an audit key already exists" in again.stderr and "--force" in again.stderr
    assert "Traceback" not in again.stderr
    mode = Path(cli_trail["KEY"]).stat().st_mode & 0o777
    assert mode == 0o600


def test_cli_verify_reports_an_intact_trail(cli_trail: dict[str, str]) -> None:
    result = run_tocsin("audit", "verify", "INC-42", env=cli_trail)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "INC-42: audit trail intact: 12 records, 4 signed checkpoints" in result.stdout
    as_json = json.loads(run_tocsin("audit", "verify", "INC-42", "--json", env=cli_trail).stdout)
    assert as_json["ok"] is True and as_json["records"] == 12


def test_cli_verify_unknown_incident_is_a_clear_error(cli_trail: dict[str, str]) -> None:
    result = run_tocsin("audit", "verify", "INC-404", env=cli_trail)
    assert result.returncode == 2
    assert "no audit records for incident INC-404" in result.stderr


def _export(cli_trail: dict[str, str], name: str) -> tuple[Path, list[str]]:
    path = Path(cli_trail["BASE"]) / name
    exported = run_tocsin("audit", "export", "INC-42", "-o", str(path), env=cli_trail)
    assert exported.returncode == 0, exported.stderr
    return path, path.read_text(encoding="utf-8").splitlines()


def _verify_file(path: Path, cli_trail: dict[str, str], *extra: str) -> tuple[int, str]:
    # No settings at all: an auditor's machine has only the file and the public key.
    result = run_tocsin(
        "audit",
        "verify",
        "--file",
        str(path),
        "--public-key",
        str(public_path(Path(cli_trail["KEY"]))),
        *extra,
        env={"TOCSIN_DATA_DIR": str(Path(cli_trail["BASE"]) / "auditor")},
    )
    return result.returncode, result.stdout + result.stderr


def test_an_export_verifies_offline_with_the_public_key_alone(cli_trail: dict[str, str]) -> None:
    path, lines = _export(cli_trail, "intact.jsonl")
    header = json.loads(lines[0])
    assert header["type"] == "header" and header["format"] == "tocsin-audit/1"
    kinds = [json.loads(line)["type"] for line in lines[1:]]
    # Records 1, 4, 8 and 12 are signed in the journal; the export signs record 12 again.
    assert kinds.count("record") == 12 and kinds.count("checkpoint") == 5
    assert kinds[1] == "checkpoint" and kinds[5] == "checkpoint"  # right after what they sign
    assert json.loads(lines[-1])["reason"] == "export"
    code, output = _verify_file(path, cli_trail)
    assert code == 0, output
    assert "audit trail intact: 12 records, 5 signed checkpoints" in output
    head = json.loads(lines[-3])["hash"]
    code, output = _verify_file(path, cli_trail, "--anchor", f"sha256:{head}")
    assert code == 0 and "found: record 12" in output


def _tampered(lines: list[str], change: str) -> list[str]:
    records = [i for i, line in enumerate(lines) if json.loads(line)["type"] == "record"]
    changed = list(lines)
    if change == "modified":
        line = json.loads(changed[records[5]])
        line["actor"] = "U0INTRUDER"
        changed[records[5]] = json.dumps(line)
    elif change == "deleted":
        del changed[records[5]]
    elif change == "inserted":
        line = json.loads(changed[records[5]])
        line["kind"] = "decision.applied"
        line["hash"] = chain_hash({k: v for k, v in line.items() if k not in ("type", "hash")})
        changed.insert(records[5], json.dumps(line))
    elif change == "reordered":
        changed[records[5]], changed[records[6]] = changed[records[6]], changed[records[5]]
    elif change == "truncated":  # the last records dropped, the checkpoint lines kept
        changed = [line for i, line in enumerate(changed) if i not in records[9:]]
    elif change == "cut-short":  # everything after record 9 dropped, checkpoints included
        changed = changed[: records[9]]
    return changed


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("modified", "record 6 (step.succeeded step_6, "),
        ("deleted", "record 6 is missing (deleted): the chain jumps to 7"),
        ("inserted", "record 6 (step.succeeded step_6, "),
        ("reordered", "records 6 and 7 are in the wrong order (reordered)"),
        ("truncated", "the log was truncated: checkpoint at record 12"),
    ],
)
def test_a_tampered_export_fails_offline_naming_the_record(
    cli_trail: dict[str, str], change: str, expected: str
) -> None:
    path, lines = _export(cli_trail, f"{change}.jsonl")
    path.write_text("\n".join(_tampered(lines, change)) + "\n", encoding="utf-8")
    code, output = _verify_file(path, cli_trail)
    assert code == 1, output
    assert "audit trail NOT intact" in output
    assert expected in output
    if change == "inserted":
        assert "was inserted: record 6 already exists" in output


def test_an_export_cut_short_is_caught_by_its_unsigned_end_and_the_published_head(
    cli_trail: dict[str, str],
) -> None:
    path, lines = _export(cli_trail, "cut-short.jsonl")
    published = json.loads(lines[-3])["hash"]  # posted to Slack at the end of the run
    path.write_text("\n".join(_tampered(lines, "cut-short")) + "\n", encoding="utf-8")
    code, output = _verify_file(path, cli_trail)
    assert code == 1  # nine records link up, but the export's own signature is gone
    assert "the end of the export is not signed: record 9 comes after the last checkpoint" in output
    code, output = _verify_file(path, cli_trail, "--anchor", f"sha256:{published}")
    assert code == 1
    assert f"the anchor sha256:{published} is not in the chain" in output


def test_a_malformed_export_names_its_line(cli_trail: dict[str, str]) -> None:
    path, lines = _export(cli_trail, "malformed.jsonl")
    lines[3] = lines[3][:40]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, output = _verify_file(path, cli_trail)
    assert code == 2
    assert f"{path}:4: not a Tocsin audit export line" in output
    assert "Traceback" not in output


def test_verifying_an_export_needs_a_public_key(cli_trail: dict[str, str]) -> None:
    path, _ = _export(cli_trail, "nokey.jsonl")
    result = run_tocsin("audit", "verify", "--file", str(path), env=cli_trail)
    assert result.returncode == 2 and "--public-key" in result.stderr


def test_hmac_command_gives_the_token_the_trail_holds(cli_trail: dict[str, str]) -> None:
    import subprocess

    from tests.cli_runner import ROOT, TOCSIN

    token = subprocess.run(
        [str(TOCSIN), "audit", "hmac"],
        input="Winter2026!\n",
        capture_output=True,
        text=True,
        env={**__import__("os").environ, **cli_trail},
        cwd=ROOT,
        check=True,
    ).stdout.strip()
    assert (
        token
        == Redactor(AuditKey.load(Path(cli_trail["KEY"]))).fields({"p": "Winter2026!"}, ["p"])["p"]
    )
