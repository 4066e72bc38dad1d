"""The shipped message templates render in every language, carry the anti-phishing paragraph
when they go to clients, escape values in HTML, and refuse what is missing or malformed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tocsin.errors import ConfigurationError, TemplateError
from tocsin.integrations.notify.messages import (
    ANTI_PHISHING,
    choose_language,
    has_anti_phishing,
    html_of_text,
    load_template,
    render_message,
    template_ids,
)
from tocsin.integrations.notify.settings import LANGUAGES
from tocsin.settings import Settings, load_settings

SHIPPED = {
    "staff-briefing": "staff",
    "client-mailbox-compromise": "clients",
    "client-office-incident": "clients",
    "breach-notice": "clients",
    "portal-takeover-advice": "clients",
}
DATA: dict[str, Any] = {
    "situation": "The mailbox of alice@broker-office.example was phished.",
    "instructions": ["Call back before paying", "Report odd messages"],
    "compromised_from": "2026-11-28",
    "compromised_to": "2026-12-01",
    "incident_date": "2026-12-01",
    "what_happened": "Attackers entered the operator's platform with a phished account.",
    "third_party": "TiersPay",
    "data_concerned": ["surname", "date of birth", "social security number"],
    "data_not_concerned": ["bank details", "passwords"],
    "portal": "the insurer's customer area",
    "country": "fr",
}


def context(name: str = "Jeanne Martin", data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "office": {
            "name": "Courtage Dupont",
            "phone": "+32 2 555 01 00",
            "contact": "incident@broker-office.example",
        },
        "incident": {"ticket": "INC-42"},
        "recipient": {"name": name, "email": "jeanne@example.be"},
        "data": DATA if data is None else data,
        "language": "fr",
    }


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings()


def test_the_shipped_templates_are_the_documented_ones(settings: Settings) -> None:
    assert set(SHIPPED) <= set(template_ids(settings))
    for template_id, audience in SHIPPED.items():
        template = load_template(template_id, settings)
        assert template.audience == audience
        assert set(template.parts) == set(LANGUAGES)
        assert template.version == "1"


@pytest.mark.parametrize("template_id", sorted(SHIPPED))
@pytest.mark.parametrize("language", LANGUAGES)
def test_each_template_renders_in_each_language(
    settings: Settings, template_id: str, language: str
) -> None:
    template = load_template(template_id, settings)
    message = render_message(template, language, context())  # type: ignore[arg-type]
    assert message.language == language
    assert message.subject and "\n" not in message.subject
    assert "{{" not in message.text and "{%" not in message.text
    assert "Courtage Dupont" in message.text
    assert "<p" in message.html
    assert message.digest().startswith("sha256:")
    if SHIPPED[template_id] == "clients":
        assert has_anti_phishing(message)
        assert "incident@broker-office.example" in message.text
    else:
        assert not has_anti_phishing(message)


def test_each_language_has_its_own_text(settings: Settings) -> None:
    template = load_template("breach-notice", settings)
    texts = {lang: render_message(template, lang, context()).text for lang in LANGUAGES}
    assert "données" in texts["fr"] and "gegevens" in texts["nl"] and "data" in texts["en"]
    assert len(set(texts.values())) == 3


def test_the_breach_notice_lists_the_data_concerned_and_not_concerned(settings: Settings) -> None:
    message = render_message(load_template("breach-notice", settings), "en", context())
    concerned, not_concerned = message.text.split("NOT concerned")
    assert "social security number" in concerned
    assert "bank details" in not_concerned and "bank details" not in concerned


def test_a_value_cannot_add_markup_to_the_html(settings: Settings) -> None:
    message = render_message(
        load_template("client-mailbox-compromise", settings),
        "fr",
        context(name='<script>alert(1)</script><a href="https://evil.example">x</a>'),
    )
    assert "<script>" not in message.html and "<a href" not in message.html
    assert "&lt;script&gt;" in message.html


def test_a_value_cannot_break_the_subject_into_headers(settings: Settings) -> None:
    data = {**DATA, "portal": "portal\r\nBcc: everyone@example.com"}
    message = render_message(
        load_template("portal-takeover-advice", settings), "en", context(data=data)
    )
    assert "\r" not in message.subject and "\n" not in message.subject


def test_a_missing_field_is_named(settings: Settings) -> None:
    data = {key: value for key, value in DATA.items() if key != "data_concerned"}
    with pytest.raises(TemplateError) as caught:
        render_message(load_template("breach-notice", settings), "fr", context(data=data))
    assert "data_concerned" in caught.value.message


def test_without_a_name_the_greeting_is_generic(settings: Settings) -> None:
    message = render_message(
        load_template("client-office-incident", settings), "nl", context(name="")
    )
    assert message.text.startswith("Beste,")


def test_an_office_template_replaces_the_shipped_one_and_still_warns(tmp_path: Path) -> None:
    (tmp_path / "breach-notice.yaml").write_text(
        "id: breach-notice\nversion: '7'\naudience: clients\nfields: {}\n"
        "fr: {subject: 'Notre avis', text: 'Texte du cabinet {{ office.name }}'}\n",
        encoding="utf-8",
    )
    settings = load_settings(notify={"templates_folder": str(tmp_path)})
    template = load_template("breach-notice", settings)
    assert template.version == "7"
    message = render_message(template, "nl", context())  # no nl part: its only language
    assert message.language == "fr"
    assert message.text.startswith("Texte du cabinet Courtage Dupont")
    assert ANTI_PHISHING["fr"].split(":")[0] in message.text


def test_an_unknown_or_path_like_id_is_refused(settings: Settings) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_template("breach-notise", settings)
    assert "breach-notice" in caught.value.hint
    for bad in ("../settings", "/etc/passwd", "Breach"):
        with pytest.raises(ConfigurationError, match="not a template id"):
            load_template(bad, settings)


def test_a_malformed_office_template_names_its_file(tmp_path: Path) -> None:
    (tmp_path / "staff-briefing.yaml").write_text(
        "id: staff-briefing\naudience: everyone\nfr: {subject: s, text: t}\n", encoding="utf-8"
    )
    settings = load_settings(notify={"templates_folder": str(tmp_path)})
    with pytest.raises(ConfigurationError) as caught:
        load_template("staff-briefing", settings)
    assert "staff-briefing.yaml" in caught.value.message and "audience" in caught.value.message


@pytest.mark.parametrize(
    ("given", "chosen"),
    [
        ("fr", "fr"),
        ("NL", "nl"),
        ("nl-BE", "nl"),
        ("en_GB", "en"),
        ("de", "fr"),
        (None, "fr"),
        ("", "fr"),
    ],
)
def test_a_recipient_gets_their_language_else_the_offices(given: str | None, chosen: str) -> None:
    assert choose_language(given, "fr") == chosen


def test_text_becomes_html_with_its_lists_and_escaped() -> None:
    made = html_of_text("Intro <b>\n- one & two\n- three\n\nEnd")
    assert "<li>one &amp; two</li><li>three</li>" in made
    assert "Intro &lt;b&gt;" in made and "<b>" not in made
