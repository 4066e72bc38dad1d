"""The report as JSON (``tocsin-report/1``): the report's data, without its wording."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from typing import Any

from tocsin.report.build import IncidentReport


def write_json(report: IncidentReport) -> str:
    """The report's data as JSON text, moments in ISO 8601."""

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
        "annexes": [{**asdict(a), "format": "markdown"} for a in report.annexes],
    }
    return json.dumps(plain(document), ensure_ascii=False, indent=1) + "\n"
