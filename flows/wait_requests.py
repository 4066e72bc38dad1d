"""What a step waiting for people asks, and who may answer it.

An approval gate shows the parameters of the steps it guards (and binds its decision to
them with the gate hash); a manual task shows its instructions and checklist; a step found
in flight after a crash asks whether its action took effect. Who may decide comes from the
runbook's approver groups, Slack user groups as Slack lists them now included; the sandbox
alone lets anyone decide a step for which the runbook names nobody.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tocsin.errors import TemplateError, TocsinError
from tocsin.flows.guards import guarded_ids, guarding_gate
from tocsin.flows.run_state import RunState
from tocsin.gates import WaitRequest, gate_hash
from tocsin.integration import usergroup_members
from tocsin.journal import StepRecord, now
from tocsin.model import ApproverGroup, Step, is_slack_user_id
from tocsin.statuses import StepStatus
from tocsin.templating import render_value

MANUAL_TASK_DEFAULT_TIMEOUT = timedelta(days=7)

Deciders = list[tuple[str, ApproverGroup]]


def wait_length(step: Step) -> timedelta:
    """How long a step waits for people (reminders come a fraction of it before the end)."""
    if step.approval is not None:
        return step.approval.timeout
    return step.timeout or MANUAL_TASK_DEFAULT_TIMEOUT


class WaitRequests:
    """Builds the request of each step that waits for people in one run."""

    def __init__(self, state: RunState) -> None:
        self.state = state

    def build(self, step: Step, existing: StepRecord | None, *, in_doubt: bool) -> WaitRequest:
        """The request ``step`` waits with; a gate still showing the same thing keeps its deadline."""
        state = self.state
        requester = state.incident.requested_by
        if in_doubt:
            request = WaitRequest(
                kind="in_doubt",
                prompt=(
                    f"Step {step.id} ({step.action}) was running when the previous run stopped, and "
                    "its action is not idempotent. Check whether it took effect: approve to run it "
                    "again, done if it took effect, reject to stop the run."
                ),
                deadline=(now() + MANUAL_TASK_DEFAULT_TIMEOUT).isoformat(),
                requester=requester,
                gate_hash=gate_hash(state.loaded.digest, step.id, {"in_doubt": step.id}),
                guarded={step.id: self.in_doubt_outputs(step)},
                **self.deciders(step.id, self.in_doubt_deciders(step)),
            )
        elif step.approval is not None:
            gate = step.approval
            guarded = self.guarded_parameters(step)
            digest = gate_hash(state.loaded.digest, step.id, guarded)
            group = state.runbook.approver_groups[gate.approvers]
            deadline = now() + gate.timeout
            if existing is not None and existing.request and existing.status == StepStatus.WAITING:
                previous = WaitRequest.from_data(existing.request)
                if previous.gate_hash == digest:
                    deadline = previous.deadline_at
            # A requester without a Slack identity could approve their own run unnoticed:
            # one more approver than the quorum is needed then (said at the gate).
            known = is_slack_user_id(requester) or state.settings.mode == "sandbox"
            request = WaitRequest(
                kind="approval",
                prompt=str(render_value(gate.prompt, state.template_context())),
                deadline=deadline.isoformat(),
                requester=requester,
                gate_hash=digest,
                approvers=self.eligible_approvers(step.id, group.users, group.usergroup),
                usergroups=[group.usergroup] if group.usergroup else [],
                group=gate.approvers,
                quorum=gate.quorum + (0 if known else 1),
                guarded=guarded,
                requester_known=known,
            )
        else:
            assert step.manual is not None
            timeout = step.timeout or MANUAL_TASK_DEFAULT_TIMEOUT
            assignee = step.manual.assignee
            deciding = (
                self.group_named(assignee)
                if assignee in state.runbook.approver_groups
                else self.group_named(state.runbook.operators)
            )
            request = WaitRequest(
                kind="manual",
                prompt=str(
                    render_value(step.manual.instructions, state.template_context())
                ).strip(),
                deadline=(now() + timeout).isoformat(),
                requester=requester,
                gate_hash=gate_hash(state.loaded.digest, step.id, {}),
                checklist=[
                    str(render_value(item, state.template_context()))
                    for item in step.manual.checklist
                ],
                **self.deciders(step.id, deciding),
            )
        # A secret input templated into a prompt or a checklist is shown and stored redacted.
        return WaitRequest.from_data(state.redactor.scrub(request.as_data()))

    # who decides -----------------------------------------------------------------------------

    def eligible_approvers(
        self, step_id: str, users: list[str], usergroup: str | None
    ) -> list[str]:
        """The people listed by id, plus the members of the Slack user group as Slack says now."""
        state = self.state
        people = set(users)
        if usergroup:
            try:
                members = usergroup_members(state.settings, state.secrets, usergroup)
            except TocsinError as exc:
                state.event(
                    "approval.group_lookup_failed", step_id, usergroup=usergroup, error=exc.message
                )
                state.report(
                    f"{step_id}: cannot list Slack user group {usergroup} ({exc.message}); "
                    "only people listed by id can decide for now"
                )
            else:
                people.update(members)
        return sorted(people)

    def deciders(self, step_id: str, groups: Deciders) -> dict[str, Any]:
        """Who may decide a manual task or an in-doubt step: the groups, or (sandbox) anyone."""
        if not groups:
            # Deny by default live; the sandbox lets anyone try a runbook that names nobody.
            return {"open_to_anyone": self.state.settings.mode == "sandbox", "group": ""}
        people: set[str] = set()
        for _, group in groups:
            people.update(self.eligible_approvers(step_id, group.users, group.usergroup))
        return {
            "approvers": sorted(people),
            "usergroups": [g.usergroup for _, g in groups if g.usergroup],
            "group": "+".join(name for name, _ in groups),
        }

    def group_named(self, name: str | None) -> Deciders:
        group = self.state.runbook.approver_groups.get(name) if name else None
        return [(name, group)] if name and group is not None else []

    def in_doubt_deciders(self, step: Step) -> Deciders:
        """Running an interrupted destructive step again takes the people of the gate that
        guarded it (its escalation group too, who may have approved it), else the runbook's
        operators."""
        gate = guarding_gate(self.state.runbook, step)
        if gate is not None:
            return self.group_named(gate.approvers) + self.group_named(gate.escalate_to)
        return self.group_named(self.state.runbook.operators)

    def in_doubt_outputs(self, step: Step) -> dict[str, Any]:
        """What a person saying an interrupted step took effect may give as its outputs: the
        action's declared outputs (None: not declared), and those that are secrets (never)."""
        definition = self.state.registry.get(step.action or "")
        declared = definition.output_names
        return {
            "action": step.action,
            "outputs": sorted(declared) if declared is not None else None,
            "secret_outputs": sorted(self.state.secret_fields(step)),
        }

    # what a gate shows -----------------------------------------------------------------------

    def guarded_parameters(self, gate_step: Step) -> dict[str, Any]:
        state = self.state
        guarded: dict[str, Any] = {}
        for step_id in guarded_ids(state.runbook, gate_step):
            step = state.runbook.step(step_id)
            if step.action is not None:
                try:
                    rendered = state.registry.get(step.action).render_parameters(
                        step.with_, state.template_context()
                    )
                    guarded[step_id] = {
                        "action": step.action,
                        "with": state.redactor.fields(rendered, state.secret_fields(step))
                        if isinstance(rendered, dict)
                        else rendered,
                    }
                except TemplateError:
                    guarded[step_id] = {"action": step.action, "with": step.with_}
                    continue
                touches = self.touches(step, rendered)
                if touches:
                    guarded[step_id]["touches"] = state.redactor.scrub(touches)
                preview = self.preview(step, rendered)
                if preview:
                    guarded[step_id]["preview"] = state.redactor.scrub(preview)
        return guarded

    def preview(self, step: Step, parameters: Any) -> str | None:
        """The action's preview of a guarded call (a campaign's sample message): the gate
        shows it, and its hash binds the decision to it."""
        registry = self.state.registry
        if step.action is None or step.action not in registry or not isinstance(parameters, dict):
            return None
        definition = registry.get(step.action)
        try:
            checked = definition.parameters.model_validate(parameters)
        except Exception:  # parameters the action will refuse: the step fails and says why
            return None
        return definition.preview_call(self.state.settings, self.state.secrets, checked)

    def touches(self, step: Step, parameters: Any) -> str | None:
        """What a guarded step will touch, in the action's own words (as `tocsin plan` says)."""
        registry = self.state.registry
        if step.action is None or step.action not in registry or not isinstance(parameters, dict):
            return None
        definition = registry.get(step.action)
        try:
            return definition.describe_call(definition.parameters.model_validate(parameters))
        except Exception:  # parameters the action will refuse: the step fails and says why
            return None


__all__ = ["MANUAL_TASK_DEFAULT_TIMEOUT", "WaitRequests", "wait_length"]
