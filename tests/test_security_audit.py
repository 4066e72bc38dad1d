"""Attacks on the audit trail: each test does what an attacker would, and the trail must say so.

The attacker here can write to the journal database or to an export file (an insider, a
stolen backup), plant files next to the signing key on a shared machine, or simply
verify while the gateway and the runs are busy (the verifier must not cry wolf).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete

from tests.cli_runner import run_tocsin
from tests.test_audit import postgres_url  # noqa: F401  (the fixture)
from tocsin.announce import RunFacts
from tocsin.audit import AuditKey, public_path
from tocsin.integrations.jira.fake import SANDBOX_JIRA_TOKEN, SANDBOX_JIRA_USER, FakeJira
from tocsin.integrations.slack.fake import SANDBOX_BOT_TOKEN, FakeSlack, SlackChannel
from tocsin.journal import Journal, checkpoints, events

TICKET = "INC-31"


@pytest.fixture()
def trail(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A data folder where `tocsin` finds a key and a journal with one incident of 12 records.

    Checkpoints: the first record, every 4th, and the end of the run (record 12).
    """
    data = tmp_path / "data"
    env = {"TOCSIN_DATA_DIR": str(data), "TOCSIN_AUDIT__CHECKPOINT_EVERY": "4"}
    key = AuditKey.generate(data / "audit" / "signing.key")
    journal = Journal(f"sqlite:///{data / 'journal.db'}", audit_key=key, checkpoint_every=4)
    journal.record(TICKET, "run.started", actor="U0REQUESTER")
    for number in range(2, 12):
        journal.record(TICKET, "step.succeeded", step_id=f"step_{number}", n=number)
    journal.record(TICKET, "run.finished", status="succeeded", reason="every step finished")
    journal.checkpoint(TICKET, "run.finished")
    journal.close()
    yield {**env, "KEY": str(key.path), "DB": str(data / "journal.db"), "BASE": str(tmp_path)}


def _journal(trail: dict[str, str]) -> Journal:
    return Journal(f"sqlite:///{trail['DB']}")


def _verify(trail: dict[str, str], *extra: str) -> tuple[int, str]:
    result = run_tocsin("audit", "verify", TICKET, *extra, env=trail)
    return result.returncode, result.stdout + result.stderr


def _export(trail: dict[str, str]) -> list[str]:
    path = Path(trail["BASE"]) / "export.jsonl"
    exported = run_tocsin("audit", "export", TICKET, "-o", str(path), env=trail)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    return path.read_text(encoding="utf-8").splitlines()


def _verify_lines(trail: dict[str, str], lines: list[str]) -> tuple[int, str]:
    path = Path(trail["BASE"]) / "tampered.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run_tocsin(
        "audit",
        "verify",
        "--file",
        str(path),
        "--public-key",
        str(public_path(Path(trail["KEY"]))),
        env={"TOCSIN_DATA_DIR": str(Path(trail["BASE"]) / "auditor")},
    )
    return result.returncode, result.stdout + result.stderr


# deleting signatures ----------------------------------------------------------------------------


def test_deleting_every_checkpoint_fails_verification(trail: dict[str, str]) -> None:
    code, output = _verify(trail)
    assert code == 0, output
    journal = _journal(trail)
    with journal.transaction() as db:
        db.execute(delete(checkpoints).where(checkpoints.c.incident == TICKET))
    journal.close()
    code, output = _verify(trail)
    assert code == 1, output
    assert "audit trail NOT intact" in output
    assert "no signed checkpoint: nothing signs the 12 records of this chain" in output
    assert "Traceback" not in output


def test_deleting_the_end_of_run_checkpoint_fails_verification(trail: dict[str, str]) -> None:
    journal = _journal(trail)
    with journal.transaction() as db:
        db.execute(delete(checkpoints).where(checkpoints.c.seq == 12))
    journal.close()
    code, output = _verify(trail)
    assert code == 1, output
    assert "record 12 (run.finished, " in output
    assert "the end-of-run checkpoint is missing" in output


