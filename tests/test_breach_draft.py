"""The GDPR breach notification draft from known runs, and the report's annex that carries it.

Two runs of a small runbook on the shared Prefect server, in this process: two actions
(``log`` and the toy ``test.count``), a step skipped by its condition, a manual step done
by a lead, then ``notify.draft_breach_notification``. The first run is for the APD/GBA by a
Dutch-speaking office, detected two hours ago, with the contact point and the controller
in the settings; the second for the CNIL, detected 80 hours ago, with neither.
"""

from __future__ import annotations

import hashlib
import json
import stat
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.engine_support import HEAD, FlowInThread, settings_journal
from tocsin.audit import AuditKey
from tocsin.incident import Incident
from tocsin.integrations.notify.breach_draft import (
    BreachFacts,
    draft_language,
    save_draft,
    write_draft,
)
from tocsin.report import IncidentReport, build_report, render
from tocsin.settings import load_settings

pytestmark = pytest.mark.slow

NATURE = "Phishing gave access to the mailbox of anne <script>alert(1)</script>."
CONTACT = "Marie Dpo, dpo@broker-office.example, +32 2 555 01 02"
CONTROLLER = "Cabinet Dupont SRL, BCE 0123.456.789"

RUNBOOK = (
    HEAD.format(runbook_id="breach-draft").replace(
        "inputs:\n",
        "inputs:\n"
        "  authority: {type: string, description: apd or cnil}\n"
        "  nature: {type: string, description: What happened}\n"
        "  people: {type: integer, description: People concerned}\n"
        "  high_risk: {type: boolean, description: High risk}\n",
    )
    + """\
steps:
  - id: revoke_sessions
    title: Sign the user out of every session
    phase: contain
    action: log
    with: {message: "sessions of anne revoked"}
  - id: reset_password
    title: Reset the user's password
    phase: contain
    action: test.count
    with: {file: "{{ inputs.state }}/resets"}
  - id: never_run
    title: Wipe the laptop
    phase: contain
    when: inputs.people > 100000
    action: test.count
    with: {file: "{{ inputs.state }}/wipes"}
  - id: call_the_bank
    title: Call the bank about the fraudulent transfer
    phase: contain
    manual:
      instructions: Phone the bank.
      checklist: [Bank called]
  - id: draft_notification
    title: Draft the notification to the data-protection authority
    phase: notify
    action: notify.draft_breach_notification
    with:
      authority: "{{ inputs.authority }}"
      nature: "{{ inputs.nature }}"
      data_categories: [identification data, bank details]
      people_categories: [clients, prospects]
      people_count: "{{ inputs.people }}"
      records_count: 340
      consequences: Fraudulent payment requests sent in the office's name.
      measures_proposed:
        - Watch the user's sign-ins for a month
        - Train the staff to recognise phishing
      high_risk: "{{ inputs.high_risk }}"
      people_informed: "{{ 12 if inputs.high_risk else None }}"
"""
)


@dataclass(frozen=True)
class DraftRun:
    ticket: str
    detected_at: datetime
    outputs: dict[str, Any]
    drafts: Path
    report_md: str
    report_html: str
    report_json: dict[str, Any]
    report: IncidentReport


