"""The report laid out as blocks, in one language: headings, facts, tables, paragraphs.

A block is a tuple whose first item says what it is (``h1``, ``h2``, ``h3``, ``p``,
``facts``, ``list``, ``items``, ``table``, ``blank``, ``markdown``: an annex's document);
``markdown_document`` and ``html_document`` write the same blocks, so the formats never
say different things.
"""

from __future__ import annotations

from typing import Any

from tocsin.report.action_outputs import changes_blocks, evidence_blocks
from tocsin.report.build import IncidentReport
from tocsin.report.wording import Words

Block = tuple[Any, ...]


PRINTED_TIMELINE_LIMIT = 500
ROUTINE_EVENTS = frozenset({"step.started", "step.succeeded", "step.retried", "message.sent"})


def lay_out(report: IncidentReport, t: Words, *, printed: bool = False) -> list[Block]:
    """The report's blocks in ``t``'s language (``printed``: the timeline bounded for PDF)."""
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
    for number, annex in enumerate(report.annexes, start=1):
        blocks += [
            ("h2", t("annex").format(number=number, title=annex.title)),
            (
                "p",
                t("annex_intro").format(
                    step=annex.step_id, action=annex.action, output=annex.output
                ),
            ),
            ("markdown", annex.document),
        ]
    return blocks
