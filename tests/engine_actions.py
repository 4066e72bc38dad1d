"""Actions for the engine tests: they count their calls in files, fail on demand, or take time."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field

from tocsin.actions import ActionContext, Reconciled, action
from tocsin.errors import IntegrationError


class Counted(BaseModel):
    count: int


def _append(file: str, line: str) -> int:
    path = Path(file)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as sink:
        sink.write(line + "\n")
    return len(path.read_text().splitlines())


def calls(file: Path) -> list[str]:
    """The lines an action appended to ``file`` (one per call)."""
    return file.read_text().splitlines() if file.exists() else []


@action("test.count", destructive=True, idempotent=False)
def count(
    context: ActionContext, *, file: Annotated[str, Field(description="Where to count")]
) -> Counted:
    """Count a call (not idempotent)."""
    return Counted(count=_append(file, f"{context.step_id} {time.time()}"))


@action("test.count_idempotent", destructive=True, idempotent=True)
def count_idempotent(
    context: ActionContext, *, file: Annotated[str, Field(description="Where to count")]
) -> Counted:
    """Count a call (declared idempotent)."""
    return Counted(count=_append(file, f"{context.step_id} {time.time()}"))


@action("test.flaky", destructive=False, idempotent=True)
def flaky(
    context: ActionContext,
    *,
    file: Annotated[str, Field(description="Where attempts are counted")],
    failures: Annotated[int, Field(description="How many first attempts fail")],
) -> Counted:
    """Fail the first ``failures`` attempts with a retryable error."""
    attempt = _append(file, "attempt")
    if attempt <= failures:
        raise IntegrationError(
            "test.flaky", "test service", f"failed attempt {attempt}", retryable=True
        )
    return Counted(count=attempt)


@action("test.fail", destructive=False)
def fail(context: ActionContext, *, message: Annotated[str, Field(description="Why")]) -> None:
    """Always fail, without retry."""
    raise IntegrationError("test.fail", "test service", message, retryable=False)


def _sleep(step_id: str, seconds: float, file: str) -> Counted:
    _append(file, f"start {step_id} {time.time()}")
    time.sleep(seconds)
    return Counted(count=_append(file, f"end {step_id} {time.time()}"))


@action("test.sleep", destructive=False, idempotent=False)
def sleep(
    context: ActionContext,
    *,
    seconds: Annotated[float, Field(description="How long")],
    file: Annotated[str, Field(description="Where start and end are written")],
) -> Counted:
    """Write when it starts, sleep, write when it ends."""
    return _sleep(context.step_id, seconds, file)


@action("test.sleep_destructive", destructive=True, idempotent=False)
def sleep_destructive(
    context: ActionContext,
    *,
    seconds: Annotated[float, Field(description="How long")],
    file: Annotated[str, Field(description="Where start and end are written")],
) -> Counted:
    """Like test.sleep, destructive and not idempotent: it must never run twice."""
    return _sleep(context.step_id, seconds, file)


@action("test.sleep_idempotent", destructive=False, idempotent=True)
def sleep_idempotent(
    context: ActionContext,
    *,
    seconds: Annotated[float, Field(description="How long")],
    file: Annotated[str, Field(description="Where start and end are written")],
) -> Counted:
    """Like test.sleep, declared idempotent."""
    return _sleep(context.step_id, seconds, file)


class Issued(BaseModel):
    token: str


@action("test.issue_token", destructive=True, idempotent=True, sensitive=("password", "token"))
def issue_token(
    context: ActionContext,
    *,
    user: Annotated[str, Field(description="Whose token")],
    password: Annotated[str, Field(description="A secret value the action is given")],
) -> Issued:
    """Return a secret token (declared sensitive, like the password it is given)."""
    return Issued(token=f"tok-{user}-{len(password)}-SECRETTOKEN")


class Sent(BaseModel):
    sent: int


@action("test.notify", destructive=False, idempotent=True, communicates="email")
def notify(
    context: ActionContext, *, recipients: Annotated[list[str], Field(description="Who")]
) -> Sent:
    """Pretend to e-mail people: one message per recipient."""
    return Sent(sent=len(recipients))


def _read_back(context: ActionContext, *, file: str) -> Reconciled:
    """What ``file``.readback says the interrupted call did (a test's stand-in for a service)."""
    said = Path(f"{file}.readback")
    answer = said.read_text().strip() if said.exists() else "unknown"
    if answer == "raise":
        raise IntegrationError("test.count_reconciled", "test service", "read-back unavailable")
    if answer.startswith("took"):
        return Reconciled.took_effect(
            Counted(count=int(answer.split()[1])), f"{file} says {answer}"
        )
    if answer == "not":
        return Reconciled.did_not(f"{file} says nothing happened")
    if answer == "malformed":
        return Reconciled.took_effect({"count": "many"}, "a wrong count")
    return Reconciled.unknown(f"{file} cannot tell")


@action("test.count_reconciled", destructive=True, idempotent=False, reconcile=_read_back)
def count_reconciled(
    context: ActionContext, *, file: Annotated[str, Field(description="Where to count")]
) -> Counted:
    """Count a call (not idempotent); an interrupted call is read back from ``file``.readback."""
    return Counted(count=_append(file, f"{context.step_id} {time.time()}"))


def _sleep_read_back(context: ActionContext, *, seconds: float, file: str) -> Reconciled:
    return _read_back(context, file=file)


@action("test.sleep_reconciled", destructive=True, idempotent=False, reconcile=_sleep_read_back)
def sleep_reconciled(
    context: ActionContext,
    *,
    seconds: Annotated[float, Field(description="How long")],
    file: Annotated[str, Field(description="Where start and end are written")],
) -> Counted:
    """Like test.sleep (not idempotent); an interrupted call is read back from ``file``.readback."""
    return _sleep(context.step_id, seconds, file)