def _run(
    folder: Path, ticket: str, detected_at: datetime, inputs: dict[str, Any], env: dict[str, str]
) -> DraftRun:
    """Run the runbook for an incident detected at ``detected_at``, the lead doing the call."""
    from tocsin.flows.runbook import outcome_of, run_runbook

    drafts = folder / "drafts"
    with pytest.MonkeyPatch.context() as patch:
        for name in (
            "TOCSIN_NOTIFY__DPO_CONTACT",
            "TOCSIN_NOTIFY__CONTROLLER_NAME",
            "TOCSIN_NOTIFY__OFFICE_LANGUAGE",
        ):
            patch.delenv(name, raising=False)
        patch.setenv("TOCSIN_NOTIFY__DRAFTS_FOLDER", str(drafts))
        for name, value in env.items():
            patch.setenv(name, value)
        journal = settings_journal()
        handle = FlowInThread(journal, ticket, "breach-draft")
        incident = Incident(
            ticket=ticket,
            requested_by="U0REQUESTER",
            requested_via="test",
            detected_at=detected_at.isoformat(timespec="seconds"),
        )

        def target() -> None:
            try:
                state = run_runbook(
                    runbook_source=RUNBOOK,
                    runbook_name=str(folder / "breach-draft.yaml"),
                    incident=asdict(incident),
                    inputs={"state": str(folder), **inputs},
                    return_state=True,
                )
                handle.result = outcome_of(state)
            except BaseException as exc:  # handed to the test by finish()
                handle.error = exc

        handle.thread = threading.Thread(target=target, daemon=True)
        handle.thread.start()
        try:
            handle.request("call_the_bank")
            handle.decide("call_the_bank", "done", "U0LEAD2", checklist=[1])
            result = handle.finish()
            assert result["status"] == "succeeded", result
            run = handle.run()
            step = journal.step(run.id, "draft_notification")
            assert step is not None
            outputs = dict(step.outputs or {})
            key = AuditKey.load(load_settings().audit_key_path)
            report = build_report(
                ticket, journal.audit_records(ticket), journal.verify(ticket, key.public_key)
            )
        finally:
            journal.close()
    return DraftRun(
        ticket,
        detected_at,
        outputs,
        drafts,
        render(report, "md").decode(),
        render(report, "html").decode(),
        json.loads(render(report, "json")),
        report,
    )


@pytest.fixture(scope="module")
def apd_run(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> DraftRun:
    return _run(
        tmp_path_factory.mktemp("apd"),
        "BRD-1",
        datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2),
        {"authority": "apd", "nature": NATURE, "people": 57, "high_risk": True},
        {
            "TOCSIN_NOTIFY__DPO_CONTACT": CONTACT,
            "TOCSIN_NOTIFY__CONTROLLER_NAME": CONTROLLER,
            "TOCSIN_NOTIFY__OFFICE_LANGUAGE": "nl",
        },
    )


@pytest.fixture(scope="module")
def cnil_run(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> DraftRun:
    return _run(
        tmp_path_factory.mktemp("cnil"),
        "BRD-2",
        datetime.now(UTC).replace(microsecond=0) - timedelta(hours=80),
        {"authority": "cnil", "nature": NATURE, "people": 0, "high_risk": False},
        {"TOCSIN_NOTIFY__OFFICE_LANGUAGE": "nl"},  # the CNIL takes French all the same
    )


def _section(draft: str, heading: str) -> str:
    """The text of the section of ``draft`` whose heading starts with ``heading``."""
    lines = draft.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip("#").strip().startswith(heading))
    level = len(lines[start]) - len(lines[start].lstrip("#"))
    end = next(
        (
            i
            for i in range(start + 1, len(lines))
            if lines[i].startswith("#") and len(lines[i]) - len(lines[i].lstrip("#")) <= level
        ),
        len(lines),
    )
    return "\n".join(lines[start + 1 : end])


# the draft ------------------------------------------------------------------------------------


def test_apd_draft_is_in_dutch_for_a_dutch_speaking_office(apd_run: DraftRun) -> None:
    draft = apd_run.outputs["draft"]
    assert apd_run.outputs["authority"] == "apd" and apd_run.outputs["language"] == "nl"
    assert draft.startswith(
        "# Melding van een inbreuk in verband met persoonsgegevens — ontwerp voor de "
        "Gegevensbeschermingsautoriteit (GBA)\n"
    )
    assert "Het volgt artikel 33.3 AVG: kopieer elke sectie naar het overeenkomstige veld" in draft
    assert "e-formulierenportaal van de GBA" in draft
    assert "Per e-mail verstuurde formulieren worden niet behandeld." in draft
    assert "PDF e-form" in apd_run.outputs["form"] and "not contacted" in apd_run.outputs["form"]


