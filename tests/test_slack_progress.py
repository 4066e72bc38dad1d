"""A long step's progress: one message in the incident's thread, edited as it goes (through
``Announcements.step_progress`` and the real Slack announcer, against the fake Slack); and
the CLI's progress lines."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from tocsin.announce import Announcements, RunFacts
from tocsin.integrations.slack.client import SlackCredentials
from tocsin.integrations.slack.fake import (
    SANDBOX_BOT_TOKEN,
    FakeSlack,
    PostedSlackMessage,
    SlackChannel,
)
from tocsin.integrations.slack.incident_thread import SlackIncidentAnnouncer
from tocsin.integrations.slack.settings import SlackSettings
from tocsin.journal import Journal

RUN = RunFacts(
    ticket="INC-90",
    run_id=1,
    runbook="third-party-breach",
    runbook_title="A partner leaked our clients' data",
    version="1",
    severity="high",
    requested_by="U0SUPPORT",
    requested_via="cli",
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(channels=[SlackChannel("C0INCIDENTS", "support-incidents")]) as fake:
        yield fake


@pytest.fixture(autouse=True)
def fresh(slack: FakeSlack) -> None:
    slack.reset()


def announcer(slack: FakeSlack, journal: Journal) -> SlackIncidentAnnouncer:
    return SlackIncidentAnnouncer(
        SlackCredentials(SANDBOX_BOT_TOKEN, base_url=f"{slack.url}/api/"),
        SlackSettings(incident_channel="#support-incidents"),
        journal,
    )


def progress_messages(slack: FakeSlack) -> list[PostedSlackMessage]:
    return [m for m in slack.messages if m.text and "notify_people" in m.text]


def test_progress_is_one_message_edited_at_each_tenth_then_complete(
    slack: FakeSlack, tmp_path: Path
) -> None:
    journal = Journal(f"sqlite:///{tmp_path / 'journal.db'}")
    clock = Clock()
    failures: list[tuple[str, str, str]] = []
    announcements = Announcements(
        [announcer(slack, journal)],
        RUN,
        on_failure=lambda *problem: failures.append(problem),
        batch_seconds=20.0,
        clock=clock,
    )
    title = "E-mail each person <!channel>"
    for done in range(0, 5001, 500):  # 11 calls: 0 %, 10 %, ... 100 %
        clock.now += 30  # every call is past the batch interval: each new tenth is shown
        announcements.step_progress("notify_people", title, done, 5000, "sent")
    announcements.step_progress("notify_people", title, 5000, 5000, "sent")  # same tenth: nothing
    assert failures == []
    [message] = progress_messages(slack)
    assert message.edits == 10
    assert "Done" in message.text and "5,000 / 5,000 sent (100 %)" in message.text
    assert "<!channel>" not in message.text
    journal.close()


def test_progress_inside_the_batch_interval_waits_for_the_next_tenth_past_it(
    slack: FakeSlack, tmp_path: Path
) -> None:
    journal = Journal(f"sqlite:///{tmp_path / 'journal.db'}")
    clock = Clock()
    announcements = Announcements(
        [announcer(slack, journal)],
        RUN,
        on_failure=lambda *_: None,
        batch_seconds=20.0,
        clock=clock,
    )
    clock.now += 30
    announcements.step_progress("notify_people", "E-mail", 100, 1000, "sent")  # 10 %: posted
    clock.now += 1
    announcements.step_progress("notify_people", "E-mail", 200, 1000, "sent")  # too soon
    announcements.step_progress("notify_people", "E-mail", 300, 1000, "sent")  # too soon
    clock.now += 30
    announcements.step_progress("notify_people", "E-mail", 400, 1000, "sent")  # shown
    [message] = progress_messages(slack)
    assert message.edits == 1
    assert "400 / 1,000" in message.text
    journal.close()


def test_a_resumed_run_edits_the_same_progress_message(slack: FakeSlack, tmp_path: Path) -> None:
    from tocsin.announce import StepProgress

    journal = Journal(f"sqlite:///{tmp_path / 'journal.db'}")
    announcer(slack, journal).step_progress(
        RUN, StepProgress("notify_people", "E-mail", 2000, 5000, "sent")
    )
    # The run died; a new process (a new announcer) goes on with the same journal.
    announcer(slack, journal).step_progress(
        RUN, StepProgress("notify_people", "E-mail", 5000, 5000, "sent")
    )
    [message] = progress_messages(slack)
    assert message.edits == 1
    assert "5,000 / 5,000" in message.text
    journal.close()


def test_the_cli_prints_a_progress_line_per_tenth_when_not_on_a_terminal() -> None:
    from tocsin.cli.runs import _progress_printer
    from tocsin.flows.run_state import PROGRESS_MARK

    out = io.StringIO()
    with redirect_stdout(out):
        show = _progress_printer()
        show("step one: succeeded")
        for done in range(0, 1001, 25):  # 41 progress lines, one per 2.5 %
            percent = done * 100 // 1000
            show(f"{PROGRESS_MARK}notify: [....] {percent:3d}% {done}/1000 sent")
        show("notify: succeeded")
    lines = out.getvalue().splitlines()
    progress = [line for line in lines if "/1000 sent" in line]
    assert len(progress) == 11  # 0 %, 10 %, ..., 100 %
    assert progress[-1].endswith("1000/1000 sent")
    assert lines[-1].endswith("notify: succeeded")
    assert all(PROGRESS_MARK not in line for line in lines)


def test_a_gate_shows_a_guarded_campaigns_preview_as_plain_text() -> None:
    from tocsin.announce import GateState
    from tocsin.gates import WaitRequest
    from tocsin.integrations.slack.incident_thread import gate_blocks

    preview = "20 recipient(s) (fr 8 · nl 8 · en 4)\n--- fr ---\nSubject: *Avis* <!channel>"
    request = WaitRequest(
        kind="approval",
        prompt="Send?",
        deadline="2030-01-01T00:00:00+00:00",
        requester="U0SUPPORT",
        gate_hash="f" * 64,
        approvers=["U0A"],
        guarded={"notify_people": {"action": "notify.clients", "with": {}, "preview": preview}},
    )
    blocks = gate_blocks(RUN, GateState("approve", "Approve the notices", request))
    [shown] = [
        b for b in blocks if "Preview of notify_people" in str(b.get("text", {}).get("text"))
    ]
    assert shown["text"]["type"] == "plain_text"  # Slack shows it as written: no mention, no bold
    assert shown["text"]["text"] == f"Preview of notify_people:\n{preview}"
