"""The draft of a personal-data breach notification to the data-protection authority.

It holds what GDPR art. 33(3) requires, section by section, in the authority's language:
(a) the nature of the breach with the categories and approximate numbers of people and of
records; (b) the contact point; (c) the likely consequences; (d) the measures taken (from
the run) or proposed. Around them: the controller, when the office became aware and when
the breach happened, the 72-hour deadline of art. 33(1) (with a section for the reasons
of a late notification), phased notification (33(4)), the breach register (33(5)) and,
when the risk is high, the communication to the people concerned (art. 34).

What the office must still fill in is marked "to complete" in the draft and listed, never
guessed. Values are escaped as Markdown text, so an input can add no heading, link or HTML.
The authority's form fields are not verified: the person copies each section into the field
that asks for it. Nothing here contacts an authority.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from tocsin.actions import StepSummary
from tocsin.integrations.notify.breach_wording import (
    AUTHORITY_NAMES,
    LANGUAGE_NAMES,
    TEXTS,
)
from tocsin.integrations.notify.settings import Language
from tocsin.private_paths import private_folder, write_file_atomically

Authority = Literal["apd", "cnil"]
AUTHORITIES: tuple[Authority, ...] = ("apd", "cnil")
NOTIFICATION_DEADLINE = timedelta(hours=72)
"""GDPR art. 33(1): within 72 hours of becoming aware, where feasible."""
ACCEPTED_LANGUAGES: dict[Authority, tuple[Language, ...]] = {"apd": ("fr", "nl"), "cnil": ("fr",)}

_OR = {"en": " or ", "fr": " ou ", "nl": " of het "}
_DATE = {"en": "%Y-%m-%d %H:%M UTC", "fr": "%d/%m/%Y %H:%M UTC", "nl": "%d-%m-%Y %H:%M UTC"}
_PEOPLE_STEPS = {"manual": "done", "approval": "approved"}

# Backslash-escaped: they open emphasis, code, links, images, raw HTML, entities, headings,
# block quotes or table cells (CommonMark lets any ASCII punctuation be escaped).
_MARKDOWN_SPECIAL = re.compile(r"[\\`*_\[\]<>&!|~#]")
_BLOCK_START = re.compile(r"^([-+=]|\d+[.)])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def markdown_text(value: object) -> str:
    """``value`` as literal Markdown text on one line: no heading, list, link or HTML."""
    text = " ".join(_CONTROL.sub(" ", str(value)).split())
    text = _MARKDOWN_SPECIAL.sub(lambda m: "\\" + m.group(0), text)
    return _BLOCK_START.sub(lambda m: "\\" + m.group(0), text)


def markdown_paragraphs(value: str) -> list[str]:
    """``value``'s paragraphs (split at blank lines), each as literal Markdown text."""
    parts = re.split(r"\n\s*\n", _CONTROL.sub(" ", value))
    return [markdown_text(part) for part in parts if part.strip()]


@dataclass(frozen=True)
class MeasureTaken:
    """A step of the run that did something: an action that succeeded, a person's step done."""

    title: str
    finished_at: str
    touches: str
    completed_by: str


def measures_taken(steps: Sequence[StepSummary], draft_step: str) -> list[MeasureTaken]:
    """The run's steps that count as measures taken (art. 33(3)(d)), in runbook order:
    succeeded action steps and done or approved people's steps, the draft's own step aside."""
    return [
        MeasureTaken(step.title, step.finished_at, _sentence(step), step.completed_by)
        for step in steps
        if step.step_id != draft_step
        and (
            (step.kind == "action" and step.status == "succeeded")
            or _PEOPLE_STEPS.get(step.kind) == step.status
        )
    ]


def _sentence(step: StepSummary) -> str:
    """What the step touched, in its action's words; nothing when the action has no sentence
    of its own (its call written as ``name(parameter=value)`` is no measure's description)."""
    if step.action and step.touches.startswith(f"{step.action}("):
        return ""
    return step.touches


def draft_language(
    authority: Authority, office_language: Language, asked: Language | None = None
) -> Language:
    """The draft's language: the one asked for, else the authority's (the office's own for
    the APD/GBA when it is French or Dutch, French otherwise)."""
    if asked is not None:
        return asked
    accepted = ACCEPTED_LANGUAGES[authority]
    return office_language if office_language in accepted else accepted[0]