def test_cutting_a_finished_run_and_its_last_checkpoint_fails_verification(
    trail: dict[str, str],
) -> None:
    """The run.finished record kept, the records and checkpoint after the one before removed."""
    journal = _journal(trail)
    with journal.transaction() as db:
        db.execute(delete(checkpoints).where(checkpoints.c.seq > 8))
        db.execute(delete(events).where(events.c.seq.in_((9, 10, 11))))
    journal.close()
    code, output = _verify(trail)
    assert code == 1, output
    assert "the end-of-run checkpoint is missing" in output


# cutting an export short ------------------------------------------------------------------------


def _records_and_checkpoints(lines: list[str]) -> tuple[list[int], list[int]]:
    kinds = [json.loads(line)["type"] for line in lines]
    return (
        [i for i, kind in enumerate(kinds) if kind == "record"],
        [i for i, kind in enumerate(kinds) if kind == "checkpoint"],
    )


def test_an_export_is_signed_over_its_last_record_at_export_time(trail: dict[str, str]) -> None:
    lines = _export(trail)
    last = json.loads(lines[-1])
    assert last["type"] == "checkpoint" and last["reason"] == "export"
    assert last["seq"] == 12 and last["head"] == json.loads(lines[-3])["hash"]
    code, output = _verify_lines(trail, lines)
    assert code == 0, output
    assert "note:" not in output


def test_truncated_export_tail_fails_verification(trail: dict[str, str]) -> None:
    """Records 10 to 12 and the checkpoints over them are cut: what is left links up."""
    lines = _export(trail)
    records, _ = _records_and_checkpoints(lines)
    code, output = _verify_lines(trail, lines[: records[9]])
    assert code == 1, output
    assert "audit trail NOT intact" in output
    assert "the end of the export is not signed: record 9 comes after the last checkpoint" in output


def test_export_cut_at_an_earlier_checkpoint_fails_verification(trail: dict[str, str]) -> None:
    """Cut right after the checkpoint over record 8: every record left is signed, yet it is short."""
    lines = _export(trail)
    records, signed = _records_and_checkpoints(lines)
    after_8 = next(i for i in signed if json.loads(lines[i])["seq"] == 8)
    code, output = _verify_lines(trail, lines[: after_8 + 1])
    assert code == 1, output
    assert "the export ends at record 8 without its export checkpoint" in output


def test_an_export_of_a_chain_stripped_of_its_checkpoints_is_not_signed(
    trail: dict[str, str],
) -> None:
    """Exporting does not launder a tampered chain with a fresh signature."""
    journal = _journal(trail)
    with journal.transaction() as db:
        db.execute(delete(checkpoints).where(checkpoints.c.incident == TICKET))
    journal.close()
    path = Path(trail["BASE"]) / "laundered.jsonl"
    exported = run_tocsin("audit", "export", TICKET, "-o", str(path), env=trail)
    assert exported.returncode == 1, exported.stdout + exported.stderr
    assert "NOT intact" in exported.stderr and "NOT signed" in exported.stderr
    kinds = [json.loads(line)["type"] for line in path.read_text().splitlines()]
    assert "checkpoint" not in kinds
    code, output = _verify_lines(trail, path.read_text().splitlines())
    assert code == 1 and "no signed checkpoint" in output


# the signing key and the data folder ----------------------------------------------------------


def _keygen(key: Path, data: Path, *extra: str) -> tuple[int, str]:
    previous = os.umask(0o022)  # a usual umask: Tocsin must not rely on a stricter one
    try:
        result = run_tocsin(
            "audit", "keygen", "--key", str(key), *extra, env={"TOCSIN_DATA_DIR": str(data)}
        )
    finally:
        os.umask(previous)
    return result.returncode, result.stdout + result.stderr


def test_planted_world_readable_temp_file_does_not_receive_the_key(tmp_path: Path) -> None:
    """Another user pre-creates the temporary file keygen used to write, readable by all."""
    folder = tmp_path / "keys"
    folder.mkdir()
    planted = folder / "signing.key.tmp"
    planted.write_bytes(b"")
    planted.chmod(0o666)
    code, output = _keygen(folder / "signing.key", tmp_path / "data")
    assert code == 0, output
    assert stat.S_IMODE((folder / "signing.key").stat().st_mode) == 0o600
    assert planted.exists() and planted.read_bytes() == b""  # never opened
    assert not any(p.name.endswith(".tmp") and p != planted for p in folder.iterdir())


