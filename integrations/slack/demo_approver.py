"""The demo's approver in Slack: clicks Approve on the gate message a run posted in the
sandbox's fake Slack, through a request signed as Slack signs it, so ``tocsin demo`` takes
the production path (signature check, user group, journal, resume, ``chat.update``)."""

from __future__ import annotations

from tocsin.integration import DemoContext
from tocsin.integrations.slack.fake import FakeSlack
from tocsin.integrations.slack.incident_thread import APPROVE_ACTION, GATE
from tocsin.integrations.slack.posts import SlackPosts
from tocsin.integrations.slack.sandbox import SANDBOX_SIGNING_SECRET
from tocsin.integrations.slack.simulated_user import SimulatedSlack
from tocsin.journal import RunRecord


class SlackDemoApprover:
    """``tocsin.integration.DemoApprover`` over the sandbox's fake Slack."""

    def __init__(self, context: DemoContext, fake: FakeSlack) -> None:
        self.fake = fake
        self.say = context.say
        self.posts = SlackPosts(context.journal)
        self.user = SimulatedSlack(context.gateway_url, SANDBOX_SIGNING_SECRET, fake_slack=fake)

    def approve(self, run: RunRecord, step_id: str, person: str) -> bool:
        post = self.posts.post(run.incident, GATE, f"{run.id}:{step_id}")
        if post is None:
            return False  # not posted yet
        try:
            message = self.fake.message(post.channel, post.ts)
        except KeyError:
            return False
        self.say(f"[scripted approver] {person} clicks Approve on {step_id} in Slack")
        answer = self.user.click(person, message, APPROVE_ACTION)
        if answer.status_code != 200:
            self.say(
                f"[scripted approver] the gateway answered {answer.status_code}: {answer.text}"
            )
        return True

    def close(self) -> None:
        self.user.close()


def demo_approver(context: DemoContext) -> SlackDemoApprover | None:
    """The approver, when the sandbox runs a fake Slack."""
    fake = context.fakes.get("slack")
    return SlackDemoApprover(context, fake) if isinstance(fake, FakeSlack) else None