@dataclass(frozen=True)
class BreachFacts:
    """What the draft says, from the step's parameters, the settings and the run."""

    incident: str
    authority: Authority
    language: Language
    controller: str
    contact: str
    nature: str
    data_categories: Sequence[str]
    people_categories: Sequence[str]
    people_count: int
    """0: unknown."""
    records_count: int | None
    consequences: str
    measures_taken: Sequence[MeasureTaken]
    measures_proposed: Sequence[str]
    high_risk: bool
    people_informed: int | None
    aware_at: datetime | None
    breach_started_at: str | None
    delay_reasons: str | None


@dataclass(frozen=True)
class BreachDraft:
    """The draft and what the step's outputs say of it."""

    markdown: str
    deadline: datetime | None
    late: bool
    to_complete: list[str]


def parse_moment(text: str) -> datetime | None:
    """An ISO 8601 moment (a naive one is UTC), or None when ``text`` is empty."""
    if not text:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class _Writer:
    """The draft's lines in one language, with the items left to complete."""

    def __init__(self, language: Language) -> None:
        self.language = language
        self.texts = TEXTS[language]
        self.lines: list[str] = []
        self.missing: list[str] = []

    def __call__(self, key: str, **values: str) -> str:
        return self.texts[key].format(**values)

    def when(self, moment: datetime) -> str:
        return moment.astimezone(UTC).strftime(_DATE[self.language])

    def to_complete(self, need: str) -> str:
        """A marker in the draft for ``need``, which is added to the list."""
        item = self(need)
        if item not in self.missing:
            self.missing.append(item)
        return f"**[{self('marker')}: {markdown_text(item)}]**"

    def heading(self, level: int, text: str) -> None:
        self.lines += ["#" * level + " " + markdown_text(text), ""]

    def paragraph(self, text: str) -> None:
        """A paragraph of already written Markdown."""
        self.lines += [text, ""]

    def text(self, value: str, need: str) -> None:
        """A value given as text, its paragraphs kept; the marker when it is blank."""
        paragraphs = markdown_paragraphs(value)
        for paragraph in paragraphs or [self.to_complete(need)]:
            self.paragraph(paragraph)

    def facts(self, rows: Sequence[tuple[str, str]]) -> None:
        self.lines += [f"- **{markdown_text(label)}**: {value}" for label, value in rows]
        self.lines.append("")

    def items(self, values: Sequence[str]) -> None:
        self.lines += [f"- {value}" for value in values]
        self.lines.append("")


def _listed(values: Sequence[str], writer: _Writer, need: str) -> str:
    shown = [markdown_text(value) for value in values if value.strip()]
    return ", ".join(shown) if shown else writer.to_complete(need)


def _count(value: int | None, writer: _Writer, need: str) -> str:
    return f"{value:,}".replace(",", " ") if value else writer.to_complete(need)


def _measure_line(measure: MeasureTaken, writer: _Writer) -> str:
    line = f"**{markdown_text(measure.title)}**"
    moment = parse_moment(measure.finished_at) if measure.finished_at else None
    details = [writer.when(moment)] if moment is not None else []
    if measure.completed_by:
        details.append(writer("by", who=measure.completed_by))
    if details:
        line += " (" + markdown_text(", ".join(details)) + ")"
    if measure.touches:
        line += ": " + markdown_text(measure.touches)
    return line