def test_symlinked_key_path_is_not_followed(tmp_path: Path) -> None:
    """A link planted where keygen writes (temp name or key name) must not carry the key away."""
    folder = tmp_path / "keys"
    folder.mkdir()
    stolen = tmp_path / "attacker" / "stolen.pem"
    stolen.parent.mkdir()
    (folder / "signing.key.tmp").symlink_to(stolen)
    code, output = _keygen(folder / "signing.key", tmp_path / "data")
    assert code == 0, output
    assert not stolen.exists()
    assert not (folder / "signing.key").is_symlink()

    linked = tmp_path / "linked" / "signing.key"
    linked.parent.mkdir()
    linked.symlink_to(stolen)
    code, output = _keygen(linked, tmp_path / "data", "--force")
    assert code == 3, output
    assert "is a symbolic link" in output and not stolen.exists()


def test_symlinked_private_key_is_refused(tmp_path: Path) -> None:
    real = AuditKey.generate(tmp_path / "real" / "signing.key")
    assert real.path is not None
    data = tmp_path / "data"
    (data / "audit").mkdir(parents=True)
    (data / "audit" / "signing.key").symlink_to(real.path)
    result = run_tocsin("audit", "hmac", env={"TOCSIN_DATA_DIR": str(data)})
    assert result.returncode == 3, result.stdout + result.stderr
    assert "is a symbolic link; Tocsin does not follow it" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("mode", [0o640, 0o604])
def test_group_or_world_readable_private_key_is_refused(tmp_path: Path, mode: int) -> None:
    data = tmp_path / "data"
    key = AuditKey.generate(data / "audit" / "signing.key")
    assert key.path is not None
    key.path.chmod(mode)
    result = run_tocsin("audit", "hmac", env={"TOCSIN_DATA_DIR": str(data)})
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"may be read or changed by other users (mode 0{mode:o})" in result.stderr
    assert f"chmod 600 {key.path}" in result.stderr


def test_data_folder_and_journal_are_not_readable_by_other_users(tmp_path: Path) -> None:
    data = tmp_path / "fresh" / "tocsin"
    previous = os.umask(0o022)
    try:
        keygen = run_tocsin("audit", "keygen", env={"TOCSIN_DATA_DIR": str(data)})
        unknown = run_tocsin("audit", "verify", "INC-1", env={"TOCSIN_DATA_DIR": str(data)})
    finally:
        os.umask(previous)
    assert keygen.returncode == 0, keygen.stderr
    assert unknown.returncode == 2  # no such incident, but the journal was opened
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "audit").stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "audit" / "signing.key").stat().st_mode) == 0o600
    for database in data.glob("journal.db*"):
        assert stat.S_IMODE(database.stat().st_mode) == 0o600, database


# published heads ------------------------------------------------------------------------------


