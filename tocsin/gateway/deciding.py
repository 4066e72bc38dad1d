"""Deciding the clicks the gateway's judge claimed, a claimed batch at a time.

A ``DecisionBatch`` is the decisions of one claimed batch of clicks. The gates its clicks
are on are read at once (the run, the step, who approved so far: one read for the batch);
each click is judged in memory, in order, as if those before it were journalled already
(a second approval of one person on one gate in the batch is refused as a duplicate); then
the decisions, their audit records and the marks that the clicks were judged are
journalled in one transaction (``Journal.add_decisions``): all of them, or none, and the
clicks stay queued to be judged again. A click that another judge marked judged meanwhile
(its claim had lapsed) keeps that judge's decision: this batch writes none for it.

``decide`` judges one click: in the batch being judged on this thread when there is one,
else at once in a transaction of its own (``tocsin.decisions.submit``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.engine import Connection

from tocsin.decisions import DecisionRefused, Judgement, judge_submission, no_run_refusal, submit
from tocsin.journal import DecisionRecord, Journal, RunRecord
from tocsin.journal.decisions import GateContext, NewDecision
from tocsin.statuses import DecisionStatus

if TYPE_CHECKING:
    from tocsin.gateway.app import Click, Gateway, Judged


class DecisionBatch:
    """The decisions of one claimed batch of clicks; see the module docstring."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._contexts: dict[tuple[int, str], GateContext] = {}
        self._entries: list[tuple[int, NewDecision]] = []
        self._written: dict[int, DecisionRecord] = {}
        self._click: int | None = None

    def read(self, gates: Iterable[tuple[int, str]]) -> None:
        """Read the (run id, step id) gates not read yet, in one read."""
        missing = {gate for gate in gates if gate not in self._contexts}
        if missing:
            self._contexts.update(self.journal.gate_contexts(missing))

    def context(self, run_id: int, step_id: str) -> GateContext:
        """The run, its step and who approved its gate so far, counting this batch's."""
        self.read([(run_id, step_id)])
        return self._contexts[(run_id, step_id)]

    def judging(self, click_id: int) -> None:
        """The decisions added from now on are the queued click ``click_id``'s."""
        self._click = click_id

    def add(self, judgement: Judgement) -> int:
        """A judged decision of the click being judged, journalled at ``commit``; its key."""
        assert self._click is not None, "judging() names the click first"
        decision = judgement.decision
        self._entries.append((self._click, decision))
        if judgement.refusal is None and decision.kind == "approve":
            context = self._contexts.get((decision.run_id, decision.step_id))
            if context is not None:
                context[2].append(decision.actor)  # the next click of this person: a duplicate
        return self._click

    def commit(self, mark: Callable[[Connection], Collection[int]]) -> set[int]:
        """Journal the batch in one transaction: ``mark`` (in it, first) marks the clicks
        judged and gives the ids it marked; only their decisions are written. Those ids."""
        marked: set[int] = set()

        def first(db: Connection) -> Collection[int]:
            marked.clear()
            marked.update(mark(db))
            return marked

        # Not flushed: the clicks are on disk in the queue; lost with the power, the marks
        # go with the decisions, and the clicks are judged again.
        self._written = self.journal.add_decisions(first, self._entries, flushed=False)
        return set(marked)

    def written(self, key: int) -> DecisionRecord | None:
        """The decision journalled for ``key`` (once committed; None if it was not)."""
        return self._written.get(key)


class DecisionBatches:
    """The batch being judged on each judge thread."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._local = threading.local()

    @contextmanager
    def batch(self) -> Iterator[DecisionBatch]:
        """A new batch, current on this thread for the block."""
        batch = DecisionBatch(self.journal)
        self._local.batch = batch
        try:
            yield batch
        finally:
            self._local.batch = None

    def current(self) -> DecisionBatch | None:
        found: DecisionBatch | None = getattr(self._local, "batch", None)
        return found


def decide(gateway: Gateway, click: Click, via: str, queued_at: datetime | None) -> Judged:
    """Judge and journal a queued click (``Gateway.decide``)."""
    from tocsin.gateway.app import Judged

    if queued_at is not None:
        earlier = decision_of_click(gateway, click, queued_at)
        if earlier is not None:
            return earlier
    people = gateway.people
    details = people.details(click.user) if people is not None else {}
    batch = gateway.decision_batches.current()
    if batch is None:
        return _decide_alone(gateway, click, via, details)
    run, step, approvals = batch.context(click.run_id, click.step_id)
    if run is None or run.incident != click.ticket:
        refused = no_run_refusal(gateway.journal, click.ticket, click.step_id)
        return Judged(False, refused.message, lambda: None)
    judgement = judge_submission(
        run,
        step,
        approvals,
        incident=click.ticket,
        step_id=click.step_id,
        kind=click.kind,
        actor=click.user,
        channel=via,
        gate_hash=click.gate_hash,
        vouched=lambda request: gateway.vouched_groups(click.user, request),
        actor_details=details,
    )
    key = batch.add(judgement)
    if judgement.refusal is not None:
        return Judged(False, judgement.refusal, lambda: None)

    def delivery(found: RunRecord = run) -> None:
        decision = batch.written(key)
        if decision is not None:
            gateway.flows.wake(found, decision)

    return Judged(True, f"{click.kind} from {click.user} recorded", delivery)


def _decide_alone(gateway: Gateway, click: Click, via: str, details: dict[str, str]) -> Judged:
    from tocsin.gateway.app import Judged

    try:
        outcome = submit(
            gateway.journal,
            incident=click.ticket,
            step_id=click.step_id,
            kind=click.kind,
            actor=click.user,
            channel=via,
            gate_hash=click.gate_hash,
            vouched=lambda request: gateway.vouched_groups(click.user, request),
            run_id=click.run_id,
            actor_details=details,
            deliver=False,
            # The click is on disk in the queue: if this commit is lost with the power,
            # so is the later mark that it was judged, and it is judged again.
            flushed=False,
        )
    except DecisionRefused as refused:
        return Judged(False, refused.message, lambda: None)
    run, decision = outcome.run, outcome.decision

    def delivery() -> None:
        if run is not None:
            gateway.flows.wake(run, decision)

    return Judged(True, outcome.message, delivery)


def decision_of_click(gateway: Gateway, click: Click, queued_at: datetime) -> Judged | None:
    """For a click claimed again (a gateway claimed it before, and may have died after
    journalling its decision): a decision of this person of this kind on this step since
    it was queued is that click's, and it is not decided twice."""
    from tocsin.gateway.app import Judged

    journal = gateway.journal
    run = journal.gate_context(click.run_id, click.step_id)[0]
    if run is None or run.incident != click.ticket:
        return None
    for decision in journal.decisions_of(click.run_id, click.step_id):
        if (
            decision.actor == click.user
            and decision.kind == click.kind
            and decision.created_at >= queued_at
        ):
            if decision.status == DecisionStatus.REFUSED:
                return Judged(False, decision.reason or "refused", lambda: None)

            def delivery(found: DecisionRecord = decision) -> None:
                gateway.flows.wake(run, found)

            return Judged(True, f"{click.kind} from {click.user} recorded", delivery)
    return None


__all__ = ["DecisionBatch", "DecisionBatches", "decide", "decision_of_click"]
