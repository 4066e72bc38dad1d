"""The ``watchdog`` flow: what is stuck (``tocsin.watchdog.find_stuck``), each new finding
posted once to the incident's thread and to the on-call channel (``watchdog.oncall_channel``).

A finding posted is an audit record ``watchdog.found`` in the incident's chain, written
through the journal like every other record and signed with a checkpoint: it is the
memory of what was said, so the next pass says nothing again. A finding that could be
posted nowhere (every place configured failed) is not recorded: the next pass tries again.
With no place configured at all, the findings are only in this flow run's log.

Deployed on a schedule by ``prefect.yaml`` (``watchdog/tocsin-watchdog``, every minute,
one at a time); docs/watchdog.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefect import flow, get_run_logger

from tocsin.announce import RunFacts
from tocsin.channel_posts import ChannelPoster, channel_poster
from tocsin.errors import TocsinError, message_of
from tocsin.flows.announcers import announcers_for
from tocsin.journal import Journal, RunRecord, now
from tocsin.running import journal_for
from tocsin.settings import SecretStore, Settings, configuration
from tocsin.watchdog import (
    CHECKPOINT_REASON,
    FOUND_KIND,
    Finding,
    active_flow_run_ids,
    already_posted,
    find_stuck,
    prefect_states,
)


@dataclass
class WatchdogPass:
    """What one pass found and did."""

    found: int = 0
    posted: list[dict[str, Any]] = field(default_factory=list)
    """Each finding posted: its key and where it went."""
    failed: list[dict[str, Any]] = field(default_factory=list)
    """Findings every place refused (tried again next pass)."""
    unposted: list[str] = field(default_factory=list)
    """Keys of findings with nowhere to go (nothing configured)."""

    def as_data(self) -> dict[str, Any]:
        return {
            "found": self.found,
            "posted": self.posted,
            "failed": self.failed,
            "unposted": self.unposted,
        }


class FindingPoster:
    """Where findings go: the incident thread (announcers with ``watchdog_found``) and the
    on-call channel."""

    def __init__(self, settings: Settings, secrets: SecretStore, journal: Journal) -> None:
        self.settings = settings
        self.journal = journal
        self.problems: list[str] = []
        announcers, problems = announcers_for(settings, journal, secrets)
        self.problems += [f"{name}: {problem}" for name, problem in problems]
        self.threads = [a for a in announcers if getattr(a, "watchdog_found", None) is not None]
        self.channel = settings.watchdog.oncall_channel
        self.oncall: ChannelPoster | None = None
        if self.channel:
            try:
                self.oncall = channel_poster(settings.watchdog.oncall_chat, settings, secrets)
            except TocsinError as exc:
                self.problems.append(f"on-call channel {self.channel}: {exc.message}")

    @property
    def configured(self) -> bool:
        return bool(self.threads or self.channel)

    def post(self, finding: Finding, run: RunRecord) -> tuple[list[str], list[str]]:
        """Post ``finding`` everywhere; (where it went, what failed)."""
        text = f"{finding.summary}. {finding.what_to_do}."
        places: list[str] = []
        errors = list(self.problems)
        if self.threads:
            facts = run_facts(self.journal, run)
            for announcer in self.threads:
                try:
                    announcer.watchdog_found(facts, text, finding.command)  # type: ignore[attr-defined]
                except Exception as exc:  # Slack down: the other places still hear of it
                    errors.append(f"{announcer.name} thread: {message_of(exc)}")
                else:
                    places.append(f"{announcer.name}:thread")
        if self.oncall is not None and self.channel:
            said = f"{finding.incident}: {text} Fix:"
            with_command = getattr(self.oncall, "post_with_command", None)
            try:
                places.append(
                    with_command(self.channel, said, finding.command)
                    if with_command is not None
                    else self.oncall.post(self.channel, f"{said} {finding.command}")
                )
            except Exception as exc:
                errors.append(f"on-call channel {self.channel}: {message_of(exc)}")
        return places, errors

    def close(self) -> None:
        for announcer in self.threads:
            try:
                announcer.close()
            except Exception:  # closing is best effort: the findings are posted already
                continue


def run_facts(journal: Journal, run: RunRecord) -> RunFacts:
    """What the incident thread needs of ``run``, from its last start record."""
    started: dict[str, Any] = {}
    for event in journal.events_of(run.incident):
        if event["run_id"] == run.id and event["kind"] in ("run.started", "run.resumed"):
            started = event["data"] or {}
    return RunFacts(
        ticket=run.incident,
        run_id=run.id,
        runbook=run.runbook_id,
        runbook_title=str(started.get("title") or run.runbook_id),
        version=run.runbook_version,
        severity=str(started.get("severity") or ""),
        requested_by=run.requested_by,
        requested_via=run.requested_via,
        ticket_url=str(started.get("ticket_url") or ""),
        incident_title=str(started.get("incident_title") or ""),
        inputs=dict(run.inputs),
        resumed=True,
    )


def watch(
    settings: Settings,
    secrets: SecretStore,
    journal: Journal,
    states: dict[str, str] | None,
    log: Any,
) -> WatchdogPass:
    """One pass: find what is stuck, post and record what was not posted before."""
    findings = find_stuck(
        journal, now(), states, rules=settings.watchdog, live=settings.mode == "live"
    )
    result = WatchdogPass(found=len(findings))
    posted = already_posted(journal)
    new = [finding for finding in findings if finding.key not in posted]
    if not new:
        return result
    runs = {run.id: run for run in journal.runs_of()}
    poster = FindingPoster(settings, secrets, journal)
    try:
        for finding in new:
            log.warning("%s: %s. %s.", finding.incident, finding.summary, finding.what_to_do)
            if not poster.configured:
                result.unposted.append(finding.key)
                continue
            places, errors = poster.post(finding, runs[finding.run_id])
            for error in errors:
                log.error("%s: could not post the finding: %s", finding.incident, error)
            if not places:
                result.failed.append({"key": finding.key, "errors": errors})
                continue
            data = finding.as_data()
            for named in ("incident", "run_id", "step"):  # the record's own fields
                del data[named]
            journal.record(
                finding.incident,
                FOUND_KIND,
                run_id=finding.run_id,
                step_id=finding.step,
                actor="watchdog",
                **data,
                posted=places,
                errors=errors,
            )
            journal.checkpoint(finding.incident, CHECKPOINT_REASON)
            result.posted.append({"key": finding.key, "places": places})
    finally:
        poster.close()
    if not poster.configured:
        log.warning(
            "nowhere to post %d finding(s): set slack.incident_channel and "
            "watchdog.oncall_channel (docs/watchdog.md)",
            len(result.unposted),
        )
    return result


@flow(name="watchdog", validate_parameters=False)
def watchdog() -> dict[str, Any]:
    """Find what is stuck in the journal; post each new finding once (docs/watchdog.md)."""
    handed = configuration()  # what the caller handed down, else the environment's
    settings = handed.settings
    journal = journal_for(settings, signing=True)
    try:
        states = prefect_states(active_flow_run_ids(journal))
        log = get_run_logger()
        if states is None:
            log.warning("Prefect's flow run states could not be read: judged by heartbeats")
        return watch(settings, handed.secrets, journal, states, log).as_data()
    finally:
        journal.close()


__all__ = ["FindingPoster", "WatchdogPass", "run_facts", "watch", "watchdog"]
