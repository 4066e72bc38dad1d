"""Signed checkpoints of a run's audit chain, and publishing the head outside the database.

A head kept only in the database proves nothing once the database is rewritten; posted to
the incident thread, the ticket and the anchor channel, it proves later that the trail was
not cut short (``tocsin audit verify TICKET --anchor sha256:HEAD``).
"""

from __future__ import annotations

from tocsin.errors import message_of
from tocsin.flows.run_state import RunState
from tocsin.integration import head_publishers


def sign_and_anchor(state: RunState, reason: str, *, publish: bool = True) -> None:
    """Sign the chain's head; at the end of a run, also publish it outside the database."""
    ticket = state.incident.ticket
    checkpoint = state.journal.checkpoint(ticket, reason)
    if checkpoint is None or not publish:
        return
    places = state.announce.anchor(checkpoint.seq, checkpoint.head, checkpoint.key_id)
    for where in places:  # the incident's Slack thread, its ticket
        state.event(
            "audit.checkpoint_anchored", seq=checkpoint.seq, head=checkpoint.head, where=where
        )
    publishers = head_publishers(state.settings, state.secrets)  # slack.anchor_channel
    if not publishers:
        if places:
            state.report(
                f"audit head sha256:{checkpoint.head[:16]}… published to "
                + ", ".join(p.rsplit(":", 1)[0] for p in places)
            )
            state.journal.checkpoint(ticket, "anchored")
        return
    text = (
        f"Audit checkpoint for {ticket}: record {checkpoint.seq}, "
        f"head sha256:{checkpoint.head} (key {checkpoint.key_id}). Keep this message: "
        f"`tocsin audit verify {ticket} --anchor sha256:{checkpoint.head}` "
        "proves later that the audit trail was not cut short."
    )
    for publisher in publishers:
        channel = publisher.place
        try:
            where = publisher.publish(text)
        except Exception as exc:  # Slack down or not configured: audited, never fatal
            message = message_of(exc)
            state.event(
                "audit.anchor_failed",
                seq=checkpoint.seq,
                head=checkpoint.head,
                channel=channel,
                error=message,
            )
            state.report(f"audit head not published to {channel}: {message}")
        else:
            state.event(
                "audit.checkpoint_anchored", seq=checkpoint.seq, head=checkpoint.head, where=where
            )
            shown = ", ".join([*(p.rsplit(":", 1)[0] for p in places), channel])
            state.report(f"audit head sha256:{checkpoint.head[:16]}… published to {shown}")
    state.journal.checkpoint(ticket, "anchored")


__all__ = ["sign_and_anchor"]
