"""Wording and layout of the report: one document, written as Markdown, HTML, PDF or JSON.

The report is first laid out as a list of blocks (headings, facts, tables, paragraphs)
in the chosen language; Markdown and HTML write the same blocks, and the PDF is the HTML
printed by WeasyPrint, so the formats never say different things. The sections on what
actions read and changed are laid out in ``action_outputs``.

Every value from the trail (inputs, step titles and errors, decision comments, names) is
written as text: ``markdown_text`` escapes it for Markdown, ``html.escape`` for HTML, so
a value can add no link, image, raw HTML, heading or table cell to the report.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from tocsin.errors import ConfigurationError
from tocsin.report.action_outputs import changes_blocks, evidence_blocks
from tocsin.report.build import IncidentReport

Format = Literal["md", "html", "pdf", "json"]
Language = Literal["en", "fr"]
FORMATS: tuple[Format, ...] = ("md", "html", "pdf", "json")
LANGUAGES: tuple[Language, ...] = ("en", "fr")

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "title": "Post-incident report",
        "summary": "Summary",
        "incident": "Incident",
        "ticket": "Ticket",
        "incident_title": "Title",
        "severity": "Severity",
        "outcome": "Outcome",
        "runbooks": "Runbooks",
        "runbook": "Runbook",
        "version": "Version",
        "requested_by": "Requested by",
        "via": "From",
        "started": "Started",
        "finished": "Finished",
        "status": "Status",
        "prefect": "Prefect state",
        "prefect_unavailable": "unavailable (Prefect could not be read)",
        "time_to_contain": "Time to contain",
        "not_contained": "not contained (no containment step finished)",
        "generated": "Generated",
        "steps": "Steps",
        "step": "Step",
        "kind": "Kind",
        "phase": "Phase",
        "duration": "Duration",
        "attempts": "Attempts",
        "error": "Error",
        "approvals": "Approvals",
        "requested": "Requested",
        "decided": "Decided",
        "waited": "Waited",
        "decided_by": "Decided by",
        "quorum": "Quorum",
        "group": "Approvers",
        "no_approvals": "No approval gate in this incident.",
        "refused": "Refused decisions",
        "who": "Who",
        "channel": "Channel",
        "reason": "Reason",
        "decision": "Decision",
        "manual_tasks": "Manual tasks",
        "done_by": "Done by",
        "ticked": "Ticked",
        "not_ticked": "Not ticked",
        "no_manual": "No manual task in this incident.",
        "communications": "Communications sent",
        "messages": "Messages",
        "no_communications": "No message sent by Tocsin.",
        "clocks": "Regulatory clocks",
        "clock": "Obligation",
        "deadline": "Deadline",
        "stopped": "Met at",
        "source": "Source",
        "no_clocks": "No regulatory clock in these runbooks.",
        "timeline": "Timeline",
        "time": "Time",
        "event": "Event",
        "detail": "Detail",
        "audit": "Audit trail",
        "records": "Records",
        "checkpoints": "Signed checkpoints",
        "head": "Chain head",
        "verification": "Verification",
        "intact": "intact",
        "not_intact": "NOT intact",
        "not_checked": "signatures not checked (no public key)",
        "keys": "Signing keys",
        "anchors": "Published heads (anchors)",
        "verify_with": "Verify with",
        "lessons": "Lessons learned",
        "lessons_hint": "To be written by the incident lead: what worked, what did not, what changes.",
        "routine_left_out": "{count} routine step events (started, succeeded, retried, message sent) are left out of the printed timeline: they are in the Steps table, and every event is in the HTML and JSON reports.",
        "none": "none",
        "unknown": "unknown",
    },
    "fr": {
        "title": "Rapport post-incident",
        "summary": "Synthèse",
        "incident": "Incident",
        "ticket": "Ticket",
        "incident_title": "Intitulé",
        "severity": "Gravité",
        "outcome": "Issue",
        "runbooks": "Procédures",
        "runbook": "Procédure",
        "version": "Version",
        "requested_by": "Demandé par",
        "via": "Depuis",
        "started": "Début",
        "finished": "Fin",
        "status": "Statut",
        "prefect": "État Prefect",
        "prefect_unavailable": "indisponible (Prefect n'a pas pu être lu)",
        "time_to_contain": "Délai de confinement",
        "not_contained": "non confiné (aucune étape de confinement terminée)",
        "generated": "Généré le",
        "steps": "Étapes",
        "step": "Étape",
        "kind": "Type",
        "phase": "Phase",
        "duration": "Durée",
        "attempts": "Tentatives",
        "error": "Erreur",
        "approvals": "Approbations",
        "requested": "Demandée",
        "decided": "Décidée",
        "waited": "Attente",
        "decided_by": "Décidée par",
        "quorum": "Quorum",
        "group": "Approbateurs",
        "no_approvals": "Aucune approbation dans cet incident.",
        "refused": "Décisions refusées",
        "who": "Qui",
        "channel": "Canal",
        "reason": "Motif",
        "decision": "Décision",
        "manual_tasks": "Tâches manuelles",
        "done_by": "Faite par",
        "ticked": "Cochés",
        "not_ticked": "Non cochés",
        "no_manual": "Aucune tâche manuelle dans cet incident.",
        "communications": "Communications envoyées",
        "messages": "Messages",
        "no_communications": "Aucun message envoyé par Tocsin.",
        "clocks": "Délais réglementaires",
        "clock": "Obligation",
        "deadline": "Échéance",
        "stopped": "Respectée le",
        "source": "Source",
        "no_clocks": "Aucun délai réglementaire dans ces procédures.",
        "timeline": "Chronologie",
        "time": "Heure",
        "event": "Événement",
        "detail": "Détail",
        "audit": "Journal d'audit",
        "records": "Enregistrements",
        "checkpoints": "Points de contrôle signés",
        "head": "Tête de chaîne",
        "verification": "Vérification",
        "intact": "intact",
        "not_intact": "NON intact",
        "not_checked": "signatures non vérifiées (pas de clé publique)",
        "keys": "Clés de signature",
        "anchors": "Têtes publiées (ancres)",
        "verify_with": "Vérifier avec",
        "lessons": "Retour d'expérience",
        "lessons_hint": "À rédiger par le responsable de l'incident : ce qui a marché, ce qui n'a pas marché, ce qui change.",
        "routine_left_out": "{count} événements courants (étape démarrée, réussie, nouvelle tentative, message envoyé) ne sont pas repris dans la chronologie imprimée : ils figurent dans le tableau des étapes, et tous les événements sont dans les rapports HTML et JSON.",
        "none": "aucun",
        "unknown": "inconnu",
    },
}

WORDS: dict[str, dict[str, str]] = {
    "en": {
        "succeeded": "succeeded",
        "failed": "failed",
        "skipped": "skipped",
        "undone": "undone",
        "approved": "approved",
        "rejected": "rejected",
        "done": "done",
        "timed_out": "timed out",
        "waiting": "waiting",
        "running": "running",
        "met": "met",
        "missed": "MISSED",
        "overdue": "OVERDUE",
        "not_required": "not required",
        "approve": "approve",
        "reject": "reject",
        "action": "action",
        "approval": "approval",
        "manual": "manual task",
        "in_doubt": "check after crash",
        "contain": "contain",
        "eradicate": "eradicate",
        "recover": "recover",
        "communicate": "communicate",
        "notify": "notify",
        "low": "low",
        "medium": "medium",
        "high": "high",
        "critical": "critical",
        "unknown": "unknown",
    },
    "fr": {
        "succeeded": "réussie",
        "failed": "échouée",
        "skipped": "ignorée",
        "undone": "annulée",
        "approved": "approuvée",
        "rejected": "rejetée",
        "done": "faite",
        "timed_out": "expirée",
        "waiting": "en attente",
        "running": "en cours",
        "met": "respecté",
        "missed": "DÉPASSÉ",
        "overdue": "EN RETARD",
        "not_required": "non requis",
        "approve": "approuver",
        "reject": "rejeter",
        "action": "action",
        "approval": "approbation",
        "manual": "tâche manuelle",
        "in_doubt": "vérification après panne",
        "contain": "confiner",
        "eradicate": "éradiquer",
        "recover": "rétablir",
        "communicate": "communiquer",
        "notify": "notifier",
        "low": "faible",
        "medium": "moyenne",
        "high": "élevée",
        "critical": "critique",
        "unknown": "inconnue",
    },
}

EVENT_NAMES: dict[str, dict[str, str]] = {
    "en": {
        "run.started": "run started",
        "run.resumed": "run resumed",
        "run.finished": "run finished",
        "step.started": "step started",
        "step.succeeded": "step succeeded",
        "step.failed": "step failed",
        "step.retried": "step retried",
        "step.attempt_failed": "attempt failed",
        "step.skipped": "step skipped",
        "step.undone": "step undone",
        "step.undo_failed": "undo failed",
        "step.approved": "gate approved",
        "step.rejected": "gate rejected",
        "step.done": "task done",
        "step.timed_out": "timed out",
        "approval.requested": "approval requested",
        "manual.requested": "manual task requested",
        "in_doubt.requested": "check requested",
        "approval.escalated": "approval escalated",
        "approval.timed_out": "approval timed out",
        "decision.received": "decision received",
        "decision.applied": "decision applied",
        "decision.refused": "decision refused",
        "message.sent": "message sent",
        "clock.started": "clock started",
        "clock.stopped": "clock stopped",
        "audit.checkpoint_anchored": "head published",
        "audit.anchor_failed": "head not published",
        "approval.reminded": "approvers reminded",
        "manual.reminded": "reminder sent",
        "announce.failed": "notification failed",
        "gateway.request_refused": "request refused (not authentic)",
        "run.request_refused": "run request refused",
    },
    "fr": {
        "run.started": "exécution démarrée",
        "run.resumed": "exécution reprise",
        "run.finished": "exécution terminée",
        "step.started": "étape démarrée",
        "step.succeeded": "étape réussie",
        "step.failed": "étape échouée",
        "step.retried": "nouvelle tentative",
        "step.attempt_failed": "tentative échouée",
        "step.skipped": "étape ignorée",
        "step.undone": "étape annulée",
        "step.undo_failed": "annulation échouée",
        "step.approved": "approbation accordée",
        "step.rejected": "approbation rejetée",
        "step.done": "tâche faite",
        "step.timed_out": "délai expiré",
        "approval.requested": "approbation demandée",
        "manual.requested": "tâche manuelle demandée",
        "in_doubt.requested": "vérification demandée",
        "approval.escalated": "approbation escaladée",
        "approval.timed_out": "approbation expirée",
        "decision.received": "décision reçue",
        "decision.applied": "décision appliquée",
        "decision.refused": "décision refusée",
        "message.sent": "message envoyé",
        "clock.started": "délai démarré",
        "clock.stopped": "délai arrêté",
        "audit.checkpoint_anchored": "tête publiée",
        "audit.anchor_failed": "tête non publiée",
        "approval.reminded": "rappel aux approbateurs",
        "manual.reminded": "rappel envoyé",
        "announce.failed": "notification échouée",
        "gateway.request_refused": "requête refusée (non authentique)",
        "run.request_refused": "demande d'exécution refusée",
    },
}


@dataclass
class _Words:
    lang: Language

    def __call__(self, key: str) -> str:
        return MESSAGES[self.lang][key]

    def word(self, value: str | None) -> str:
        if value is None:
            return "—"
        return WORDS[self.lang].get(value, value)

    def event(self, kind: str) -> str:
        return EVENT_NAMES[self.lang].get(kind, kind)

    def when(self, moment: datetime | None) -> str:
        if moment is None:
            return "—"
        pattern = "%d/%m/%Y %H:%M:%S UTC" if self.lang == "fr" else "%Y-%m-%d %H:%M:%S UTC"
        return moment.strftime(pattern)

    def clock_time(self, moment: datetime) -> str:
        return moment.strftime("%H:%M:%S")

    def duration(self, seconds: float | None) -> str:
        if seconds is None:
            return "—"
        if seconds < 1:
            return "< 1 s"
        total = int(round(seconds))
        days, rest = divmod(total, 86400)
        hours, rest = divmod(rest, 3600)
        minutes, secs = divmod(rest, 60)
        day = "j" if self.lang == "fr" else "d"
        if days:
            return f"{days} {day} {hours} h"
        if hours:
            return f"{hours} h {minutes} min"
        if minutes:
            return f"{minutes} min {secs} s"
        return f"{secs} s"


Block = tuple[Any, ...]


PRINTED_TIMELINE_LIMIT = 500
ROUTINE_EVENTS = frozenset({"step.started", "step.succeeded", "step.retried", "message.sent"})


def _layout(report: IncidentReport, t: _Words, *, printed: bool = False) -> list[Block]:
    blocks: list[Block] = [("h1", f"{t('title')} — {report.incident}")]
    verification = report.verification
    facts = [
        (t("incident"), report.incident),
        (t("incident_title"), report.title or "—"),
        (t("ticket"), report.ticket_url or "—"),
        (t("severity"), t.word(report.severity)),
        (t("outcome"), t.word(report.outcome)),
        (t("runbooks"), ", ".join(f"{r.runbook} v{r.version}" for r in report.runs) or "—"),
        (t("started"), t.when(report.triggered_at)),
        (
            t("time_to_contain"),
            t.duration(report.time_to_contain_seconds)
            if report.contained_at
            else t("not_contained"),
        ),
        (t("head"), f"sha256:{verification.head}" if verification.head else "—"),
        (t("verification"), t("intact") if verification.ok else t("not_intact")),
        (t("generated"), t.when(report.generated_at)),
    ]
    blocks += [("h2", t("summary")), ("facts", facts)]
    blocks.append(
        (
            "table",
            [
                t("runbook"),
                t("requested_by"),
                t("via"),
                t("started"),
                t("finished"),
                t("status"),
                t("prefect"),
            ],
            [
                [
                    f"{r.title} ({r.runbook} v{r.version})",
                    r.requested_by or "—",
                    r.via,
                    t.when(r.started_at),
                    t.when(r.finished_at),
                    t.word(r.status) + (f": {r.reason}" if r.reason else ""),
                    r.prefect_state
                    or t("prefect_unavailable" if report.prefect_unavailable else "unknown"),
                ]
                for r in report.runs
            ],
        )
    )

    blocks.append(("h2", t("steps")))
    blocks.append(
        (
            "table",
            [
                t("step"),
                t("kind"),
                t("phase"),
                t("status"),
                t("started"),
                t("duration"),
                t("attempts"),
                t("error"),
            ],
            [
                [
                    f"{s.title} ({s.step_id})",
                    t.word(s.kind),
                    t.word(s.phase) if s.phase else "—",
                    t.word(s.status),
                    t.when(s.started_at),
                    t.duration(s.duration_seconds),
                    str(s.attempts) if s.kind == "action" else "—",
                    s.error or "",
                ]
                for s in report.steps
            ],
        )
    )

    blocks += evidence_blocks(report, t)
    blocks += changes_blocks(report, t)

    blocks.append(("h2", t("approvals")))
    if report.approvals:
        blocks.append(
            (
                "table",
                [
                    t("step"),
                    t("group"),
                    t("quorum"),
                    t("requested"),
                    t("decided"),
                    t("waited"),
                    t("outcome"),
                    t("decided_by"),
                ],
                [
                    [
                        f"{a.title} ({a.step_id})",
                        a.group or "—",
                        str(a.quorum),
                        t.when(a.requested_at),
                        t.when(a.decided_at),
                        t.duration(a.waited_seconds),
                        t.word(a.outcome),
                        "; ".join(
                            f"{d.actor} ({t.word(d.decision)}, {d.channel}, {t.clock_time(d.at)})"
                            + (f" “{d.comment}”" if d.comment else "")
                            for d in a.decisions
                        )
                        or "—",
                    ]
                    for a in report.approvals
                ],
            )
        )
    else:
        blocks.append(("p", t("no_approvals")))
    if report.refused_decisions:
        blocks.append(("h3", t("refused")))
        blocks.append(
            (
                "table",
                [t("time"), t("step"), t("who"), t("decision"), t("channel"), t("reason")],
                [
                    [
                        t.when(r.at),
                        r.step_id or "—",
                        r.actor or "—",
                        t.word(r.decision),
                        r.channel,
                        r.reason,
                    ]
                    for r in report.refused_decisions
                ],
            )
        )

    blocks.append(("h2", t("manual_tasks")))
    if report.manual_tasks:
        blocks.append(
            (
                "table",
                [t("step"), t("status"), t("done_by"), t("finished"), t("ticked"), t("not_ticked")],
                [
                    [
                        f"{m.title} ({m.step_id})",
                        t.word(m.status),
                        m.completed_by or "—",
                        t.when(m.completed_at),
                        "; ".join(m.ticked) or "—",
                        "; ".join(item for item in m.items if item not in m.ticked) or "—",
                    ]
                    for m in report.manual_tasks
                ],
            )
        )
    else:
        blocks.append(("p", t("no_manual")))

    blocks.append(("h2", t("communications")))
    if report.communications:
        blocks.append(
            (
                "table",
                [t("channel"), t("messages")],
                [[channel, str(count)] for channel, count in report.communications.items()],
            )
        )
    else:
        blocks.append(("p", t("no_communications")))

    blocks.append(("h2", t("clocks")))
    if report.clocks:
        blocks.append(
            (
                "table",
                [t("clock"), t("source"), t("started"), t("deadline"), t("stopped"), t("status")],
                [
                    [
                        c.title,
                        c.source or "—",
                        t.when(c.starts_at),
                        t.when(c.deadline_at),
                        t.when(c.stopped_at),
                        t.word(c.status),
                    ]
                    for c in report.clocks
                ],
            )
        )
    else:
        blocks.append(("p", t("no_clocks")))

    blocks.append(("h2", t("audit")))
    audit_facts = [
        (t("records"), str(verification.records)),
        (t("checkpoints"), str(verification.checkpoints)),
        (t("head"), f"sha256:{verification.head}" if verification.head else "—"),
        (
            t("verification"),
            (t("intact") if verification.ok else t("not_intact"))
            + ("" if verification.key_ids else f" — {t('not_checked')}"),
        ),
        (t("keys"), ", ".join(sorted(verification.key_ids)) or t("none")),
        (
            t("anchors"),
            "; ".join(f"#{a['seq']} sha256:{a['head']} ({a['where']})" for a in report.anchors)
            or t("none"),
        ),
        (t("verify_with"), f"tocsin audit verify {report.incident}"),
    ]
    blocks.append(("facts", audit_facts))
    if not verification.ok:
        blocks.append(("list", [problem.message for problem in verification.problems]))

    blocks.append(("h2", t("timeline")))
    timeline = report.timeline
    if printed and len(timeline) > PRINTED_TIMELINE_LIMIT:
        # A printed timeline of thousands of routine rows helps nobody: those are in the
        # Steps table, and every event is in the HTML and JSON reports and the audit export.
        timeline = [e for e in timeline if e.kind not in ROUTINE_EVENTS]
        blocks.append(
            ("p", t("routine_left_out").format(count=len(report.timeline) - len(timeline)))
        )
    blocks.append(
        (
            "table",
            ["#", t("time"), t("event"), t("step"), t("who"), t("detail")],
            [
                [
                    str(e.seq),
                    t.when(e.at),
                    t.event(e.kind),
                    e.step_id or "",
                    e.actor or "",
                    e.detail,
                ]
                for e in timeline
            ],
        )
    )
    blocks += [("h2", t("lessons")), ("p", t("lessons_hint")), ("blank",)]
    return blocks


# Markdown -------------------------------------------------------------------------------------


# Backslash-escaped wherever they stand: they open emphasis, code, links, images,
# strikethrough or a table cell. ``_`` only emphasises at a word's edge (CommonMark), so
# ``reset_account`` stays as it is.
_MARKDOWN_ESCAPED = re.compile(r"[\\`*\[\]!|~]|(?<![^\W_])_|_(?![^\W_])")
_MARKDOWN_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def markdown_text(value: object) -> str:
    """``value`` as literal text on one line of Markdown (a table cell, a list item, a heading).

    Line breaks and control characters become a space (no new block, no broken table);
    ``&``, ``<`` and ``>`` become entities (no raw HTML, no ``<https://...>`` link);
    the characters that open emphasis, code, links, images, strikethrough or a cell get a
    backslash. A renderer that links bare addresses still shows the address itself.
    """
    text = _CONTROL.sub(" ", str(value))
    text = _MARKDOWN_ESCAPED.sub(lambda m: "\\" + m.group(0), text)
    return re.sub(r"[&<>]", lambda m: _MARKDOWN_ENTITIES[m.group(0)], text)


def _markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h1":
            out.append(f"# {markdown_text(block[1])}\n")
        elif kind == "h2":
            out.append(f"## {markdown_text(block[1])}\n")
        elif kind == "h3":
            out.append(f"### {markdown_text(block[1])}\n")
        elif kind == "p":
            out.append(f"{markdown_text(block[1])}\n")
        elif kind == "facts":
            out.append(
                "\n".join(
                    f"- **{markdown_text(label)}**: {markdown_text(value)}"
                    for label, value in block[1]
                )
            )
            out.append("")
        elif kind in ("list", "items"):
            out.append("\n".join(f"- {markdown_text(item)}" for item in block[1]))
            out.append("")
        elif kind == "table":
            headers, rows = block[1], block[2]
            lines = [
                "| " + " | ".join(markdown_text(h) for h in headers) + " |",
                "|" + "---|" * len(headers),
            ]
            lines += ["| " + " | ".join(markdown_text(cell) for cell in row) + " |" for row in rows]
            out.append("\n".join(lines) + "\n")
        elif kind == "blank":
            out.append("\n\n")
    return "\n".join(out)


# HTML -----------------------------------------------------------------------------------------

STYLE = """
:root { color-scheme: light; }
body { font-family: "DejaVu Sans", "Segoe UI", Arial, sans-serif; font-size: 10.5pt;
  color: #1d2733; margin: 2em auto; max-width: 70em; padding: 0 1.5em; }
h1 { font-size: 1.7em; border-bottom: 4px solid #b3261e; padding-bottom: .3em; }
h2 { font-size: 1.25em; color: #0b4f71; margin-top: 1.6em; border-bottom: 1px solid #c9d3dc; }
h3 { font-size: 1.05em; color: #7a2e12; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .25em 1.2em; }
dl.facts dt { font-weight: bold; color: #39485a; }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; margin: .6em 0 1em; }
th, td { border: 1px solid #c9d3dc; padding: .3em .45em; text-align: left; vertical-align: top; }
th { background: #e8eef3; }
tr:nth-child(even) td { background: #f6f8fa; }
td { overflow-wrap: break-word; }
.blank { min-height: 8em; border: 1px dashed #9aa8b6; border-radius: 4px; }
.problems li { color: #b3261e; }
@page { size: A4; margin: 15mm 12mm;
  @bottom-right { content: counter(page) " / " counter(pages); font-size: 8pt; color: #5b6b7c; } }
@media print {
  body { margin: 0; max-width: none; font-size: 9pt; }
  h2 { break-after: avoid; }
  tr { break-inside: avoid; }
  thead { display: table-header-group; }
}
"""


def _html(blocks: list[Block], lang: Language, title: str) -> str:
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        f'<html lang="{lang}"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{STYLE}</style></head><body>",
    ]
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{e(block[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{e(block[1])}</p>")
        elif kind == "facts":
            items = "".join(f"<dt>{e(label)}</dt><dd>{e(value)}</dd>" for label, value in block[1])
            out.append(f'<dl class="facts">{items}</dl>')
        elif kind == "list":
            out.append(
                '<ul class="problems">' + "".join(f"<li>{e(i)}</li>" for i in block[1]) + "</ul>"
            )
        elif kind == "items":
            out.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{e(h)}</th>" for h in block[1])
            body = "".join(
                "<tr>" + "".join(f"<td>{e(cell)}</td>" for cell in row) + "</tr>"
                for row in block[2]
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "blank":
            out.append('<div class="blank"></div>')
    out.append("</body></html>")
    return "\n".join(out)


def _pdf(document: str) -> bytes:
    try:
        from weasyprint import HTML
    except OSError as exc:  # WeasyPrint loads Pango when imported
        raise ConfigurationError(
            f"PDF reports need the Pango library, which is missing: {exc}",
            "install it: apt-get install libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core "
            "(python3 dev.py demo does it), or use --format html and print it",
        ) from None
    pdf = HTML(string=document).write_pdf()
    assert pdf is not None
    return bytes(pdf)


# JSON -----------------------------------------------------------------------------------------


def _json(report: IncidentReport) -> str:
    def plain(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, set):
            return sorted(value)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    steps = []
    for step in report.steps:
        steps.append({**asdict(step), "duration_seconds": step.duration_seconds})
    approvals = [{**asdict(a), "waited_seconds": a.waited_seconds} for a in report.approvals]
    document = {
        "format": "tocsin-report/1",
        "incident": report.incident,
        "title": report.title,
        "ticket_url": report.ticket_url,
        "severity": report.severity,
        "outcome": report.outcome,
        "generated_at": report.generated_at,
        "triggered_at": report.triggered_at,
        "contained_at": report.contained_at,
        "time_to_contain_seconds": report.time_to_contain_seconds,
        "runs": [asdict(r) for r in report.runs],
        "prefect_unavailable": report.prefect_unavailable,
        "steps": steps,
        "approvals": approvals,
        "refused_decisions": [asdict(r) for r in report.refused_decisions],
        "manual_tasks": [asdict(m) for m in report.manual_tasks],
        "communications": report.communications,
        "clocks": [asdict(c) for c in report.clocks],
        "audit": {**report.verification.as_data(), "anchors": report.anchors},
        "timeline": [asdict(e) for e in report.timeline],
        "lessons_learned": "",
    }
    return json.dumps(plain(document), ensure_ascii=False, indent=1) + "\n"


def render(report: IncidentReport, fmt: Format, lang: Language = "en") -> bytes:
    """The report as ``fmt`` (md, html, pdf, json) in ``lang`` (en, fr)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}")
    if lang not in LANGUAGES:
        raise ValueError(f"unknown report language {lang!r}")
    if fmt == "json":
        return _json(report).encode("utf-8")
    words = _Words(lang)
    blocks = _layout(report, words, printed=fmt == "pdf")
    if fmt == "md":
        return _markdown(blocks).encode("utf-8")
    document = _html(blocks, lang, f"{words('title')} — {report.incident}")
    if fmt == "html":
        return document.encode("utf-8")
    return _pdf(document)
