"""How a finished run's outcome is kept in Prefect, so that its UI and its workers show it cleanly.

A run that did not succeed ends in a Failed state carrying a message only (``runbook
rejected: ...``): Prefect turns a Failed state's data into an exception, and a dict
cannot be one (on a worker that was ``TypeError: Unexpected result for failed state``).
The outcome itself (status, reason, each step's status) is a Markdown artifact of the
flow run, keyed by incident and runbook, that the UI shows under the run and in its
Artifacts page; ``read_outcome`` reads it back (``tocsin.flows.runbook.outcome_of``).

A Tocsin error that refuses a run (a runbook that does not validate, a missing secret)
or fails a step (a service said no) is an expected end, not a crash:
``quiet_expected_failures`` keeps Prefect's engines from logging a traceback for it, on a
worker and in the terminal (they log one line with Tocsin's message instead); any other
exception, a bug, keeps its traceback.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from uuid import UUID

from tocsin.errors import TocsinError

OUTCOME_KEY_PREFIX = "tocsin-outcome"
_FENCE = "```json\n"
_KEY_CHARACTERS = re.compile(r"[^a-z0-9-]+")
# What Prefect's engine logs when the flow's final state is Failed (it re-raises the state's
# exception on the way out of the worker's process).
_ENGINE_EXIT = "Engine execution exited with unexpected exception"


def outcome_key(ticket: str, runbook_id: str) -> str:
    """The artifact key of an incident's runbook: lower-case letters, digits and dashes."""
    raw = f"{OUTCOME_KEY_PREFIX}-{ticket}-{runbook_id}".lower()
    return _KEY_CHARACTERS.sub("-", raw).strip("-")


def outcome_markdown(outcome: dict[str, Any]) -> str:
    """The artifact's text: what a person reads, then the exact outcome as JSON.

    Text that came from outside (a reason quoting a service's answer) is escaped so that it
    cannot add markup, and the JSON holds no backtick or HTML character, so nothing can close
    its block early.
    """
    status, reason = str(outcome["status"]), str(outcome["reason"])
    lines = [
        f"**Runbook {_cell(status)}**: {_cell(reason)}",
        "",
        "| step | status |",
        "| --- | --- |",
        *(f"| {_cell(step)} | {_cell(state)} |" for step, state in outcome["steps"].items()),
        "",
        _FENCE + _inert_json(outcome) + "\n```",
    ]
    return "\n".join(lines)


def _inert_json(outcome: dict[str, Any]) -> str:
    """JSON with no backtick and no HTML character (each escaped as JSON allows)."""
    text = json.dumps(outcome)
    for plain, escaped in (("`", "\\u0060"), ("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(plain, escaped)
    return text


def _cell(text: Any) -> str:
    value = str(text).replace("\r", " ").replace("\n", " ").replace("`", "'")
    for plain, escaped in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|")):
        value = value.replace(plain, escaped)
    return value


def parse_outcome(markdown: str) -> dict[str, Any] | None:
    """The outcome written by ``outcome_markdown``; None when the text holds none."""
    _, fence, rest = markdown.partition(_FENCE)
    if not fence:
        return None
    try:
        found = json.loads(rest.partition("\n```")[0])
    except json.JSONDecodeError:
        return None
    return found if isinstance(found, dict) and "status" in found else None


def record_outcome(outcome: dict[str, Any], ticket: str, runbook_id: str) -> None:
    """Attach the outcome to the current flow run as a Markdown artifact."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(
        markdown=outcome_markdown(outcome),
        key=outcome_key(ticket, runbook_id),
        description=f"{runbook_id} for {ticket}: {outcome['status']}",
    )


def read_outcome(flow_run_id: UUID) -> dict[str, Any] | None:
    """The outcome recorded for a flow run, if it recorded one (the latest)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
                key=ArtifactFilterKey(like_=OUTCOME_KEY_PREFIX),
            ),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    for artifact in artifacts:
        if isinstance(artifact.data, str):
            return parse_outcome(artifact.data)
    return None


def failure_message(error: TocsinError) -> str:
    """The Failed state's message for a run refused by ``error``: its message and hint."""
    return error.message + (f" (hint: {error.hint})" if error.hint else "")


class _ExpectedFailures(logging.Filter):
    """Drops the traceback of a record about a Tocsin error (its message says it all), and
    turns the engine's traceback for a flow run Tocsin ended Failed into one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        from prefect.exceptions import FailedRun

        if not record.exc_info or record.exc_info[1] is None:
            return True
        error = record.exc_info[1]
        if str(record.msg).startswith(_ENGINE_EXIT) and isinstance(error, TocsinError | FailedRun):
            said = failure_message(error) if isinstance(error, TocsinError) else str(error)
            record.msg, record.args = "the flow run ended Failed: %s", (said,)
        elif not isinstance(error, TocsinError):
            return True  # anything else is a bug: its traceback is kept
        record.exc_info, record.exc_text = None, None
        return True


_FILTER = _ExpectedFailures()


def quiet_expected_failures() -> None:
    """In this process, Prefect logs a run Tocsin ended Failed as one line, not a traceback."""
    for name in ("prefect.flow_runs", "prefect.task_runs", "prefect.engine"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


__all__ = [
    "failure_message",
    "outcome_key",
    "outcome_markdown",
    "parse_outcome",
    "quiet_expected_failures",
    "read_outcome",
    "record_outcome",
]
