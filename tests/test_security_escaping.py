"""Hostile values in a run cannot format, mention or link anything where Tocsin shows them.

One real run on Prefect, announced to the fake Slack and the fake Jira on loopback: the
requester's inputs carry Slack mrkdwn (``<!channel>``, a link dressed as "Approve here",
backticks), terminal escape sequences, and the approver's comment carries Jira wiki and
Markdown links and raw HTML. The tests read what the fakes received, what ``tocsin
status`` printed and the Markdown report, and find every value shown as text.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from markdown_it import MarkdownIt

from tests.cli_runner import run_tocsin
from tests.engine_support import HEAD, settings_journal, start_flow
from tocsin.audit import AuditKey
from tocsin.integrations.jira.client import jira_text
from tocsin.integrations.jira.fake import SANDBOX_JIRA_TOKEN, SANDBOX_JIRA_USER, FakeJira
from tocsin.integrations.slack.client import slack_text, slack_value
from tocsin.integrations.slack.fake import SANDBOX_BOT_TOKEN, FakeSlack, SlackChannel
from tocsin.report import build_report, render
from tocsin.report.render import markdown_text
from tocsin.settings import load_settings
from tocsin.status import terminal_text

pytestmark = pytest.mark.slow

TICKET = "ESC-1"
OFFICE_NAME = "<!channel> <https://evil.example|Approve here> `x` *bold*"
CONTACT = "\x1b]0;owned\x07\x1b[2J\x1b[31mMallory\x1b[0m"
COMMENT = (
    "[click|http://evil.example] {noformat} [~accountid:5b10] "
    "[Approve](https://evil.example) <img src=x onerror=alert(1)> <!here>"
)

RUNBOOK = (
    HEAD.format(runbook_id="hostile").replace(
        "inputs:\n",
        "inputs:\n"
        "  office_name: {type: string, description: The office as the broker named it}\n"
        "  contact: {type: string, description: Who called}\n",
    )
    + """\
steps:
  - id: approve_disconnect
    title: Approve disconnecting the office
    approval:
      approvers: leads
      quorum: 1
      prompt: "Disconnect office {{ inputs.office_name }} ({{ inputs.contact }})?"
      timeout: 1h
  - id: tell_channel
    title: Tell the channel
    action: slack.post_message
    with:
      channel: "#support-incidents"
      text: "Office *{{ inputs.office_name }}* is cut off: <https://status.example|status page>"
  - id: note_the_call
    title: Note what the caller said
    action: log
    with: {message: "{{ inputs.office_name }} <img src=x onerror=alert(1)> | ## Approved"}
    evidence: true
  - id: look_up_office
    title: Look the office up
    action: test.fail
    with: {message: "the platform knows no office {{ inputs.office_name }}"}