@pytest.fixture()
def published(trail: dict[str, str]) -> Iterator[tuple[dict[str, str], FakeSlack, FakeJira, str]]:
    """The end-of-run head of the trail posted to the anchor channel, the thread and the ticket."""
    from tocsin.integrations.jira.client import JiraTickets
    from tocsin.integrations.slack.client import SlackCredentials
    from tocsin.integrations.slack.incident_thread import SlackIncidentAnnouncer
    from tocsin.integrations.slack.settings import SlackSettings
    from tocsin.ticket_updates import TicketAnnouncer

    slack = FakeSlack(
        channels=[
            SlackChannel("C0INCIDENTS", "support-incidents"),
            SlackChannel("C0AUDIT", "incident-audit"),
        ]
    )
    jira = FakeJira(issues={TICKET: {"summary": "Phishing at OF-1042"}})
    with slack, jira:
        env = {
            **trail,
            "TOCSIN_SLACK__API_URL": f"{slack.url}/api/",
            "TOCSIN_SECRET_SLACK_BOT_TOKEN": SANDBOX_BOT_TOKEN,
            "TOCSIN_SLACK__ANCHOR_CHANNEL": "#incident-audit",
            "TOCSIN_JIRA__URL": jira.url,
            "TOCSIN_JIRA__USER": SANDBOX_JIRA_USER,
            "TOCSIN_SECRET_JIRA_API_TOKEN": SANDBOX_JIRA_TOKEN,
        }
        journal = Journal(f"sqlite:///{trail['DB']}", audit_key=AuditKey.load(Path(trail["KEY"])))
        head = journal.audit_records(TICKET)[-1]
        run = RunFacts(TICKET, 1, "phishing", "Phishing", "1.0", "high", "U0REQUESTER", "cli")
        credentials = SlackCredentials(SANDBOX_BOT_TOKEN, f"{slack.url}/api/")
        announcer = SlackIncidentAnnouncer(
            credentials, SlackSettings(incident_channel="#support-incidents"), journal
        )
        announcer.run_started(run)  # opens the incident thread
        tickets = JiraTickets(jira.url, SANDBOX_JIRA_TOKEN, user=SANDBOX_JIRA_USER)
        places = [
            announcer.anchor(run, head.seq, head.hash, "k"),
            TicketAnnouncer(tickets).anchor(run, head.seq, head.hash, "k"),
        ]
        posted = credentials.get_client().chat_postMessage(
            channel="#incident-audit",
            text=f"Audit checkpoint for {TICKET}: record {head.seq}, head sha256:{head.hash} "
            f"(key k). Keep this message: `tocsin audit verify {TICKET} --anchor "
            f"sha256:{head.hash}` proves later that the audit trail was not cut short.",
        )
        places.append(f"slack:{posted['channel']}:{posted['ts']}")
        for where in places:
            journal.record(
                TICKET, "audit.checkpoint_anchored", seq=head.seq, head=head.hash, where=where
            )
        journal.checkpoint(TICKET, "anchored")
        journal.close()
        yield env, slack, jira, head.hash


def _cut_after(trail: dict[str, str], seq: int) -> None:
    """What a key holder does: cut the chain after ``seq`` and sign the shortened head."""
    journal = Journal(f"sqlite:///{trail['DB']}", audit_key=AuditKey.load(Path(trail["KEY"])))
    with journal.transaction() as db:
        db.execute(delete(checkpoints).where(checkpoints.c.seq > seq))
        db.execute(delete(events).where(events.c.seq > seq))
    journal.checkpoint(TICKET, "run.finished")
    journal.close()


def test_verify_reads_the_published_heads_and_finds_them_in_the_chain(
    published: tuple[dict[str, str], FakeSlack, FakeJira, str],
) -> None:
    env, slack, _, _ = published
    result = run_tocsin("audit", "verify", TICKET, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "published heads in Slack channel #incident-audit (C0AUDIT): 1, in the chain (record 12)"
        in result.stdout
    )
    assert "published heads in the Slack incident thread (C0INCIDENTS " in result.stdout
    assert f"published heads in Jira {TICKET}: 1, in the chain (record 12)" in result.stdout
    assert slack.calls_of("conversations.history") and slack.calls_of("conversations.replies")
    as_json = json.loads(run_tocsin("audit", "verify", TICKET, "--json", env=env).stdout)
    assert {p["state"] for p in as_json["anchors"]} == {"reachable"}


