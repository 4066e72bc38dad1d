"""Pausing a flow run for a person's input, with Prefect's expiry well after Tocsin's wake-up.

Prefect's ``pause_flow_run(wait_for_input=..., timeout=T)`` gives one ``T`` to both sides:
the Paused state expires at T on the server (its pause-expiration service then fails the
run: "The flow was paused and never resumed"), and the paused process stops looking at T.
A run waiting at a gate wakes itself often (to apply decisions journalled while it could
not be resumed, to remind, to time a gate out), so on a busy machine the server's service
often won that race: the run showed Failed, refused to be resumed, and was only taken back
at its next wake-up. ``pause_for_input`` proposes the same Paused state (with the run
input keyset, so the Prefect UI shows the form and a resume carries the input) expiring
``expires_after`` seconds from now, and looks for the resume for ``wake_after`` seconds
only: Tocsin's wake-up always comes first, and a run whose process died is still failed
by Prefect, later.
"""

from __future__ import annotations

import time
from typing import Any, TypeVar, cast

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.exceptions import Abort
from prefect.input import RunInput
from prefect.input.run_input import keyset_from_paused_state
from prefect.states import Paused
from prefect.utilities.engine import propose_state_sync

from tocsin.errors import TocsinError

Input = TypeVar("Input", bound=RunInput)


class FlowRunEnded(TocsinError):
    """Prefect failed the paused flow run (its pause-expiration service, an operator) while
    this process was still waiting in it; the message is the state's. The waiting run takes
    its flow run back (``tocsin.flows.waiting``): no one else sees it."""


def pause_for_input(
    model: type[Input], *, wake_after: float, expires_after: int, poll_seconds: float, key: str
) -> Input | None:
    """Pause the current flow run until it is resumed with a ``model`` input (returned) or
    ``wake_after`` seconds pass (None: the flow run is still Paused; the caller takes it
    back). ``FlowRunEnded`` when Prefect fails the flow run meanwhile; ``RuntimeError`` when
    it does not let the run pause (the run is over there).
    """
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise RuntimeError("a flow run can only be paused from within the flow run")
    flow_run_id = context.flow_run.id
    proposed: State[Any] = Paused(timeout_seconds=expires_after, reschedule=False, pause_key=key)
    keyset = keyset_from_paused_state(proposed)
    proposed.state_details.run_input_keyset = {str(name): value for name, value in keyset.items()}
    with get_client(sync_client=True) as client:
        try:
            state = propose_state_sync(client=client, state=proposed, flow_run_id=flow_run_id)
        except Abort as exc:
            raise RuntimeError(f"Flow run cannot be paused: {exc}") from exc
        if state.is_running():  # this pause was resumed already
            return cast(Input, model.load(keyset))  # sync here: Prefect dispatches
        if not state.is_paused():
            raise RuntimeError(f"Flow run cannot be paused: the API answered {state}")
        model.save(keyset)  # the form the UI shows; what a resume must carry
        deadline = time.monotonic() + wake_after
        while True:
            time.sleep(max(0.0, min(poll_seconds, deadline - time.monotonic())))
            flow_run = client.read_flow_run(flow_run_id)
            if flow_run.state is not None and flow_run.state.is_running():
                return cast(Input, model.load(keyset))  # sync here: Prefect dispatches
            if flow_run.state is not None and flow_run.state.is_failed():
                raise FlowRunEnded(flow_run.state.message or flow_run.state.name or "Failed")
            if time.monotonic() >= deadline:
                return None


__all__ = ["FlowRunEnded", "pause_for_input"]
