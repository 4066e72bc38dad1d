"""The dry run of a campaign: `tocsin plan` shows the recipient count per language, how long
the campaign takes at the configured rate, the rows it cannot send to and the first message
in each language (placeholders, never a recipient's data), and sends nothing."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli_runner import ROOT, run_tocsin

BREACH = ROOT / "runbooks" / "third-party-breach.yaml"
INPUTS = [
    "--set", "third_party=TiersPay",
    "--set", "what_happened=Attackers entered the platform.",
    "--set", "data_concerned=surname,date of birth",
    "--set", "people_file=people.csv",
]  # fmt: skip


def recipients(folder: Path, count: int) -> None:
    rows = [f"person{n}@example.be,Person {n},{'nl' if n % 3 else 'fr'}" for n in range(count)]
    (folder / "people.csv").write_text(
        "email,name,language\n" + "\n".join(rows) + "\nnot-mail,X,fr\n"
    )


def test_the_plan_previews_the_campaign_and_sends_nothing(tmp_path: Path) -> None:
    recipients(tmp_path, 90)
    env = {
        "TOCSIN_NOTIFY__RECIPIENTS_FOLDER": str(tmp_path),
        "TOCSIN_NOTIFY__MESSAGES_PER_MINUTE": "30",
        "TOCSIN_NOTIFY__SMTP_HOST": "192.0.2.1",  # unreachable: nothing may connect to it
        "TOCSIN_NOTIFY__REPLY_TO": "incident@broker-office.example",
    }
    result = run_tocsin("plan", str(BREACH), "--json", *INPUTS, env=env)
    assert result.returncode == 0, result.stderr
    steps = {step["id"]: step for step in json.loads(result.stdout)["steps"]}
    preview = steps["notify_people_concerned"]["preview"]
    assert preview.startswith("90 recipient(s) (fr 30 · nl 60)")
    assert "1 row(s) cannot be sent to: rows 91" in preview
    assert "SMTP 192.0.2.1:587 at 30 per minute: about 3 min" in preview
    assert "--- fr ---" in preview and "--- nl ---" in preview and "--- en ---" not in preview
    assert "[nom du destinataire]" in preview and "Attention aux messages frauduleux" in preview
    assert "person1@" not in preview and "Person 1" not in preview
    assert "e-mail every recipient of people.csv" in steps["notify_people_concerned"]["touches"]
    assert steps["notify_people_concerned"]["needs_approval"] is True
    assert steps["notify_people_concerned"]["approved_by_gate"] == "approve_notifications"
    text = run_tocsin("plan", str(BREACH), *INPUTS, env=env)
    assert "preview:" in text.stdout and "90 recipient(s)" in text.stdout


def test_a_list_outside_the_folder_shows_in_the_preview_as_refused(tmp_path: Path) -> None:
    env = {"TOCSIN_NOTIFY__RECIPIENTS_FOLDER": str(tmp_path)}
    inputs = [*INPUTS[:-2], "--set", "people_file=../../etc/passwd"]
    result = run_tocsin("plan", str(BREACH), "--json", *inputs, env=env)
    assert result.returncode == 0, result.stderr
    steps = {step["id"]: step for step in json.loads(result.stdout)["steps"]}
    assert steps["notify_people_concerned"]["preview"].startswith(
        "cannot preview: the recipient list '../../etc/passwd' is outside the recipients folder"
    )