def test_chain_cut_and_resigned_by_the_key_holder_fails_on_the_published_heads(
    published: tuple[dict[str, str], FakeSlack, FakeJira, str],
) -> None:
    """Records 9 to the end removed and the new head signed: only the published heads can tell."""
    env, _, _, head = published
    env = {**env, "TOCSIN_SLACK__ANCHOR_CHANNEL": "C0AUDIT"}  # by id, as docs/audit.md advises
    _cut_after(env, 8)
    result = run_tocsin("audit", "verify", TICKET, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert run_tocsin("audit", "verify", TICKET, "--offline", env=env).returncode == 0
    assert f"the head sha256:{head} published in Slack C0AUDIT message " in output
    assert f"the head sha256:{head} published in Slack C0INCIDENTS message " in output
    assert f"the head sha256:{head} published in Jira {TICKET} comment " in output
    assert "(record 12) is not in the chain: the log was truncated or rewritten" in output
    as_json = json.loads(run_tocsin("audit", "verify", TICKET, "--json", env=env).stdout)
    assert {p["state"] for p in as_json["anchors"]} == {"mismatch"}


def test_unreachable_published_heads_are_a_note_not_a_failure(
    published: tuple[dict[str, str], FakeSlack, FakeJira, str],
) -> None:
    env, slack, jira, _ = published
    slack.fail_next(1000, 503)
    jira.fail_next(1000, 500)
    result = run_tocsin("audit", "verify", TICKET, env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "note: published heads in Slack channel #incident-audit (C0AUDIT) not checked: "
        in result.stdout
    )
    assert f"note: published heads in Jira {TICKET} not checked: " in result.stdout


# verifying while writers append -----------------------------------------------------------------


def _keep_appending(url: str, key_path: str, ticket: str, stop: object) -> None:
    """A busy gateway and run: clicks, a checkpoint every 2 records, one now and then when waiting.

    About a dozen records a second each, so that the chain stays small enough to verify
    60 times on a busy test machine; still, a checkpoint lands every few milliseconds of
    reading, which is what made the verifier see truncations that did not happen.
    """
    journal = Journal(url, audit_key=AuditKey.load(Path(key_path)), checkpoint_every=2)
    try:
        number = 0
        while not stop.wait(0.08):  # type: ignore[attr-defined]
            journal.record(ticket, "decision.received", actor=f"U0LEAD{number % 5}", n=number)
            if number % 7 == 0:
                journal.checkpoint(ticket, "waiting")
            number += 1
    finally:
        journal.close()


def _verify_and_export_under_load(url: str, tmp_path: Path) -> None:
    from tocsin.evidence import export_incident, verify_export_file, verify_incident
    from tocsin.settings import load_settings

    key = AuditKey.generate(tmp_path / "data" / "audit" / "signing.key")
    assert key.path is not None
    ticket = "INC-900"
    seed = Journal(url, audit_key=key, checkpoint_every=2)
    seed.record(ticket, "run.started", actor="U0REQUESTER")
    seed.close()
    settings = load_settings(data_dir=tmp_path / "data", journal_url=url)
    env = {"TOCSIN_DATA_DIR": str(tmp_path / "data"), "TOCSIN_JOURNAL_URL": url}
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    writers = [
        context.Process(target=_keep_appending, args=(url, str(key.path), ticket, stop))
        for _ in range(2)
    ]
    for writer in writers:
        writer.start()
    try:
        deadline = time.monotonic() + 60
        watcher = Journal(url)
        try:
            while len(watcher.audit_records(ticket)) < 30:  # the writers are going
                assert time.monotonic() < deadline, "the writers did not start"
                time.sleep(0.05)
        finally:
            watcher.close()
        export_file = tmp_path / "export.jsonl"
        seen: list[int] = []
        for round_number in range(60):
            result, _ = verify_incident(settings, ticket, public_key_file=None, anchor=None)
            assert result.ok, (round_number, [p.message for p in result.problems])
            seen.append(result.records)
            export = export_incident(settings, ticket)
            assert export.signed, [p.message for p in export.verification.problems]
            export_file.write_text(export.text, encoding="utf-8")
            offline = verify_export_file(export_file, public_path(key.path), None)
            assert offline.ok, (round_number, [p.message for p in offline.problems])
            if round_number % 20 == 0:  # and as a person types it, now and then
                typed = run_tocsin("audit", "verify", ticket, "--offline", env=env)
                assert typed.returncode == 0, typed.stdout + typed.stderr
                assert "audit trail intact" in typed.stdout
        assert all(w.is_alive() for w in writers), "the writers stopped before the loop ended"
        assert seen[-1] > seen[0]  # the chain grew while it was verified
    finally:
        stop.set()
        for writer in writers:
            writer.join(timeout=30)
            if writer.is_alive():
                writer.terminate()
                writer.join()
    assert all(w.exitcode == 0 for w in writers)


@pytest.mark.slow
def test_verify_under_concurrent_appends_never_reports_truncation(tmp_path: Path) -> None:
    _verify_and_export_under_load(f"sqlite:///{tmp_path / 'busy.db'}", tmp_path)


@pytest.mark.slow
@pytest.mark.postgres
def test_verify_under_concurrent_appends_never_reports_truncation_on_postgresql(
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    _verify_and_export_under_load(postgres_url, tmp_path)
