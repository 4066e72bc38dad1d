"""The report's two sections on what actions read and did: the evidence captured before any
change (steps marked ``evidence: true``) and what Tocsin changed (every other action step).

Outputs come from the audit trail, where secret ones are already their keyed HMAC; such a
token is shown as "secret, not shown", never as a value. Structured outputs are laid out as
facts, tables and lists, each bounded (``MAX_ROWS`` rows, ``MAX_TEXT`` characters a value)
with a line saying how many were left out. The blocks are the ones ``render`` writes, so
Markdown, HTML and PDF escape every value the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from tocsin.audit import REDACTED_PREFIX
from tocsin.report.build import IncidentReport, StepSummary
from tocsin.statuses import StepStatus

Block = tuple[Any, ...]

MAX_ROWS = 25
"""Rows of one list shown in the evidence; the rest are counted ("12 more")."""
MAX_COLUMNS = 8
MAX_TEXT = 300
"""Characters of one value; longer values end with an ellipsis."""
MAX_SUMMARY = 500
"""Characters of one step's summary under What Tocsin changed."""
MAX_NAMED = 5
"""Items named in a summary's list (``removed: 3 (a, b, c)``)."""

# Keys naming an item of a list, first found first: a rule's name, a method's label...
_LABEL_KEYS = (
    "name",
    "label",
    "display_name",
    "app",
    "role",
    "trustee",
    "address",
    "device",
    "rule_identity",
    "reason",  # a campaign's failure: "row 12: 550 mailbox unavailable"
    "id",
)
# Left out of a change's one-line summary: the same on every step or said elsewhere.
_NOT_SUMMARISED = frozenset({"user", "user_id", "note", "deliveries"})
# (a campaign's deliveries: one HMAC and hash per recipient, in the JSON report and the export)

WORDING: dict[str, dict[str, str]] = {
    "en": {
        "evidence": "Evidence captured before any change",
        "evidence_intro": "What the steps marked evidence read before anything was removed, "
        "as the audit trail keeps it.",
        "changes": "What Tocsin changed",
        "changes_intro": "Each action step, what it found and what it changed.",
        "not_captured": "Not captured: the step {status}.",
        "more": "{count} more not shown (the JSON report and the audit export have them all).",
        "none": "none",
        "yes": "yes",
        "no": "no",
        "secret": "secret, not shown",
        "what": "What it found or changed",
        "step": "Step",
        "action": "Action",
        "status": "Status",
        "skipped": "skipped (its condition was false)",
        "in_annex": "in the annex",
    },
    "fr": {
        "evidence": "Preuves relevées avant toute modification",
        "evidence_intro": "Ce que les étapes de preuve ont lu avant toute suppression, tel que "
        "le journal d'audit le conserve.",
        "changes": "Ce que Tocsin a modifié",
        "changes_intro": "Chaque étape d'action, ce qu'elle a trouvé et ce qu'elle a modifié.",
        "not_captured": "Non relevé : l'étape est {status}.",
        "more": "{count} de plus non affichés (le rapport JSON et l'export d'audit les "
        "contiennent tous).",
        "none": "aucun",
        "yes": "oui",
        "no": "non",
        "secret": "secret, non affiché",
        "what": "Trouvé ou modifié",
        "step": "Étape",
        "action": "Action",
        "status": "Statut",
        "skipped": "ignorée (sa condition était fausse)",
        "in_annex": "en annexe",
    },
}


class Wording(Protocol):
    """What these sections need of the report's wording (``wording.Words``)."""

    @property
    def lang(self) -> str: ...

    def word(self, value: str | None) -> str: ...


class _Say:
    def __init__(self, words: Wording) -> None:
        self.words = words
        self.texts = WORDING[words.lang]

    def __call__(self, key: str) -> str:
        return self.texts[key]

    def value(self, value: Any, limit: int = MAX_TEXT) -> str:
        """One value as bounded text: lists joined, mappings as ``key: value``."""
        return _bounded(self._plain(value), limit)

    def _plain(self, value: Any) -> str:
        if value is None:
            return "—"
        if isinstance(value, bool):
            return self("yes") if value else self("no")
        if isinstance(value, str):
            return self("secret") if value.startswith(REDACTED_PREFIX) else value
        if isinstance(value, Mapping):
            if not value:
                return self("none")
            return ", ".join(f"{key}: {self._plain(item)}" for key, item in value.items())
        if isinstance(value, Sequence):
            if not value:
                return self("none")
            return ", ".join(self._plain(_label(item)) for item in value)
        return str(value)


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _label(item: Any) -> Any:
    """How an item of a list is named: its name, label, app... or the item itself."""
    if isinstance(item, Mapping):
        for key in _LABEL_KEYS:
            found = item.get(key)
            if found is not None and str(found).strip():  # an attacker's rule named " "
                return found
        return dict(item)
    return item