def write_draft(facts: BreachFacts, now: datetime) -> BreachDraft:
    """The draft notification as Markdown in ``facts.language``, as things stand at ``now``."""
    w = _Writer(facts.language)
    accepted = ACCEPTED_LANGUAGES[facts.authority]
    names = LANGUAGE_NAMES[facts.language]
    languages = _OR[facts.language].join(names[code] for code in accepted)
    body = _Writer(facts.language)  # the sections, written before the list of what is missing
    body.missing = w.missing

    if facts.language not in accepted:
        body.paragraph(markdown_text(w("language_note", languages=languages)))
        w.missing.append(w("translate", languages=languages))

    body.heading(2, w("controller"))
    body.facts(
        [
            (
                w("controller_name"),
                markdown_text(facts.controller)
                if facts.controller.strip()
                else body.to_complete("need_controller"),
            ),
            (w("reference"), markdown_text(facts.incident)),
        ]
    )

    deadline = facts.aware_at + NOTIFICATION_DEADLINE if facts.aware_at is not None else None
    late = deadline is not None and now > deadline
    body.heading(2, w("dates"))
    started = (facts.breach_started_at or "").strip()
    body.facts(
        [
            (
                w("aware"),
                markdown_text(w.when(facts.aware_at))
                if facts.aware_at is not None
                else body.to_complete("need_aware"),
            ),
            (w("started"), markdown_text(started) if started else body.to_complete("need_started")),
            (
                w("deadline"),
                markdown_text(w.when(deadline))
                if deadline is not None
                else body.to_complete("need_aware"),
            ),
            (w("status"), markdown_text(w("late") if late else w("in_time"))),
        ]
    )
    if late:
        body.heading(2, w("delay"))
        body.text(facts.delay_reasons or "", "need_delay")

    body.heading(2, w("a"))
    body.text(facts.nature, "need_nature")
    body.facts(
        [
            (w("data_categories"), _listed(facts.data_categories, body, "need_data_categories")),
            (
                w("people_categories"),
                _listed(facts.people_categories, body, "need_people_categories"),
            ),
            (w("people_count"), _count(facts.people_count, body, "need_people")),
            (w("records_count"), _count(facts.records_count, body, "need_records")),
        ]
    )

    body.heading(2, w("b"))
    body.text(facts.contact, "need_contact")

    body.heading(2, w("c"))
    body.text(facts.consequences, "need_consequences")

    body.heading(2, w("d"))
    body.heading(3, w("taken"))
    if facts.measures_taken:
        if facts.language != "en":
            body.paragraph(markdown_text(w("titles_note")))
        body.items([_measure_line(measure, body) for measure in facts.measures_taken])
    else:
        body.paragraph(body.to_complete("need_taken"))
    body.heading(3, w("proposed"))
    proposed = [markdown_text(item) for item in facts.measures_proposed if item.strip()]
    if proposed:
        body.items(proposed)
    else:
        body.paragraph(body.to_complete("need_proposed"))

    body.heading(2, w("art34"))
    if facts.high_risk:
        body.paragraph(markdown_text(w("high_risk")))
        informed = (
            _count(facts.people_informed, body, "need_inform")
            if facts.people_informed is not None
            else body.to_complete("need_informed")
        )
        if facts.people_informed == 0:
            informed = "0 " + informed
        body.facts([(w("informed"), informed)])
        body.heading(3, w("message"))
        done = "; ".join(m.title for m in facts.measures_taken)
        next_steps = "; ".join(item for item in facts.measures_proposed if item.strip())
        lines = []
        for key, value, need in (
            ("msg_what", facts.nature, "need_nature"),
            ("msg_risk", facts.consequences, "need_consequences"),
            ("msg_done", done, "need_taken"),
            ("msg_advice", next_steps, "need_proposed"),
            ("msg_contact", facts.contact, "need_contact"),
        ):
            shown = markdown_text(value) if value.strip() else body.to_complete(need)
            lines.append(markdown_text(w(key, text="")) + " " + shown)
        body.items(lines)
    else:
        body.paragraph(markdown_text(w("low_risk")))
        if facts.people_informed:
            body.facts([(w("informed_anyway"), _count(facts.people_informed, body, "need_inform"))])

    body.heading(2, w("phases"))
    body.paragraph(markdown_text(w("phases_text")))
    body.paragraph(markdown_text(w("register")))

    w.heading(1, w("title", authority=AUTHORITY_NAMES[facts.language][facts.authority]))
    w.paragraph(markdown_text(w("intro", incident=facts.incident)))
    w.heading(2, w("submit"))
    w.paragraph(markdown_text(w(f"form_{facts.authority}")))
    w.heading(2, w("to_complete"))
    if w.missing:
        w.items([markdown_text(item) for item in w.missing])
    else:
        w.paragraph(markdown_text(w("nothing_to_complete")))
    markdown = "\n".join(w.lines + body.lines).rstrip() + "\n"
    return BreachDraft(markdown, deadline, late, list(w.missing))


def save_draft(folder: Path, stem: str, markdown: str) -> tuple[Path, str]:
    """Write the draft as ``<stem>.md`` in ``folder`` (0700; the file 0600) and return its
    path and SHA-256. An earlier draft of that name with other content is kept: this one
    then goes to ``<stem>-2.md`` (or the next free number)."""
    content = markdown.encode("utf-8")
    digest = hashlib.sha256(content).hexdigest()
    private_folder(folder)
    number = 1
    while True:
        path = folder / (f"{stem}.md" if number == 1 else f"{stem}-{number}.md")
        if not path.exists() and not path.is_symlink():
            write_file_atomically(path, content)
            return path, digest
        if path.is_file() and not path.is_symlink() and path.read_bytes() == content:
            return path, digest
        number += 1
