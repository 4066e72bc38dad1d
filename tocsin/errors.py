"""Tocsin's exceptions: one tree, messages written for the support engineer.

    TocsinError                 every expected failure; carries ``message`` and ``hint``
    ├── RunbookError            a runbook file is malformed; carries every ``Problem`` found
    ├── InputError              a run was requested with wrong or missing inputs
    ├── TemplateError           a template failed to render (undefined value, sandbox refusal)
    ├── ActionError             an action failed; names the action and, where known, the service
    │   └── IntegrationError    a remote service refused or failed (status, permission to grant)
    ├── UnknownActionError      no installed package provides the named action
    ├── ConfigurationError      settings, secrets or the action registry are wrong
    │   └── JournalUnavailable  the journal's database cannot be reached (nothing goes on)
    ├── DecisionRefused         a person's decision on a waiting step was refused (and audited)
    ├── StepFailed              a step of a run failed; names the step
    ├── RunStopped              a run stopped before its last step (failed, rejected, timed out)
    ├── RequestRefused          (tocsin.gateway) a request to the gateway was refused; its HTTP status
    └── FlowRunEnded            (tocsin.flows.pausing) Prefect failed a waiting run's flow run; the run takes it back

The CLI prints ``message`` and ``hint`` and exits with the code of the class
(see ``exit_code``); a traceback is shown only with ``--debug``.
"""

from __future__ import annotations

from dataclasses import dataclass

from tocsin.statuses import RunStatus


@dataclass(frozen=True, order=True)
class Location:
    """A place in a source file, 1-based like every editor."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a runbook, where it is, and how to fix it."""

    location: Location
    message: str
    hint: str = ""

    def __str__(self) -> str:
        text = f"{self.location}: {self.message}"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text


class TocsinError(Exception):
    """Base of every error Tocsin expects and explains."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class RunbookError(TocsinError):
    """A runbook cannot be loaded; ``problems`` lists every problem found, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        if not problems:
            raise ValueError("RunbookError needs at least one problem")
        self.problems = sorted(problems, key=lambda p: p.location)
        count = len(self.problems)
        files = sorted({p.location.file for p in self.problems})
        super().__init__(
            f"{count} problem{'s' if count != 1 else ''} in {', '.join(files)}",
            "fix the problems listed above, then run `tocsin validate` again",
        )


def message_of(exc: BaseException) -> str:
    """What to tell a person of an error: Tocsin's own message, else its type and text."""
    return exc.message if isinstance(exc, TocsinError) else f"{type(exc).__name__}: {exc}"


class InputError(TocsinError):
    """The inputs given for a run do not match what the runbook declares."""

    exit_code = 2


class TemplateError(TocsinError):
    """A template could not be rendered with the values at hand."""


class ActionError(TocsinError):
    """An action failed while it ran."""

    def __init__(self, action: str, message: str, hint: str = "") -> None:
        super().__init__(f"{action}: {message}", hint)
        self.action = action


class IntegrationError(ActionError):
    """A remote service (Slack, Microsoft 365, the platform API...) refused or failed."""

    def __init__(
        self,
        action: str,
        service: str,
        message: str,
        hint: str = "",
        *,
        status_code: int | None = None,
        retryable: bool = False,
        unapplied: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(action, f"{service} {message}", hint)
        self.service = service
        self.status_code = status_code
        self.retryable = retryable
        self.unapplied = unapplied
        """The service certainly did not act on the call (it refused the connection, or
        answered 429 or 503): trying again is safe even for an action that must not run
        twice. A timeout, a dropped reply or another 5xx may come after the service acted."""
        self.retry_after = retry_after
        """Seconds the service asked to wait before trying again (the ``Retry-After`` of its
        429 or 503, read by ``tocsin.retry_after``), None when it did not say: the step's
        retry waits at least this long, within its cap (``max_retry_wait_seconds``)."""


class ConfigurationError(TocsinError):
    """Settings, secrets or installed action packages are wrong."""

    exit_code = 3


class JournalUnavailable(ConfigurationError):
    """The journal's database cannot be reached: a record could not be written or read.

    Nothing goes on without its record, so the run stops; a step it was in is settled
    when the run is started again. Never retried as an action's failure would be.
    """


class UnknownActionError(TocsinError):
    """No installed package provides this action."""

    def __init__(self, name: str, suggestions: list[str]) -> None:
        hint = (
            "did you mean " + " or ".join(repr(s) for s in suggestions) + "?"
            if suggestions
            else "`tocsin actions` lists the installed actions"
        )
        super().__init__(f"unknown action {name!r}", hint)
        self.name = name
        self.suggestions = suggestions


class DecisionRefused(TocsinError):
    """A decision that was refused, and recorded as such."""


class StepFailed(TocsinError):
    """A step of a run failed: its action, a person doing a manual task, or its timeout."""

    def __init__(self, step_id: str, message: str) -> None:
        super().__init__(
            message,
            f"`tocsin report TICKET` shows the error of step {step_id!r}; fix its cause and run "
            "the runbook again: the steps that finished are not run again",
        )
        self.step_id = step_id


_STOP_HINTS = {
    RunStatus.REJECTED: "an approver rejected a gate; the run stops there, nothing is undone",
    RunStatus.TIMED_OUT: "nobody decided a gate in time; run the runbook again to ask again",
}


class RunStopped(TocsinError):
    """A run stopped before its last step; ``status`` says how (failed, rejected, timed_out)."""

    def __init__(self, status: RunStatus, reason: str) -> None:
        super().__init__(
            reason,
            _STOP_HINTS.get(
                status,
                "`tocsin status TICKET` and `tocsin report TICKET` show how far it got; "
                "running the runbook again continues where it stopped",
            ),
        )
        self.status = status
        self.reason = reason