def _is_rows(value: Any) -> bool:
    return (
        isinstance(value, list) and bool(value) and all(isinstance(item, Mapping) for item in value)
    )


def _title(step: StepSummary) -> str:
    return f"{step.title} ({step.step_id})"


# evidence -------------------------------------------------------------------------------------


def evidence_blocks(report: IncidentReport, words: Wording) -> list[Block]:
    """The evidence section; nothing when no step of the incident is marked evidence."""
    steps = [s for s in report.steps if s.evidence]
    if not steps:
        return []
    say = _Say(words)
    blocks: list[Block] = [("h2", say("evidence")), ("p", say("evidence_intro"))]
    for step in steps:
        blocks.append(("h3", _title(step)))
        if step.status != StepStatus.SUCCEEDED:
            status = words.word(step.status) + (f": {step.error}" if step.error else "")
            blocks.append(("p", say("not_captured").format(status=status)))
            continue
        blocks += _outputs_blocks(_annex_aside(step, say), say)
    return blocks


def _annex_aside(step: StepSummary, say: _Say) -> dict[str, Any]:
    """The step's outputs, its annexed document replaced by a word saying it is annexed."""
    outputs = dict(step.outputs)
    if step.annex is not None and step.annex in outputs:
        outputs[step.annex] = say("in_annex")
    return outputs


def _outputs_blocks(outputs: Mapping[str, Any], say: _Say) -> list[Block]:
    facts = [
        (name, say.value(value))
        for name, value in outputs.items()
        if not _is_rows(value) and not _is_long_list(value)
    ]
    blocks: list[Block] = [("facts", facts)] if facts else []
    for name, value in outputs.items():
        if _is_rows(value):
            blocks.append(("p", f"{name} ({len(value)}):"))
            blocks.append(_table(value, say))
        elif _is_long_list(value):
            blocks.append(("p", f"{name} ({len(value)}):"))
            blocks.append(("items", [say.value(item) for item in value[:MAX_ROWS]]))
        else:
            continue
        if len(value) > MAX_ROWS:
            blocks.append(("p", say("more").format(count=len(value) - MAX_ROWS)))
    return blocks


def _is_long_list(value: Any) -> bool:
    """A list of plain values worth a list of its own rather than one fact."""
    return isinstance(value, list) and len(value) > MAX_NAMED


def _table(rows: list[Mapping[str, Any]], say: _Say) -> Block:
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    columns = columns[:MAX_COLUMNS]
    return (
        "table",
        columns,
        [[say.value(row.get(column)) for column in columns] for row in rows[:MAX_ROWS]],
    )


# changes --------------------------------------------------------------------------------------


def changes_blocks(report: IncidentReport, words: Wording) -> list[Block]:
    """What each action step (evidence aside) found and changed; nothing without one."""
    steps = [s for s in report.steps if s.kind == "action" and not s.evidence]
    if not steps:
        return []
    say = _Say(words)
    return [
        ("h2", say("changes")),
        ("p", say("changes_intro")),
        (
            "table",
            [say("step"), say("action"), say("status"), say("what")],
            [[_title(s), s.action or "—", words.word(s.status), _summary(s, say)] for s in steps],
        ),
    ]


def _summary(step: StepSummary, say: _Say) -> str:
    """One line: ``removed: 2 (Forward to x, Delete all); kept: 1 (Zoom); changed: yes``."""
    if step.status == StepStatus.SKIPPED:
        return say("skipped")
    if step.error:
        return say.value(step.error, MAX_SUMMARY)
    parts = []
    for name, value in _annex_aside(step, say).items():
        if name in _NOT_SUMMARISED:
            continue
        if isinstance(value, list):
            named = ", ".join(say.value(_label(item), 80) for item in value[:MAX_NAMED])
            more = f", +{len(value) - MAX_NAMED}" if len(value) > MAX_NAMED else ""
            parts.append(f"{name}: {len(value)}" + (f" ({named}{more})" if value else ""))
        else:
            parts.append(f"{name}: {say.value(value, 120)}")
    return _bounded("; ".join(parts), MAX_SUMMARY) if parts else "—"
