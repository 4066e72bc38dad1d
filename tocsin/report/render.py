"""Wording and layout of the report: one document, written as Markdown, HTML, PDF or JSON.

The report is first laid out as a list of blocks (headings, facts, tables, paragraphs)
in the chosen language; Markdown and HTML write the same blocks, and the PDF is the HTML
printed by WeasyPrint, so the formats never say different things. The sections on what
actions read and changed are laid out in ``action_outputs``; the words are in ``wording``,
the blocks in ``layout``, each format in ``markdown_document``, ``html_document`` (HTML and
PDF) and ``json_document``.

Every value from the trail (inputs, step titles and errors, decision comments, names) is
written as text: ``markdown_text`` escapes it for Markdown, ``html.escape`` for HTML, so
a value can add no link, image, raw HTML, heading or table cell to the report.
"""

from __future__ import annotations

from typing import Literal

from tocsin.report.build import IncidentReport
from tocsin.report.html_document import print_pdf, write_html
from tocsin.report.json_document import write_json
from tocsin.report.layout import lay_out
from tocsin.report.markdown_document import markdown_text, write_markdown
from tocsin.report.wording import LANGUAGES, Language, Words

__all__ = ["FORMATS", "LANGUAGES", "Format", "Language", "markdown_text", "render"]

Format = Literal["md", "html", "pdf", "json"]
FORMATS: tuple[Format, ...] = ("md", "html", "pdf", "json")


def render(report: IncidentReport, fmt: Format, lang: Language = "en") -> bytes:
    """The report as ``fmt`` (md, html, pdf, json) in ``lang`` (en, fr)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}")
    if lang not in LANGUAGES:
        raise ValueError(f"unknown report language {lang!r}")
    if fmt == "json":
        return write_json(report).encode("utf-8")
    words = Words(lang)
    blocks = lay_out(report, words, printed=fmt == "pdf")
    if fmt == "md":
        return write_markdown(blocks).encode("utf-8")
    document = write_html(blocks, lang, f"{words('title')} — {report.incident}")
    if fmt == "html":
        return document.encode("utf-8")
    return print_pdf(document)
