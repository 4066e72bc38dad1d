"""`tocsin doctor`: one line per check, what to fix, exit 1 when something is wrong."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from tests.cli_runner import run_tocsin

NEEDS_A_TOKEN = """\
runbook: doctor-needs
version: 1
title: Doctor needs
summary: Posts to Slack
severity: low
sources: [{title: Test, document: test.txt}]
steps:
  - {id: tell, title: Tell, action: slack.post_message, with: {channel: "#support", text: hi}}
"""


def _fresh(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A configuration of its own: no journal yet, no running Prefect server."""
    return {"TOCSIN_DATA_DIR": str(tmp_path / "data"), **extra}


def _live(tmp_path: Path, **extra: str) -> dict[str, str]:
    return _fresh(tmp_path, TOCSIN_MODE="live", **extra)


def _key(path: Path, mode: int) -> Path:
    from tocsin.audit import AuditKey

    AuditKey.generate(path)
    path.chmod(mode)
    return path


def _doctor_json(*args: str, env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    result = run_tocsin("doctor", "--json", *args, env=env, timeout=120)
    return result.returncode, json.loads(result.stdout)


def _check(report: dict[str, Any], area: str) -> dict[str, Any]:
    found = [c for c in report["checks"] if c["area"] == area]
    assert found, [c["area"] for c in report["checks"]]
    return dict(found[0])


@pytest.mark.slow
def test_a_healthy_sandbox_configuration_is_all_good(tmp_path: Path) -> None:
    result = run_tocsin("doctor", env=_fresh(tmp_path), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SANDBOX mode: integrations are checked against the sandbox's fakes" in result.stdout
    assert "integration slack: bot token: ok: signs in as @tocsin" in result.stdout
    assert "signing key: ok:" in result.stdout
    assert "journal: ok:" in result.stdout
    assert "PROBLEM" not in result.stdout
    assert result.stdout.rstrip().endswith("all good")


def test_a_key_others_may_read_is_a_problem(tmp_path: Path) -> None:
    key = _key(tmp_path / "signing.key", 0o644)
    env = _live(tmp_path, TOCSIN_AUDIT__KEY_PATH=str(key))
    result = run_tocsin("doctor", env=env, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        f"signing key: PROBLEM: the audit signing key {key} may be read or changed by other "
        f"users (mode 0644); Tocsin refuses to use it — fix: chmod 600 {key}"
    ) in result.stdout
    assert result.stdout.rstrip().endswith("1 problem found")
    code, report = _doctor_json(env=env)
    assert code == 1 and report["ok"] is False and report["mode"] == "live"
    assert _check(report, "signing key")["ok"] is False
    assert _check(report, "journal")["ok"] is True
    key.chmod(0o600)
    code, report = _doctor_json(env=env)
    assert code == 0 and report["ok"] is True, report
    assert "readable by its owner only" in _check(report, "signing key")["message"]


def test_live_without_a_key_is_a_problem(tmp_path: Path) -> None:
    code, report = _doctor_json(env=_live(tmp_path))
    assert code == 1
    key = _check(report, "signing key")
    assert key["ok"] is False and "no audit signing key" in key["message"]
    assert "tocsin audit keygen" in key["hint"]


def test_an_unreachable_prefect_server_is_a_problem_naming_its_url(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once closed
    url = f"http://127.0.0.1:{port}/api"
    env = _live(
        tmp_path,
        TOCSIN_PREFECT_API_URL=url,
        TOCSIN_AUDIT__KEY_PATH=str(_key(tmp_path / "k", 0o600)),
    )
    result = run_tocsin("doctor", env=env, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"prefect server: PROBLEM: the Prefect server at {url} does not answer" in result.stdout
    assert "fix: start it (`prefect server start`) or fix TOCSIN_PREFECT_API_URL" in result.stdout


def test_a_journal_schema_out_of_date_is_a_problem(tmp_path: Path) -> None:
    from tocsin.journal import Journal

    url = f"sqlite:///{tmp_path / 'old.db'}"
    Journal(url).close()
    engine = create_engine(url)
    with engine.begin() as db:  # as a journal written before decisions kept outputs
        db.exec_driver_sql("ALTER TABLE decisions DROP COLUMN outputs")
    engine.dispose()
    env = _live(
        tmp_path, TOCSIN_JOURNAL_URL=url, TOCSIN_AUDIT__KEY_PATH=str(_key(tmp_path / "k", 0o600))
    )
    result = run_tocsin("doctor", env=env, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        f"journal: PROBLEM: the journal's schema at {url} is out of date: missing decisions.outputs"
    ) in result.stdout
    assert "— fix: open it once with this Tocsin" in result.stdout
    # ...which any command opening it does: then it is current.
    assert run_tocsin("status", env=env).returncode == 0
    code, report = _doctor_json(env=env)
    assert code == 0, report
    assert "schema current" in _check(report, "journal")["message"]


def test_a_journal_from_before_the_audit_chain_is_a_problem(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'unchained.db'}"
    engine = create_engine(url)
    with engine.begin() as db:
        db.exec_driver_sql("CREATE TABLE events (id INTEGER PRIMARY KEY, kind TEXT)")
    engine.dispose()
    code, report = _doctor_json(env=_live(tmp_path, TOCSIN_JOURNAL_URL=url))
    assert code == 1
    journal = _check(report, "journal")
    assert journal["ok"] is False and "before events were hash-chained" in journal["message"]


@pytest.mark.slow
def test_a_running_prefect_server_is_described_and_a_missing_pool_is_a_problem(
    prefect_server: str, tmp_path: Path
) -> None:
    env = _live(
        tmp_path,
        TOCSIN_PREFECT_API_URL=prefect_server,
        TOCSIN_AUDIT__KEY_PATH=str(_key(tmp_path / "k", 0o600)),
    )
    code, report = _doctor_json("--pool", "no-such-pool", env=env)
    assert code == 1
    server = _check(report, "prefect server")
    assert server["ok"] is True
    assert f"{prefect_server} answers (Prefect 3.8.8" in server["message"]
    pool = _check(report, "work pool")
    assert pool == {
        "area": "work pool",
        "ok": False,
        "note": False,
        "message": "no work pool 'no-such-pool'",
        "hint": "prefect work-pool create no-such-pool --type process",
    }


def test_a_runbook_named_is_checked_for_the_secrets_its_steps_need(tmp_path: Path) -> None:
    runbook = tmp_path / "doctor-needs.yaml"
    runbook.write_text(NEEDS_A_TOKEN)
    env = _live(tmp_path, TOCSIN_AUDIT__KEY_PATH=str(_key(tmp_path / "k", 0o600)))
    result = run_tocsin("doctor", str(runbook), env=env, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "runbook doctor-needs: secret slack_bot_token: PROBLEM: secret 'slack_bot_token' is not "
        "set (needed by step tell) — fix: set the environment variable "
        "TOCSIN_SECRET_SLACK_BOT_TOKEN"
    ) in result.stdout


def test_no_runbook_named_says_which_runbooks_cannot_start_yet_as_notes(tmp_path: Path) -> None:
    folder = tmp_path / "runbooks"
    folder.mkdir()
    (folder / "doctor-needs.yaml").write_text(NEEDS_A_TOKEN)
    key = _key(tmp_path / "k", 0o600)
    env = _live(
        tmp_path, TOCSIN_AUDIT__KEY_PATH=str(key), TOCSIN_RUNBOOK_PATHS=json.dumps([str(folder)])
    )
    result = run_tocsin("doctor", env=env, timeout=120)
    assert (
        "runbook doctor-needs: note: cannot start yet, missing secret slack_bot_token — to use "
        "it: `tocsin doctor doctor-needs` says what to set"
    ) in result.stdout
    _, report = _doctor_json(env=env)
    note = _check(report, "runbook doctor-needs")
    assert note["ok"] is True and note["note"] is True  # said, not counted as a problem
    _, ready = _doctor_json(env={**env, "TOCSIN_SECRET_SLACK_BOT_TOKEN": "xoxb-set"})
    assert _check(ready, "runbook doctor-needs") == {
        "area": "runbook doctor-needs",
        "ok": True,
        "note": False,
        "message": "ready: every secret and setting its steps use is set",
        "hint": "",
    }
