"""One campaign's sending loop: every recipient of a list reached exactly once, at a rate.

``Campaign.run(items)`` registers the recipients in the delivery ledger (idempotent), then
decides for each one from what the ledger says, so that a run killed at any moment and run
again neither skips nor repeats anyone:

- ``sent``, ``refused``, ``in_doubt``: settled by an earlier run; reported, not sent;
- ``committing`` (an earlier run died at the point of no return): the sender reconciles
  (``True``: it left; ``False``: it did not, send it; ``None``: cannot tell, so it is
  reported in doubt and never sent again);
- ``pending``, ``sending`` (died before the point of no return: nothing left), ``retry``:
  sent.

``sender.concurrency`` threads send at once, all paced by the one ``Pacer``. A transient
failure is tried again after ``retry_delay_seconds`` (doubling each time, or what the service
asked for), up to ``retries`` more times, without holding up the other recipients; a
permanent one is ``refused`` with what the service said. A ``TocsinError`` from the sender
(a wrong password: nothing will be sent) stops the campaign and is raised again, with every
delivery in the ledger in a status the next run can act on.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tocsin.integrations.notify.ledger import Delivery, DeliveryLedger, DeliveryStatus
from tocsin.integrations.notify.pacing import Pacer
from tocsin.mail import MailSender, OutgoingMail, SendOutcome, SendResult

Progress = Callable[[int, int, str], None]
PROGRESS_EVERY_SECONDS = 0.5
"""At most this often progress is told (a 5,000-recipient campaign: not 5,000 chat edits)."""


def message_digest(mail: OutgoingMail) -> str:
    """``sha256:...`` of what the recipient reads (subject, text and HTML), for the trail."""
    digest = hashlib.sha256()
    for part in (mail.subject, mail.text, mail.html or ""):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return f"sha256:{digest.hexdigest()}"


RECONCILE_DELAYS: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0, 8.0)
"""Seconds waited before each look for an unconfirmed message (15 s in all)."""


@dataclass(frozen=True)
class UnconfirmedSend(SendResult):
    """A message committed whose answer never came: ``SendOutcome.UNCONFIRMED``."""

    outcome: SendOutcome = SendOutcome.UNCONFIRMED


@dataclass(frozen=True)
class CampaignItem:
    """One recipient: the HMAC of the address (the ledger's key), the row in the list, and
    how to build the message (called only when it is to be sent or reconciled)."""

    recipient: str
    row: int
    build: Callable[[], OutgoingMail]


@dataclass
class CampaignOutcome:
    """What a run of the campaign did, and what earlier runs had done."""

    total: int
    """Recipients of the campaign."""
    sent: int = 0
    """Reached by this run."""
    already_sent: int = 0
    """Reached by an earlier run (found sent, or committing and reconciled as sent)."""
    refused: list[tuple[int, str, str]] = field(default_factory=list)
    """(row, recipient HMAC, what the service said) of each recipient not reached: refused
    for good, or still failing after every retry (tried again if the step runs again)."""
    in_doubt: list[tuple[int, str]] = field(default_factory=list)
    """(row, recipient HMAC) of each message committed when a run died, which the service
    cannot say left: not sent again."""
    retried: int = 0
    """Attempts made again after a transient failure."""
    elapsed_seconds: float = 0.0
    deliveries: list[dict[str, str]] = field(default_factory=list)
    """For the trail: recipient (HMAC), message (sha256:...), status; in row order."""

    @property
    def messages_per_minute(self) -> float:
        """The rate this run achieved."""
        return self.sent * 60.0 / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0


@dataclass(order=True)
class _Due:
    at: float
    order: int
    item: CampaignItem = field(compare=False)
    attempt: int = field(compare=False, default=0)


class Campaign:
    """Sends ``items`` of one incident's step through ``sender``; see the module docstring."""

    def __init__(
        self,
        ledger: DeliveryLedger,
        incident: str,
        step_id: str,
        sender: MailSender,
        pacer: Pacer,
        *,
        retries: int = 3,
        retry_delay_seconds: float = 30.0,
        progress: Progress | None = None,
        clock: Callable[[], float] = time.monotonic,
        reconcile_delays: Sequence[float] = RECONCILE_DELAYS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.ledger = ledger
        self.reconcile_delays = tuple(reconcile_delays)
        self._sleep = sleep
        self.incident = incident
        self.step_id = step_id
        self.sender = sender
        self.pacer = pacer
        self.retries = retries
        self.retry_delay_seconds = retry_delay_seconds
        self.progress = progress
        self._clock = clock
        self._changed = threading.Condition()
        self._queue: list[_Due] = []
        self._in_flight = 0
        self._failure: BaseException | None = None
        self._done = 0
        self._outcome = CampaignOutcome(total=0)
        self._digests: dict[str, str] = {}
        self._statuses: dict[str, DeliveryStatus] = {}
        self._order = itertools.count()
        self._told_at = float("-inf")

    def run(self, items: Sequence[CampaignItem]) -> CampaignOutcome:
        """Send to every recipient not yet settled; what was sent, refused, in doubt."""
        started = self._clock()
        self._queue, self._in_flight, self._failure, self._done = [], 0, None, 0
        self._digests, self._statuses = {}, {}
        unique = list({item.recipient: item for item in reversed(items)}.values())[::-1]
        outcome = self._outcome = CampaignOutcome(total=len(unique))
        self.ledger.register(
            self.incident, self.step_id, ((item.recipient, item.row) for item in unique)
        )
        known = self.ledger.deliveries(self.incident, self.step_id)
        for item in unique:
            delivery = known[item.recipient]
            status = self._resolve(item, delivery)
            self._statuses[item.recipient] = status
            if delivery.message_digest:
                self._digests[item.recipient] = delivery.message_digest
            if status in (DeliveryStatus.SENT, DeliveryStatus.REFUSED, DeliveryStatus.IN_DOUBT):
                self._done += 1
                if status is DeliveryStatus.SENT:
                    outcome.already_sent += 1
                elif status is DeliveryStatus.REFUSED:
                    outcome.refused.append((item.row, item.recipient, delivery.detail or ""))
                else:
                    outcome.in_doubt.append((item.row, item.recipient))
            else:
                self._queue.append(_Due(0.0, next(self._order), item))
        heapq.heapify(self._queue)
        self._tell(force=True)
        if self._queue:
            self._send_all()
        outcome.elapsed_seconds = self._clock() - started
        outcome.refused.sort()
        outcome.in_doubt.sort()
        outcome.deliveries = [
            {
                "recipient": item.recipient,
                "message": self._digests.get(item.recipient, ""),
                "status": self._statuses[item.recipient].value,
            }
            for item in sorted(unique, key=lambda item: item.row)
        ]
        self._tell(force=True)
        return outcome

    # -- before sending ---------------------------------------------------------------------

    def _resolve(self, item: CampaignItem, delivery: Delivery) -> DeliveryStatus:
        """The status to act on: a ``committing`` one left by a crash is reconciled."""
        if delivery.status is not DeliveryStatus.COMMITTING:
            return delivery.status
        mail = item.build()
        left = self._reconciled(mail)
        if left is None:
            status, detail = (
                DeliveryStatus.IN_DOUBT,
                (
                    f"committed to {self.sender.name} when an earlier run stopped; "
                    f"{self.sender.name} cannot tell whether it left"
                ),
            )
        elif left:
            status, detail = DeliveryStatus.SENT, f"found sent by {self.sender.name}"
        else:
            status, detail = DeliveryStatus.RETRY, f"not found at {self.sender.name}: sent again"
        self.ledger.settle(self.incident, self.step_id, item.recipient, status, detail)
        return status

    # -- sending ----------------------------------------------------------------------------

    def _send_all(self) -> None:
        workers = [
            threading.Thread(target=self._work, name=f"campaign-{self.step_id}-{n}", daemon=True)
            for n in range(max(1, self.sender.concurrency))
        ]
        for worker in workers:
            worker.start()
        while alive := [worker for worker in workers if worker.is_alive()]:
            alive[0].join(PROGRESS_EVERY_SECONDS)
            self._tell()
        if self._failure is not None:
            raise self._failure

    def _work(self) -> None:
        while True:
            due = self._next()
            if due is None:
                return
            try:
                again = self._attempt(due)
            except BaseException as exc:  # a TocsinError (wrong password) or a bug: stop
                with self._changed:
                    self._failure = self._failure or exc
                    self._in_flight -= 1
                    self._changed.notify_all()
                return
            with self._changed:
                self._in_flight -= 1
                if again is not None:
                    heapq.heappush(self._queue, again)
                self._changed.notify_all()

    def _next(self) -> _Due | None:
        """The next recipient due, waiting for one; None once all are done or sending stopped."""
        with self._changed:
            while True:
                if self._failure is not None or (not self._queue and not self._in_flight):
                    self._changed.notify_all()
                    return None
                if self._queue:
                    wait = self._queue[0].at - self._clock()
                    if wait <= 0:
                        self._in_flight += 1
                        return heapq.heappop(self._queue)
                    self._changed.wait(wait)
                else:
                    self._changed.wait()

    def _attempt(self, due: _Due) -> _Due | None:
        """One attempt at one recipient; the retry to schedule, if any."""
        item = due.item
        mail = item.build()
        digest = message_digest(mail)
        self.pacer.wait()
        self.ledger.claim(
            self.incident,
            self.step_id,
            item.recipient,
            message_digest=digest,
            message_id=mail.message_id,
        )
        self._digests[item.recipient] = digest
        committed = False

        def committing() -> None:
            nonlocal committed
            self.ledger.committing(self.incident, self.step_id, item.recipient)
            committed = True

        try:
            result = self.sender.send(mail, committing)
        except BaseException:
            if not committed:  # nothing left: the next run sends it
                self._settle(item, DeliveryStatus.RETRY, "the campaign stopped", final=False)
            raise
        if result.outcome is SendOutcome.UNCONFIRMED and committed:
            left = self._reconciled(mail)
            if left is None:
                self._settle(item, DeliveryStatus.IN_DOUBT, result.detail)
                return None
            if left:
                self._settle(item, DeliveryStatus.SENT, result.detail)
                return None
        if result.outcome is SendOutcome.SENT:
            self._settle(item, DeliveryStatus.SENT, result.detail)
            return None
        if result.outcome is SendOutcome.REFUSED:
            self._settle(item, DeliveryStatus.REFUSED, result.detail)
            return None
        if due.attempt >= self.retries:
            self._settle(item, DeliveryStatus.RETRY, result.detail)
            return None
        self._settle(item, DeliveryStatus.RETRY, result.detail, final=False)
        delay = self.retry_delay_seconds * 2**due.attempt
        if result.retry_after is not None:
            delay = max(delay, result.retry_after)
        with self._changed:
            self._outcome.retried += 1
            order = next(self._order)
        return _Due(self._clock() + delay, order, item, due.attempt + 1)

    def _reconciled(self, mail: OutgoingMail) -> bool | None:
        """Whether an unconfirmed message left, asked of the sender; a "no" is asked again
        after each of ``reconcile_delays`` (a service's record of sent mail may lag behind,
        as Outlook's Sent Items does), and only the last "no" lets it be sent again."""
        if not self.sender.can_reconcile:
            return None
        left: bool | None = None
        for delay in self.reconcile_delays:
            if delay:
                self._sleep(delay)
            left = self.sender.reconcile(mail)
            if left is not False:
                return left
        return left

    def _settle(
        self, item: CampaignItem, status: DeliveryStatus, detail: str, *, final: bool = True
    ) -> None:
        self.ledger.settle(self.incident, self.step_id, item.recipient, status, detail)
        with self._changed:
            self._statuses[item.recipient] = status
            if not final:
                return
            self._done += 1
            if status is DeliveryStatus.SENT:
                self._outcome.sent += 1
            elif status is DeliveryStatus.REFUSED:
                self._outcome.refused.append((item.row, item.recipient, detail))
            elif status is DeliveryStatus.IN_DOUBT:
                self._outcome.in_doubt.append((item.row, item.recipient))
            else:
                attempts = self.retries + 1
                self._outcome.refused.append(
                    (
                        item.row,
                        item.recipient,
                        f"still failing after {attempts} attempt(s), tried again if the step "
                        f"is run again: {detail}",
                    )
                )

    def _tell(self, *, force: bool = False) -> None:
        if self.progress is None:
            return
        with self._changed:
            done, total = self._done, self._outcome.total
        moment = self._clock()
        if force or moment - self._told_at >= PROGRESS_EVERY_SECONDS:
            self._told_at = moment
            self.progress(done, total, "sent")
