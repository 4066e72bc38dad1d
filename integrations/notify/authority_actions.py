"""``notify.draft_breach_notification``: the draft of the GDPR breach notification to the
data-protection authority (APD/GBA or CNIL), filled from the step's parameters, the
settings (contact point, controller) and the run (measures taken, when the office became
aware). It writes a file and the report's annex; it never contacts the authority."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, Field

from tocsin.actions import ActionContext, action
from tocsin.errors import ActionError
from tocsin.integrations.notify import integration
from tocsin.integrations.notify.breach_draft import (
    Authority,
    BreachFacts,
    draft_language,
    measures_taken,
    parse_moment,
    save_draft,
    write_draft,
)
from tocsin.integrations.notify.breach_wording import AUTHORITY_NAMES, FORM
from tocsin.integrations.notify.settings import Language

ACTION = "notify.draft_breach_notification"


class BreachNotificationDraft(BaseModel):
    draft: str
    """The draft, as Markdown: the report adds it as an annex."""
    path: str
    """The file the draft was written to."""
    sha256: str
    authority: str
    language: str
    aware_at: str
    """When the office became aware of the breach (ISO 8601; empty when not known)."""
    deadline: str
    """72 hours later (GDPR art. 33(1)); empty when the moment of awareness is not known."""
    late: bool
    """The deadline had passed when the draft was written."""
    to_complete: list[str]
    """What the office must still fill in, in the draft's language."""
    form: str
    """Where and how to submit the draft (a sentence)."""


def _describe(authority: str) -> str:
    name = AUTHORITY_NAMES["en"].get(authority, authority)
    return f"write a draft of the GDPR breach notification to {name} (nothing is sent)"


@action(
    ACTION,
    destructive=False,
    idempotent=True,  # run again, it writes the same draft, or keeps the earlier one beside it
    annex="draft",
    describe=_describe,
)
def draft_breach_notification(
    context: ActionContext,
    *,
    authority: Annotated[
        Authority, Field(description="apd (Belgium, APD/GBA) or cnil (France, CNIL)")
    ],
    nature: Annotated[str, Field(description="What happened: the nature of the breach")],
    data_categories: Annotated[
        list[str], Field(description="Categories of personal data concerned")
    ],
    people_categories: Annotated[list[str], Field(description="Categories of people concerned")],
    people_count: Annotated[
        int, Field(ge=0, description="Approximate number of people concerned (0: not known yet)")
    ],
    consequences: Annotated[str, Field(description="The breach's likely consequences")],
    high_risk: Annotated[
        bool,
        Field(
            description="The risk to the people concerned is high: GDPR art. 34's communication "
            "to them is part of the draft"
        ),
    ],
    measures_proposed: Annotated[
        list[str],
        Field(
            default_factory=list,
            description="Measures proposed, including to mitigate the breach's adverse effects "
            "(the measures taken come from the run)",
        ),
    ],
    records_count: Annotated[
        int | None, Field(ge=0, description="Approximate number of records concerned")
    ] = None,
    people_informed: Annotated[
        int | None, Field(ge=0, description="How many people concerned were informed")
    ] = None,
    breach_started_at: Annotated[
        str | None, Field(description="When the breach happened or started, if known")
    ] = None,
    delay_reasons: Annotated[
        str | None, Field(description="Why the notification is later than 72 hours")
    ] = None,
    contact: Annotated[
        str | None,
        Field(description="The DPO or contact point (default: the setting notify.dpo_contact)"),
    ] = None,
    controller: Annotated[
        str | None,
        Field(description="The controller's name and number (default: notify.controller_name)"),
    ] = None,
    language: Annotated[
        Language | None,
        Field(
            description="fr, nl or en (default: the authority's: the office's language for "
            "the APD/GBA when French or Dutch, else French; en for the office's own use)"
        ),
    ] = None,
) -> BreachNotificationDraft:
    """Write the draft of the GDPR breach notification (art. 33(3)) to the authority."""
    notify = integration.settings_of(context.settings)
    chosen = draft_language(authority, notify.office_language, language)
    try:
        aware_at = parse_moment(context.detected_at)
    except ValueError:
        raise ActionError(
            ACTION,
            f"the incident's detection time {context.detected_at!r} is not an ISO 8601 moment",
            "give the incident's detected_at as 2026-03-02T09:15:00+01:00",
        ) from None
    facts = BreachFacts(
        incident=context.incident,
        authority=authority,
        language=chosen,
        controller=controller if controller is not None else notify.controller_name,
        contact=contact if contact is not None else notify.dpo_contact,
        nature=nature,
        data_categories=data_categories,
        people_categories=people_categories,
        people_count=people_count,
        records_count=records_count,
        consequences=consequences,
        measures_taken=measures_taken(context.steps_so_far(), context.step_id),
        measures_proposed=measures_proposed,
        high_risk=high_risk,
        people_informed=people_informed,
        aware_at=aware_at,
        breach_started_at=breach_started_at,
        delay_reasons=delay_reasons,
    )
    draft = write_draft(facts, datetime.now(UTC))
    folder = notify.drafts_folder or context.settings.data_dir / "drafts"
    try:
        path, digest = save_draft(
            folder, f"{context.incident}-{context.step_id}-{authority}", draft.markdown
        )
    except OSError as exc:
        raise ActionError(
            ACTION,
            f"cannot write the draft in {folder}: {exc.strerror or exc}",
            "let Tocsin's user write there, or set notify.drafts_folder to a folder it can",
        ) from None
    context.logger.info("%s: the breach notification draft is in %s", context.step_id, path)
    return BreachNotificationDraft(
        draft=draft.markdown,
        path=str(path),
        sha256=f"sha256:{digest}",
        authority=authority,
        language=chosen,
        aware_at=aware_at.isoformat() if aware_at is not None else "",
        deadline=draft.deadline.isoformat() if draft.deadline is not None else "",
        late=draft.late,
        to_complete=draft.to_complete,
        form=FORM[authority],
    )