def test_apd_draft_holds_each_art_33_3_element_from_the_run(apd_run: DraftRun) -> None:
    draft = apd_run.outputs["draft"]
    nature = _section(draft, "a) Aard van de inbreuk")
    assert (
        "Phishing gave access to the mailbox of anne \\<script\\>alert(1)\\</script\\>." in nature
    )
    assert (
        "- **Categorieën van betrokken persoonsgegevens**: identification data, bank details"
        in (nature)
    )
    assert "- **Categorieën van betrokkenen**: clients, prospects" in nature
    assert "- **Geschat aantal betrokkenen**: 57" in nature
    assert "- **Geschat aantal betrokken registraties van persoonsgegevens**: 340" in nature
    contact = _section(draft, "b) Functionaris voor gegevensbescherming")
    assert contact.strip() == CONTACT
    consequences = _section(draft, "c) Waarschijnlijke gevolgen")
    assert consequences.strip() == "Fraudulent payment requests sent in the office's name."
    controller = _section(draft, "Verwerkingsverantwoordelijke")
    assert f"- **Naam en ondernemingsnummer**: {CONTROLLER}" in controller
    assert "- **Interne referentie**: BRD-1" in controller


def test_measures_taken_are_the_runs_done_steps_and_the_proposed_ones_follow(
    apd_run: DraftRun,
) -> None:
    draft = apd_run.outputs["draft"]
    taken = _section(draft, "Genomen maatregelen")
    listed = [line for line in taken.splitlines() if line.startswith("- ")]
    assert [line.split("**")[1] for line in listed] == [
        "Sign the user out of every session",
        "Reset the user's password",
        "Call the bank about the fraudulent transfer",
    ]
    assert "Wipe the laptop" not in draft  # skipped by its condition
    assert "Draft the notification" not in taken  # the draft's own step
    assert "door U0LEAD2" in listed[2]  # who did the manual step
    assert "write a info line to the run log: sessions of anne revoked" in listed[0]
    assert listed[1].endswith("UTC)")  # test.count has no sentence of its own: none shown
    proposed = _section(draft, "Voorgestelde maatregelen")
    assert "- Watch the user's sign-ins for a month" in proposed
    assert "- Train the staff to recognise phishing" in proposed


def test_deadline_is_72_hours_after_detection_and_not_late(apd_run: DraftRun) -> None:
    deadline = apd_run.detected_at + timedelta(hours=72)
    assert apd_run.outputs["aware_at"] == apd_run.detected_at.isoformat()
    assert apd_run.outputs["deadline"] == deadline.isoformat()
    assert apd_run.outputs["late"] is False
    draft = apd_run.outputs["draft"]
    dates = _section(draft, "Data en termijn")
    assert f"(72 uur na de kennisname)**: {deadline.strftime('%d-%m-%Y %H:%M')} UTC" in dates
    assert "binnen de termijn" in dates
    assert "Redenen voor de vertraging" not in draft


def test_high_risk_draft_has_the_communication_to_the_people(apd_run: DraftRun) -> None:
    art34 = _section(apd_run.outputs["draft"], "Mededeling aan de betrokkenen")
    assert "artikel 34 vereist dat zij onverwijld worden ingelicht" in art34
    assert "- **Tot nu toe ingelichte betrokkenen**: 12" in art34
    assert f"- Bij wie u met vragen terechtkunt: {CONTACT}" in art34
    assert "- Wat dit voor u kan betekenen: Fraudulent payment requests" in art34


def test_apd_draft_with_every_fact_given_has_only_the_breach_start_to_complete(
    apd_run: DraftRun,
) -> None:
    assert apd_run.outputs["to_complete"] == [
        "wanneer de inbreuk plaatsvond of begon, indien bekend"
    ]
    assert (
        "**[AAN TE VULLEN: wanneer de inbreuk plaatsvond of begon, indien bekend]**"
        in apd_run.outputs["draft"]
    )


def test_draft_file_is_private_and_holds_the_draft(apd_run: DraftRun) -> None:
    path = Path(apd_run.outputs["path"])
    assert path == apd_run.drafts / "BRD-1-draft_notification-apd.md"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(apd_run.drafts.stat().st_mode) == 0o700
    content = path.read_bytes()
    assert content.decode() == apd_run.outputs["draft"]
    assert apd_run.outputs["sha256"] == "sha256:" + hashlib.sha256(content).hexdigest()


