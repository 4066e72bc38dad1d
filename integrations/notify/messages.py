"""The office's message templates and their rendering.

A template is a YAML file (``integrations/notify/templates/<id>.yaml``, or the office's own
in ``notify.templates_folder``, which wins for the same id)::

    id: breach-notice
    version: "1"
    audience: clients            # or staff
    description: ...
    fields:                      # what the step's data: must give
      what_happened: one or two sentences on what happened
    fr: {subject: ..., text: ..., html: ...}   # html is optional: else made from the text
    nl: {...}
    en: {...}

Each part is rendered in Tocsin's sandboxed Jinja with: ``office.name``, ``office.phone``,
``office.contact`` (the dedicated contact address), ``incident.ticket``,
``recipient.name``, ``recipient.email``, ``recipient.<column>`` (the list's other columns),
``data.<field>`` (the step's ``data:``) and ``language``. In the HTML part every value is
HTML-escaped, so a name or a field cannot add markup. The subject is one line.

Every ``clients`` message ends with the anti-phishing paragraph (``ANTI_PHISHING``), added
here so that an office's own template cannot forget it; staff messages do not carry it.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import yaml

from tocsin.errors import ConfigurationError, TemplateError
from tocsin.integrations.notify.settings import LANGUAGES, Language
from tocsin.settings import Settings
from tocsin.templating import render_string

SHIPPED = Path(__file__).parent / "templates"
TEMPLATE_ID = re.compile(r"^[a-z][a-z0-9-]{0,63}$")
AUDIENCES = ("staff", "clients")
MAX_SUBJECT = 200
_PARTS = ("subject", "text", "html")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")

ANTI_PHISHING: dict[Language, str] = {
    "fr": (
        "Attention aux messages frauduleux : nous ne vous demanderons jamais votre mot de "
        "passe ni vos codes, par e-mail, SMS ou téléphone. Vérifiez l'adresse de l'expéditeur, "
        "ne cliquez pas sur les liens d'un message inattendu et signalez tout message suspect "
        "à {contact}."
    ),
    "nl": (
        "Let op voor valse berichten: wij zullen u nooit om uw wachtwoord of codes vragen, "
        "niet per e-mail, sms of telefoon. Controleer het adres van de afzender, klik niet op "
        "links in een onverwacht bericht en meld elk verdacht bericht aan {contact}."
    ),
    "en": (
        "Beware of fraudulent messages: we will never ask you for your password or codes, by "
        "e-mail, text message or phone. Check the sender's address, do not click links in an "
        "unexpected message, and report any suspicious message to {contact}."
    ),
}
_PHISHING_MARK = {
    "fr": "Attention aux messages frauduleux",
    "nl": "Let op voor valse berichten",
    "en": "Beware of fraudulent messages",
}


@dataclass(frozen=True)
class MessageParts:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class Template:
    id: str
    version: str
    audience: str
    description: str
    fields: dict[str, str]
    parts: dict[Language, MessageParts]
    path: Path


@dataclass(frozen=True)
class RenderedMessage:
    template_id: str
    version: str
    language: Language
    subject: str
    text: str
    html: str

    def digest(self) -> str:
        """``sha256:...`` over the subject, text and HTML (each followed by a NUL), as the
        campaign's ``message_digest`` computes it for a sent message."""
        hashed = hashlib.sha256()
        for part in (self.subject, self.text, self.html):
            hashed.update(part.encode("utf-8"))
            hashed.update(b"\0")
        return "sha256:" + hashed.hexdigest()


def _folders(settings: Settings) -> list[Path]:
    from tocsin.integrations.notify import integration

    own = integration.settings_of(settings).templates_folder
    return [own, SHIPPED] if own is not None else [SHIPPED]


def template_ids(settings: Settings) -> list[str]:
    """Every template id the office can use (its own and the shipped ones)."""
    found = {
        path.stem
        for folder in _folders(settings)
        if folder.is_dir()
        for path in folder.glob("*.yaml")
        if TEMPLATE_ID.match(path.stem)
    }
    return sorted(found)


def load_template(template_id: str, settings: Settings) -> Template:
    """The template ``template_id``: the office's own first, then the shipped one."""
    if not TEMPLATE_ID.match(template_id):
        raise ConfigurationError(
            f"{template_id!r} is not a template id",
            "a template id is lower-case letters, digits and dashes (breach-notice)",
        )
    for folder in _folders(settings):
        path = folder / f"{template_id}.yaml"
        if path.is_file():
            return _read(path, template_id)
    raise ConfigurationError(
        f"there is no message template {template_id!r}",
        f"use one of: {', '.join(template_ids(settings))} (docs/notify.md)",
    )


