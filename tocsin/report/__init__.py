"""The post-incident report: what was done, when, by whom, on whose approval, from the audit trail.

``build_report`` reads an incident's audit records (and, when known, Prefect's state of
each flow run) into an ``IncidentReport``; ``render`` writes it as Markdown, HTML, PDF or
JSON, in English or French. See docs/report.md.
"""

from tocsin.report.build import (
    Annex,
    ApprovalSummary,
    ClockSummary,
    Decision,
    IncidentReport,
    ManualTaskSummary,
    RefusedDecision,
    RunSummary,
    StepSummary,
    TimelineEntry,
    build_report,
)
from tocsin.report.render import FORMATS, LANGUAGES, render

__all__ = [
    "FORMATS",
    "LANGUAGES",
    "Annex",
    "ApprovalSummary",
    "ClockSummary",
    "Decision",
    "IncidentReport",
    "ManualTaskSummary",
    "RefusedDecision",
    "RunSummary",
    "StepSummary",
    "TimelineEntry",
    "build_report",
    "render",
]