def test_cnil_draft_is_in_french_whatever_the_office_language(cnil_run: DraftRun) -> None:
    draft = cnil_run.outputs["draft"]
    assert cnil_run.outputs["language"] == "fr"
    assert draft.startswith(
        "# Notification d'une violation de données à caractère personnel — projet pour la "
        "Commission nationale de l'informatique et des libertés (CNIL)\n"
    )
    assert "Par le téléservice de notification de violations" in draft
    assert "téléservice" in cnil_run.outputs["form"]
    assert "Il suit l'article 33.3 du RGPD" in draft


def test_late_draft_has_the_marked_section_for_the_reasons(cnil_run: DraftRun) -> None:
    assert cnil_run.outputs["late"] is True
    draft = cnil_run.outputs["draft"]
    assert "le délai est dépassé" in _section(draft, "Dates et délai")
    reasons = _section(draft, "Motifs du retard (art. 33.1)")
    assert reasons.strip() == "**[À COMPLÉTER: les motifs du retard]**"


def test_missing_contact_and_unknown_count_are_to_complete_never_invented(
    cnil_run: DraftRun,
) -> None:
    draft = cnil_run.outputs["draft"]
    to_complete = cnil_run.outputs["to_complete"]
    contact_item = (
        "le nom et les coordonnées du délégué à la protection des données ou d'un autre point "
        "de contact"
    )
    for item in (
        contact_item,
        "le nom et le numéro d'entreprise du responsable du traitement",
        "le nombre approximatif de personnes concernées",
        "les motifs du retard",
    ):
        assert item in to_complete
    listed = _section(draft, "À compléter avant la soumission")
    assert [line[2:] for line in listed.splitlines() if line.startswith("- ")] == to_complete
    contact = _section(draft, "b) Délégué à la protection des données")
    assert contact.strip() == f"**[À COMPLÉTER: {contact_item}]**"
    assert "- **Nombre approximatif de personnes concernées**: **[À COMPLÉTER:" in draft


def test_low_risk_draft_says_art_34_does_not_require_telling_the_people(
    cnil_run: DraftRun,
) -> None:
    art34 = _section(cnil_run.outputs["draft"], "Communication aux personnes concernées")
    assert "l'article 34 n'impose pas d'informer les personnes concernées" in art34
    assert "l'article 34.3" in art34 and "chiffrées" in art34
    assert "Ce qui est dit aux personnes concernées" not in art34


def test_english_draft_for_the_office_says_the_authority_needs_french_or_dutch() -> None:
    assert draft_language("apd", "en") == "fr" and draft_language("cnil", "nl") == "fr"
    assert draft_language("apd", "nl") == "nl" and draft_language("apd", "nl", "en") == "en"
    aware = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)
    facts = BreachFacts(
        incident="INC-7",
        authority="apd",
        language="en",
        controller=CONTROLLER,
        contact=CONTACT,
        nature="A laptop was stolen.",
        data_categories=["contact details"],
        people_categories=["clients"],
        people_count=40,
        records_count=None,
        consequences="Phishing.",
        measures_taken=[],
        measures_proposed=[],
        high_risk=True,
        people_informed=None,
        aware_at=aware,
        breach_started_at="2026-03-01",
        delay_reasons=None,
    )
    draft = write_draft(facts, aware + timedelta(hours=1))
    assert draft.deadline == aware + timedelta(hours=72) and not draft.late
    assert draft.to_complete == [
        "the draft translated into French or Dutch",
        "the approximate number of records concerned",
        "the measures taken",
        "the measures proposed to address the breach and mitigate its effects",
        "how many people concerned were informed, when and how",
    ]
    assert "the authority takes the notification in French or Dutch" in draft.markdown
    assert "**The breach happened or started**: 2026-03-01" in draft.markdown
    late = write_draft(facts, aware + timedelta(hours=73))
    assert late.late and "## Reasons for the delay (art. 33(1))" in late.markdown