def _read(path: Path, template_id: str) -> Template:
    def wrong(what: str) -> ConfigurationError:
        return ConfigurationError(
            f"the message template {path} is not valid: {what}",
            "compare it with a shipped template (integrations/notify/templates/)",
        )

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise wrong(str(exc).splitlines()[0]) from None
    if not isinstance(data, dict):
        raise wrong("it is not a mapping of keys")
    if data.get("id") != template_id:
        raise wrong(f"its id is {data.get('id')!r}, its file name says {template_id!r}")
    if data.get("audience") not in AUDIENCES:
        raise wrong(f"audience must be one of {', '.join(AUDIENCES)}")
    fields = data.get("fields") or {}
    if not isinstance(fields, dict):
        raise wrong("fields must map each field's name to its description")
    parts: dict[Language, MessageParts] = {}
    for language in LANGUAGES:
        given = data.get(language)
        if given is None:
            continue
        if (
            not isinstance(given, dict)
            or any(not isinstance(given.get(p), str) for p in ("subject", "text"))
            or not isinstance(given.get("html", ""), str)
            or set(given) - set(_PARTS)
        ):
            raise wrong(f"{language} must give subject and text (and html, if wanted), each a text")
        parts[language] = MessageParts(given["subject"], given["text"], given.get("html") or "")
    if not parts:
        raise wrong("it has no language (fr, nl, en)")
    unknown = set(data) - {"id", "version", "audience", "description", "fields", *LANGUAGES}
    if unknown:
        raise wrong(f"unknown keys: {', '.join(sorted(unknown))}")
    return Template(
        id=template_id,
        version=str(data.get("version") or "1"),
        audience=str(data["audience"]),
        description=str(data.get("description") or ""),
        fields={str(k): str(v) for k, v in fields.items()},
        parts=parts,
        path=path,
    )


def choose_language(recipient_language: str | None, office_language: Language) -> Language:
    """The recipient's language when it is one Tocsin writes (fr, nl, en; ``fr-BE``,
    ``NL_be`` count), else the office's."""
    if recipient_language:
        primary = re.split(r"[-_]", recipient_language.strip().lower(), maxsplit=1)[0]
        if primary in LANGUAGES:
            return cast(Language, primary)
    return office_language


def render_message(
    template: Template, language: Language, context: Mapping[str, Any]
) -> RenderedMessage:
    """The template's message in ``language`` (else the first it has) with these values."""
    data = context.get("data") or {}
    missing = [name for name in template.fields if name not in data or data[name] is None]
    if missing:
        raise TemplateError(
            f"the message template {template.id} needs {', '.join(missing)} in data:",
            f"give them in the step's data: ({'; '.join(f'{n}: {template.fields[n]}' for n in missing)})",
        )
    chosen: Language = language if language in template.parts else next(iter(template.parts))
    parts = template.parts[chosen]
    values = {**context, "language": chosen}
    subject = _render(template, chosen, "subject", parts.subject, values, None)
    text = _render(template, chosen, "text", parts.text, values, None)
    body = (
        _render(template, chosen, "html", parts.html, values, html.escape)
        if parts.html
        else html_of_text(text)
    )
    subject = _CONTROL.sub(" ", subject).strip()
    if len(subject) > MAX_SUBJECT:
        subject = subject[: MAX_SUBJECT - 1] + "…"
    if template.audience == "clients":
        office = context.get("office") or {}
        contact = str(office.get("contact") or office.get("name") or "")
        warning = ANTI_PHISHING[chosen].format(contact=contact)
        text = f"{text.rstrip()}\n\n{warning}\n"
        body = (
            f"{body.rstrip()}\n"
            '<p style="margin-top:24px;padding:12px;border-left:4px solid #b45309;'
            f'background:#fffbeb">{html.escape(warning)}</p>\n'
        )
    return RenderedMessage(template.id, template.version, chosen, subject, text, body)


def _render(
    template: Template,
    language: Language,
    part: str,
    source: str,
    values: Mapping[str, Any],
    escape: Any,
) -> str:
    try:
        rendered = render_string(source, values, escape=escape)
    except TemplateError as exc:
        raise TemplateError(
            f"the message template {template.id} ({language}, {part}): {exc.message}", exc.hint
        ) from None
    return "" if rendered is None else str(rendered)


def html_of_text(text: str) -> str:
    """The HTML part of a template that gives only text: its paragraphs and its lists
    (lines starting with ``- ``), everything escaped."""
    blocks: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text.strip()):
        lines = [line.strip() for line in paragraph.splitlines() if line.strip()]
        prose: list[str] = []
        items: list[str] = []
        for line in [*lines, ""]:
            if line.startswith("- "):
                if prose:
                    blocks.append(_paragraph(prose))
                    prose = []
                items.append(f"<li>{html.escape(line[2:])}</li>")
                continue
            if items:
                blocks.append(f'<ul style="margin:0 0 12px 0">{"".join(items)}</ul>')
                items = []
            if line:
                prose.append(line)
        if prose:
            blocks.append(_paragraph(prose))
    body = "\n".join(blocks)
    return (
        '<div style="font-family:Arial,Helvetica,sans-serif;font-size:15px;line-height:1.5;'
        f'color:#1f2937;max-width:640px">\n{body}\n</div>'
    )


def _paragraph(lines: list[str]) -> str:
    shown = "<br>\n".join(html.escape(line) for line in lines)
    return f'<p style="margin:0 0 12px 0">{shown}</p>'


def has_anti_phishing(message: RenderedMessage) -> bool:
    """Whether the message carries the anti-phishing paragraph, in its text and its HTML."""
    mark = _PHISHING_MARK[message.language]
    return mark in message.text and html.escape(mark) in message.html


__all__ = [
    "ANTI_PHISHING",
    "MessageParts",
    "RenderedMessage",
    "Template",
    "choose_language",
    "has_anti_phishing",
    "load_template",
    "render_message",
    "template_ids",
]
