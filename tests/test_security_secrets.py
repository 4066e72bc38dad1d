"""A secret input never leaves Tocsin: not to Prefect, not to disk, not to Slack or Jira.

A runbook templates its secret input into a log line, a gate prompt, a manual task's
instructions and checklist. It runs from the CLI (as a subprocess, sandbox) and from Slack
through the gateway (fake Slack and Jira on loopback). Then every byte Tocsin and Prefect
wrote (the journal, Prefect's database and its logs, exports, reports, command output)
and every payload the fake Slack and Jira received is searched for the value.
(The deployment path is in tests/test_deployment.py, beside its worker.)
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import gateway_support
from tests.cli_runner import ROOT, TOCSIN, run_tocsin
from tests.engine_support import wait_until
from tests.gateway_support import (
    environment_variables,
    gateway_from_settings,
    service_settings,
)
from tocsin.gateway import GatewayServer
from tocsin.integrations.jira.fake import FakeJira
from tocsin.integrations.slack.fake import FakeSlack, SlackChannel
from tocsin.integrations.slack.simulated_user import SimulatedSlack
from tocsin.journal import Journal

# The gateway modules' shared fixtures (tests.gateway_support), each started once per module.
jira = gateway_support.jira
journal = gateway_support.journal

pytestmark = pytest.mark.slow

SIGNING_SECRET = "1f742231b10e8888abcd99yyyzzz85a5"

RUNBOOK = """\
runbook: {runbook_id}
version: 1
title: Secret paths
summary: A secret input templated everywhere a value is shown
severity: low
sources: [{{title: Test, document: test.txt}}]
inputs:
  state: {{type: string, description: Folder for action state}}
  temp_password: {{type: string, secret: true, description: Temporary password}}
approver_groups:
  leads: {{users: [U0LEAD1, U0LEAD2]}}
steps:
  - id: say
    title: Log the password
    action: log
    with: {{message: "the new password is {{{{ inputs.temp_password }}}}"}}
  - id: fails_quoting_it
    title: Fail, quoting the password
    action: test.fail
    with: {{message: "refused password {{{{ inputs.temp_password }}}}"}}
    on_failure: continue
  - id: gate
    title: Approve the reset
    approval:
      approvers: leads
      prompt: "Reset the mailbox with {{{{ inputs.temp_password }}}}?"
  - id: reset
    title: Reset
    action: test.count_idempotent
    with: {{file: "{{{{ inputs.state }}}}/reset-{{{{ inputs.temp_password }}}}"}}
  - id: tell
    title: Give the password to the user
    manual:
      instructions: "Read {{{{ inputs.temp_password }}}} to the user on the phone"
      checklist: ["Told them {{{{ inputs.temp_password }}}}"]