def test_an_earlier_different_draft_is_kept(tmp_path: Path) -> None:
    folder = tmp_path / "drafts"
    first, _ = save_draft(folder, "INC-1-draft-apd", "# first\n")
    again, _ = save_draft(folder, "INC-1-draft-apd", "# first\n")
    second, digest = save_draft(folder, "INC-1-draft-apd", "# second\n")
    assert first == again == folder / "INC-1-draft-apd.md"
    assert second == folder / "INC-1-draft-apd-2.md"
    assert first.read_text() == "# first\n" and second.read_text() == "# second\n"
    assert len(digest) == 64


# the report's annex ---------------------------------------------------------------------------


def test_report_markdown_has_the_draft_as_annex_once(apd_run: DraftRun) -> None:
    report = apd_run.report_md
    heading = "## Annex 1: Draft the notification to the data-protection authority\n"
    assert report.count("## Annex ") == 1 and heading in report
    annex = report.split(heading, 1)[1]
    assert apd_run.outputs["draft"].rstrip() in annex
    assert report.index(heading) > report.index("## Lessons learned")
    assert report.count("Geschat aantal betrokkenen") == 1  # not dumped in What Tocsin changed
    changes = report.split("## What Tocsin changed", 1)[1].split("\n## ", 1)[0]
    row = next(line for line in changes.splitlines() if "(draft_notification)" in line)
    assert "draft: in the annex" in row


def test_report_html_annex_is_converted_and_the_script_stays_text(apd_run: DraftRun) -> None:
    page = apd_run.report_html
    assert "<script>" not in page
    annex = page.split('<section class="annex">', 1)[1].split("</section>", 1)[0]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in annex
    assert "<h3>Melding van een inbreuk" in annex  # the draft's # under the report's h2
    assert "<h4>a) Aard van de inbreuk</h4>" in annex
    assert "<li><strong>Geschat aantal betrokkenen</strong>: 57</li>" in annex
    assert "<a " not in annex


# WeasyPrint warns, once, when the machine lacks the HarfBuzz-Subset library it will need.
@pytest.mark.filterwarnings("ignore:HarfBuzz-Subset:DeprecationWarning")
def test_report_pdf_prints_the_annex(apd_run: DraftRun) -> None:
    import pypdfium2

    document = pypdfium2.PdfDocument(render(apd_run.report, "pdf", "en"))
    try:
        text = "\n".join(page.get_textpage().get_text_range() for page in document)
    finally:
        document.close()
    assert "Annex 1: Draft the notification" in text
    assert "a) Aard van de inbreuk" in text
    assert "<script>alert(1)</script>" in text  # printed as text


def test_report_in_french_names_the_annex_in_french(cnil_run: DraftRun) -> None:
    key = AuditKey.load(load_settings().audit_key_path)
    journal = settings_journal()
    try:
        report = build_report(
            cnil_run.ticket,
            journal.audit_records(cnil_run.ticket),
            journal.verify(cnil_run.ticket, key.public_key),
        )
    finally:
        journal.close()
    page = render(report, "md", "fr").decode()
    assert "## Annexe 1 : Draft the notification" in page
    assert "draft: en annexe" in page


def test_report_json_lists_the_annex(apd_run: DraftRun) -> None:
    (annex,) = apd_run.report_json["annexes"]
    assert annex == {
        "run_id": annex["run_id"],
        "step_id": "draft_notification",
        "title": "Draft the notification to the data-protection authority",
        "action": "notify.draft_breach_notification",
        "output": "draft",
        "document": apd_run.outputs["draft"],
        "format": "markdown",
    }
    assert isinstance(annex["run_id"], int)


def test_no_annex_without_an_annexed_action() -> None:
    from tocsin.audit import Verification

    report = build_report("INC-0", [], Verification("INC-0"), annexed_outputs={})
    assert report.annexes == []
    assert "Annex" not in render(report, "md").decode()
    assert json.loads(render(report, "json"))["annexes"] == []