"""
)


@dataclass(frozen=True)
class HostileRun:
    slack: FakeSlack
    jira: FakeJira
    status_output: str
    markdown: str
    html: str


@pytest.fixture(scope="module")
def hostile_run(
    prefect_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostileRun]:
    folder = tmp_path_factory.mktemp("escaping")
    with (
        FakeSlack(channels=(SlackChannel("C0INCIDENTS", "support-incidents"),)) as slack,
        FakeJira() as jira,
    ):
        jira.add_issue(TICKET, {"summary": "Office hacked"})
        values = {
            "TOCSIN_DATA_DIR": str(folder / "data"),
            "TOCSIN_SLACK__API_URL": f"{slack.url}/api/",
            "TOCSIN_SLACK__INCIDENT_CHANNEL": "#support-incidents",
            "TOCSIN_ANNOUNCE__PROGRESS_EVERY_SECONDS": "0",
            "TOCSIN_SECRET_SLACK_BOT_TOKEN": SANDBOX_BOT_TOKEN,
            "TOCSIN_JIRA__URL": jira.url,
            "TOCSIN_JIRA__USER": SANDBOX_JIRA_USER,
            "TOCSIN_JIRA__ATTACH_REPORT": "false",
            "TOCSIN_SECRET_JIRA_API_TOKEN": SANDBOX_JIRA_TOKEN,
        }
        saved = {key: os.environ.get(key) for key in values}
        os.environ.update(values)
        journal = settings_journal()
        try:
            flow = start_flow(
                journal,
                RUNBOOK,
                folder,
                ticket=TICKET,
                inputs={"office_name": OFFICE_NAME, "contact": CONTACT},
            )
            flow.request("approve_disconnect")
            status = run_tocsin("status", TICKET)
            assert status.returncode == 0, status.stderr
            flow.decide("approve_disconnect", "approve", "U0LEAD1", comment=COMMENT)
            assert flow.finish()["status"] == "failed"
            key = AuditKey.load(load_settings().audit_key_path)
            report = build_report(
                TICKET, journal.audit_records(TICKET), journal.verify(TICKET, key.public_key)
            )
            yield HostileRun(
                slack,
                jira,
                status.stdout,
                render(report, "md").decode(),
                render(report, "html").decode(),
            )
        finally:
            journal.close()
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


# what the fake Slack received ------------------------------------------------------------


def _text_objects(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("type") in ("mrkdwn", "plain_text") and isinstance(node.get("text"), str):
            yield node
        for value in node.values():
            yield from _text_objects(value)
    elif isinstance(node, list):
        for item in node:
            yield from _text_objects(item)


def slack_mrkdwn(slack: FakeSlack, *, fallbacks: bool = True) -> list[str]:
    """Every mrkdwn text sent in chat.postMessage, chat.update and chat.postEphemeral.

    A message's top-level ``text`` is shown as mrkdwn when it has no blocks; with blocks
    it is only the notification, which still pings a mention (``fallbacks``).
    """
    texts: list[str] = []
    for method in ("chat.postMessage", "chat.update", "chat.postEphemeral"):
        for request in slack.calls_of(method):
            arguments = request.json()
            blocks = arguments.get("blocks") or []
            if isinstance(blocks, str):
                blocks = json.loads(blocks)
            if fallbacks or not blocks:
                texts.append(str(arguments.get("text") or ""))
            texts += [o["text"] for o in _text_objects(blocks) if o["type"] == "mrkdwn"]
    return texts


def slack_plain_text(slack: FakeSlack) -> list[str]:
    texts = []
    for method in ("chat.postMessage", "chat.update"):
        for request in slack.calls_of(method):
            blocks = request.json().get("blocks") or []
            texts += [o["text"] for o in _text_objects(blocks) if o["type"] == "plain_text"]
    return texts


def outside_code_spans(text: str) -> str:
    return re.sub(r"`[^`\n]*`", "", text)


def test_channel_mention_in_input_is_not_a_live_mention(hostile_run: HostileRun) -> None:
    mrkdwn = slack_mrkdwn(hostile_run.slack)
    assert any("&lt;!channel&gt;" in text for text in mrkdwn)  # the input is shown...
    for text in mrkdwn:  # ...and never as Slack's <!channel>, <!here> or <!everyone>
        assert not re.search(r"<!(channel|here|everyone)\b", text), text
    header = next(text for text in mrkdwn if text.startswith("*Inputs*"))
    shown = next(line for line in header.splitlines() if line.startswith("• office_name"))
    assert shown == (  # the thread's header lists the inputs, each in a code span
        '• office_name: `"&lt;!channel&gt; &lt;https://evil.example|Approve here&gt; ˋxˋ *bold*"`'
    )


def test_input_in_a_runbooks_own_slack_message_is_text_and_its_markup_is_kept(
    hostile_run: HostileRun,
) -> None:
    posted = [
        request.json()["text"]
        for request in hostile_run.slack.calls_of("chat.postMessage")
        if str(request.json().get("text", "")).startswith("Office *")
    ]
    assert posted == [
        f"Office *{slack_value(OFFICE_NAME)}* is cut off: <https://status.example|status page>"
    ]
    assert "<!channel>" not in posted[0] and "<https://evil.example" not in posted[0]


def test_link_in_input_cannot_masquerade_as_approve_button(hostile_run: HostileRun) -> None:
    for text in slack_mrkdwn(hostile_run.slack):
        assert "<https://evil.example" not in text, text
        assert not re.search(r"<[^<>|]*\|Approve", text), text
    gate = next(
        request.json()
        for request in hostile_run.slack.calls_of("chat.postMessage")
        if any(b.get("type") == "actions" for b in request.json().get("blocks") or [])
    )
    prompt = gate["blocks"][1]["text"]
    assert prompt["type"] == "plain_text"  # shown exactly as rendered, nothing parsed
    assert OFFICE_NAME in prompt["text"]
    assert "&lt;https://evil.example|Approve here&gt;" in gate["text"]
    buttons = [
        e["text"]["text"] for b in gate["blocks"] if b["type"] == "actions" for e in b["elements"]
    ]
    assert buttons == ["Approve", "Reject"]  # the only Approve is Tocsin's button


def test_backticks_in_input_cannot_break_out_of_code(hostile_run: HostileRun) -> None:
    mrkdwn = slack_mrkdwn(hostile_run.slack, fallbacks=False)
    for text in mrkdwn:
        rest = outside_code_spans(text)
        assert "`" not in rest, text  # every code span Tocsin opens is the one it closes
        assert "*bold*" not in rest and "`x`" not in text, text
    detail = next(text for text in mrkdwn if "`look_up_office`" in text and ":x:" in text)
    assert "the platform knows no office" in detail
    assert "*bold*" not in outside_code_spans(detail)
    decided = [text for text in slack_plain_text(hostile_run.slack) if "click" in text]
    assert decided == [f"“{COMMENT}”"] * len(decided) and decided  # the comment, as plain text


# what the fake Jira received ---------------------------------------------------------------


def test_jira_link_markup_in_comment_is_escaped(hostile_run: HostileRun) -> None:
    bodies = [comment.body for comment in hostile_run.jira.comments(TICKET)]
    decided = next(body for body in bodies if "approved by U0LEAD1" in body)
    assert r"\[click\|http://evil.example\] \{noformat\} \[\~accountid:5b10\]" in decided
    started = next(body for body in bodies if "Inputs:" in body)
    assert r"<\!channel> <https://evil.example\|Approve here> `x` \*bold\*" in started
    for body in bodies:  # no link, mention, macro or image opens anywhere
        assert not re.search(r"(?<!\\)[\[\]{}!|]", body), body


# the Markdown and HTML reports -------------------------------------------------------------


def test_markdown_report_does_not_render_injected_links_or_html(hostile_run: HostileRun) -> None:
    markdown = hostile_run.markdown
    assert "Approve here" in markdown and "onerror" in markdown  # the values are reported
    page = MarkdownIt("commonmark").enable("table").render(markdown)
    assert "<a " not in page and "<img" not in page and "<script" not in page
    assert "<code>" not in page and "<strong>bold" not in page and "<em>" not in page
    assert page.count("<h1>") == 1
    assert page.count("<h2>") == markdown.count("\n## ") + markdown.startswith("## ")
    tables = re.findall(r"(?:^\|.*\n)+", markdown, re.M)
    assert len(tables) == page.count("<table>")  # no value cut a table short
    for table in tables:  # no value added a column
        widths = {len(re.findall(r"(?<!\\)\|", line)) for line in table.splitlines()}
        assert len(widths) == 1, table
    html = hostile_run.html
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_evidence_values_with_markup_are_shown_as_text_in_the_report(
    hostile_run: HostileRun,
) -> None:
    markdown = hostile_run.markdown
    start = markdown.index("\n## Evidence captured before any change\n")
    evidence = markdown[start : markdown.index("\n## ", start + 1)]
    assert "onerror=alert(1)" in evidence and "Approve here" in evidence  # the value is there...
    page = MarkdownIt("commonmark").enable("table").render(evidence)
    assert "<img" not in page and "<a " not in page and "<code>" not in page  # ...as text
    assert page.count("<h2>") == 1 and "<h2>Approved" not in page
    assert "&lt;img src=x onerror=alert(1)&gt; | ## Approved" in page
    html = hostile_run.html
    shown = html[html.index("Evidence captured before any change") :]
    assert "&lt;img src=x onerror=alert(1)&gt; | ## Approved" in shown
    assert "<img" not in html and "&lt;https://evil.example|Approve here&gt;" in shown


# the terminal ------------------------------------------------------------------------------


def test_ansi_escapes_in_input_do_not_reach_the_terminal(hostile_run: HostileRun) -> None:
    shown = hostile_run.status_output
    assert "Mallory" in shown  # the prompt is printed...
    assert "\x1b" not in shown and "\x07" not in shown  # ...without its escape sequences
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", shown)


# each escaping function on its own -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<!channel>", "&lt;!channel&gt;"),
        ("<@U0BOSS1> & <!subteam^S0LEADS>", "&lt;@U0BOSS1&gt; &amp; &lt;!subteam^S0LEADS&gt;"),
        ("<https://evil.example|Approve>", "&lt;https://evil.example|Approve&gt;"),
        ("```x```", "ˋˋˋxˋˋˋ"),
        ("&lt;already&gt;", "&amp;lt;already&amp;gt;"),
        ("OF-1042 anne_smith", "OF-1042 anne_smith"),
    ],
)
def test_slack_text_shows_mentions_links_and_backticks_as_typed(value: str, expected: str) -> None:
    assert slack_text(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("[click|http://evil]", r"\[click\|http://evil\]"),
        ("{noformat}x{noformat}", r"\{noformat\}x\{noformat\}"),
        ("!image.png! [~accountid:1]", r"\!image.png\! \[\~accountid:1\]"),
        ("{color:red}a{color}", r"\{color:red\}a\{color\}"),
        ("*bold* _it_ -gone- +u+ ^s^ ??c??", r"\*bold\* \_it\_ \-gone\- \+u\+ \^s\^ \?\?c\?\?"),
        ("plain-jira anne_smith 2026-12-01", "plain-jira anne_smith 2026-12-01"),
        ("(y) :) (plain v1)", r"\(y) :\) (plain v1)"),
        ("h1. big\n# item\n  bq. quote", "\u200bh1. big\n\u200b# item\n  \u200bbq. quote"),
        ("a\\\\b \\[x]", "a\\\u200b\\\u200bb \\\u200b\\[x\\]"),
    ],
)
def test_jira_text_escapes_wiki_markup_but_keeps_words(value: str, expected: str) -> None:
    assert jira_text(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("[a](http://evil) ![i](x.png)", r"\[a\](http://evil) \!\[i\](x.png)"),
        ("<script>x</script> &", "&lt;script&gt;x&lt;/script&gt; &amp;"),
        ("a | b\n# heading", r"a \| b # heading"),
        ("`code` *b* _i_ ~~s~~", r"\`code\` \*b\* \_i\_ \~\~s\~\~"),
        ("Reset the account (reset_account)", "Reset the account (reset_account)"),
    ],
)
def test_markdown_text_escapes_links_html_and_tables(value: str, expected: str) -> None:
    assert markdown_text(value) == expected


def test_terminal_text_removes_escape_sequences_and_controls() -> None:
    assert terminal_text("\x1b[2Jred\x07\r\x08 ok\tnow\u202e") == "?[2Jred??? ok now?"