"""


def files_containing(value: str, *folders: Path) -> list[str]:
    """Every file under ``folders`` whose bytes contain ``value`` (or its JSON escaping)."""
    needles = {value.encode(), json.dumps(value)[1:-1].encode()}
    found: list[str] = []
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                if any(needle in data for needle in needles):
                    found.append(str(path))
    return found


def everything_written(extra: Path) -> list[Path]:
    """Tocsin's data folders and Prefect's home for this test session, and ``extra``."""
    roots = [extra]
    for variable in ("XDG_DATA_HOME", "PREFECT_HOME"):
        if os.environ.get(variable):
            roots.append(Path(os.environ[variable]))
    return [root for root in roots if root.exists()]


@pytest.fixture(scope="module")
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(
        channels=(SlackChannel("C0INCIDENTS", "support-incidents"),),
        usergroups={"S0LEADS": ["U0LEAD1"]},
    ) as fake:
        yield fake


@pytest.fixture(scope="module")
def environment(
    prefect_server: str, slack: FakeSlack, jira: FakeJira, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("security-secrets")
    values = {
        **service_settings(folder, signing_secret=SIGNING_SECRET, slack=slack, jira=jira),
        "TOCSIN_PREFECT_API_URL": prefect_server,
        "TOCSIN_SLACK__INCIDENT_CHANNEL": "#support-incidents",
    }
    (folder / "runbooks" / "secret-paths.yaml").write_text(
        RUNBOOK.format(runbook_id="secret-paths")
    )
    with environment_variables(values):
        yield folder


def waiting(journal: Journal, ticket: str, step_id: str) -> bool:
    run = journal.find_run(ticket, "secret-paths")
    record = journal.step(run.id, step_id) if run else None
    return record is not None and record.status == "waiting"


def test_a_secret_input_given_on_the_cli_is_never_written_anywhere(
    environment: Path, journal: Journal, tmp_path: Path
) -> None:
    secret = "Zq7-cli-SECRET-4f1e9b"
    ticket = "SECRET-1"
    state = tmp_path / "state"
    state.mkdir()
    outputs: list[str] = []
    # The sandbox's own fakes, not this module's: the CLI path is about Prefect and disk.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOCSIN_SLACK", "TOCSIN_JIRA"))}
    process = subprocess.Popen(
        [
            str(TOCSIN),
            "run",
            "secret-paths",
            "--ticket",
            ticket,
            "--as",
            "U0REQUESTER",
            "--set",
            f"state={state}",
            "--set",
            f"temp_password={secret}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: waiting(journal, ticket, "gate"), timeout=120, what="the gate")
        status = run_tocsin("status", ticket, env=env)
        outputs.append(status.stdout + status.stderr)
        assert "Reset the mailbox with hmac-sha256:" in status.stdout
        outputs.append(run_tocsin("approve", ticket, "gate", "--as", "U0LEAD1", env=env).stdout)
        wait_until(lambda: waiting(journal, ticket, "tell"), timeout=60, what="the manual task")
        status = run_tocsin("status", ticket, env=env)
        outputs.append(status.stdout)
        assert "Told them hmac-sha256:" in status.stdout
        done = run_tocsin("done", ticket, "tell", "--as", "U0LEAD2", "--all", env=env)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout + done.stderr)
        output, _ = process.communicate(timeout=120)
        outputs.append(output)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output
    exports = tmp_path / "exports"
    exports.mkdir()
    for command in (
        ("audit", "export", ticket, "-o", str(exports / "trail.jsonl")),
        ("report", ticket, "-o", str(exports / "report.md")),
        ("report", ticket, "-o", str(exports / "report.html")),
        ("report", ticket, "-o", str(exports / "report.json")),
    ):
        result = run_tocsin(*command, env=env)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout + result.stderr)
    # the secret did its job: the step really used it
    assert (state / f"reset-{secret}").exists()
    assert not [o for o in outputs if secret in o]
    leaked = [
        path
        for path in files_containing(secret, *everything_written(environment), exports)
        if f"reset-{secret}" not in path  # the action's own file, named by the runbook
    ]
    assert leaked == []
    # and the sealed inputs are gone once the run ended
    from sqlalchemy import select

    from tocsin.journal import sealed_inputs

    with journal.transaction() as db:
        assert db.execute(select(sealed_inputs.c.id)).all() == []


def test_a_secret_input_given_in_slack_reaches_neither_prefect_nor_slack_nor_jira(
    environment: Path, journal: Journal, slack: FakeSlack, jira: FakeJira, tmp_path: Path
) -> None:
    secret = "Zq7-slack-SECRET-88aa01"
    ticket = "SECRET-2"
    jira.add_issue(ticket, {"summary": "Phished mailbox"})
    state = tmp_path / "state"
    state.mkdir()
    with (
        gateway_from_settings() as gateway,
        GatewayServer(gateway.app) as server,
        SimulatedSlack(server.url, SIGNING_SECRET, fake_slack=slack) as person,
    ):
        started = person.slash_command(
            "U0REQUESTER",
            f"run secret-paths {ticket} state={state} temp_password={secret}",
        )
        assert "started for SECRET-2" in started.json()["text"]
        wait_until(lambda: waiting(journal, ticket, "gate"), timeout=120, what="the gate")
        status = person.slash_command("U0REQUESTER", f"status {ticket}").json()["text"]
        assert "Reset the mailbox with hmac-sha256:" in status and secret not in status

        def gate_message() -> object:
            for message in slack.messages:
                if "tocsin_approve" in json.dumps(message.blocks or []):
                    return message
            return None

        message = wait_until(gate_message, what="the gate message")
        assert person.click("U0LEAD1", message, "tocsin_approve").status_code == 200  # type: ignore[arg-type]
        wait_until(lambda: waiting(journal, ticket, "tell"), timeout=60, what="the task")
        from tocsin.decisions import submit

        submit(
            journal,
            incident=ticket,
            step_id="tell",
            kind="done",
            actor="U0LEAD2",
            channel="test",
            checklist=[1],
        )
        wait_until(
            lambda: (
                (r := journal.find_run(ticket, "secret-paths")) is not None
                and r.status == "succeeded"
            ),
            timeout=60,
            what="the run to succeed",
        )
        wait_until(
            lambda: any("Audit checkpoint" in c.body for c in jira.comments(ticket)),
            timeout=60,
            what="the last ticket comment",
        )
    assert (state / f"reset-{secret}").exists()
    # Slack received the command (Slack's own copy is out of Tocsin's hands); what
    # Tocsin sent it and Jira must not carry the value.
    sent_to_slack = [r for r in slack.requests if r.path.startswith("/api/")]
    assert sent_to_slack and not [r.path for r in sent_to_slack if secret.encode() in r.body]
    assert jira.comments(ticket) and not [c for c in jira.comments(ticket) if secret in c.body]
    assert not [a for a in jira.attachments(ticket) if secret.encode() in a.content]
    leaked = [
        path
        for path in files_containing(secret, *everything_written(environment))
        if f"reset-{secret}" not in path
    ]
    assert leaked == []
