"""The report's blocks written as an HTML page (every value ``html.escape``d), and that page
printed as PDF by WeasyPrint, so that the PDF shows exactly what the HTML shows.

An annex's Markdown is converted by markdown-it-py (which rich brings) with only headings,
paragraphs, lists, emphasis, escapes and entities enabled: raw HTML, links and images stay
text, and every character of the text is escaped."""

from __future__ import annotations

import html

from markdown_it import MarkdownIt

from tocsin.errors import ConfigurationError
from tocsin.report.layout import Block
from tocsin.report.wording import Language

STYLE = """
:root { color-scheme: light; }
body { font-family: "DejaVu Sans", "Segoe UI", Arial, sans-serif; font-size: 10.5pt;
  color: #1d2733; margin: 2em auto; max-width: 70em; padding: 0 1.5em; }
h1 { font-size: 1.7em; border-bottom: 4px solid #b3261e; padding-bottom: .3em; }
h2 { font-size: 1.25em; color: #0b4f71; margin-top: 1.6em; border-bottom: 1px solid #c9d3dc; }
h3 { font-size: 1.05em; color: #7a2e12; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .25em 1.2em; }
dl.facts dt { font-weight: bold; color: #39485a; }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; margin: .6em 0 1em; }
th, td { border: 1px solid #c9d3dc; padding: .3em .45em; text-align: left; vertical-align: top; }
th { background: #e8eef3; }
tr:nth-child(even) td { background: #f6f8fa; }
td { overflow-wrap: break-word; }
.blank { min-height: 8em; border: 1px dashed #9aa8b6; border-radius: 4px; }
.problems li { color: #b3261e; }
section.annex { border-top: 2px solid #0b4f71; margin-top: 1em; }
@page { size: A4; margin: 15mm 12mm;
  @bottom-right { content: counter(page) " / " counter(pages); font-size: 8pt; color: #5b6b7c; } }
@media print {
  body { margin: 0; max-width: none; font-size: 9pt; }
  h2 { break-after: avoid; }
  tr { break-inside: avoid; }
  thead { display: table-header-group; }
}
"""


def write_html(blocks: list[Block], lang: Language, title: str) -> str:
    """The blocks as an HTML page titled ``title``, its style inline."""
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        f'<html lang="{lang}"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{STYLE}</style></head><body>",
    ]
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{e(block[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{e(block[1])}</p>")
        elif kind == "facts":
            items = "".join(f"<dt>{e(label)}</dt><dd>{e(value)}</dd>" for label, value in block[1])
            out.append(f'<dl class="facts">{items}</dl>')
        elif kind == "list":
            out.append(
                '<ul class="problems">' + "".join(f"<li>{e(i)}</li>" for i in block[1]) + "</ul>"
            )
        elif kind == "items":
            out.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{e(h)}</th>" for h in block[1])
            body = "".join(
                "<tr>" + "".join(f"<td>{e(cell)}</td>" for cell in row) + "</tr>"
                for row in block[2]
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "blank":
            out.append('<div class="blank"></div>')
        elif kind == "markdown":
            out.append(f'<section class="annex">{annex_html(str(block[1]))}</section>')
    out.append("</body></html>")
    return "\n".join(out)


_ANNEX_MARKDOWN = MarkdownIt("zero").enable(
    ["heading", "list", "emphasis", "escape", "entity", "newline"]
)
ANNEX_HEADING_SHIFT = 2
"""An annex's ``#`` becomes ``<h3>``: it sits under the report's ``<h2>`` naming the annex."""


def annex_html(document: str) -> str:
    """An annex's Markdown as HTML: headings, paragraphs, lists and emphasis; the rest text."""
    tokens = _ANNEX_MARKDOWN.parse(document)
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(6, int(token.tag[1:]) + ANNEX_HEADING_SHIFT)}"
    return str(_ANNEX_MARKDOWN.renderer.render(tokens, _ANNEX_MARKDOWN.options, {}))


def print_pdf(document: str) -> bytes:
    """The HTML ``document`` printed as PDF by WeasyPrint."""
    try:
        from weasyprint import HTML
    except OSError as exc:  # WeasyPrint loads Pango when imported
        raise ConfigurationError(
            f"PDF reports need the Pango library, which is missing: {exc}",
            "install it: apt-get install libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core "
            "(python3 dev.py demo does it), or use --format html and print it",
        ) from None
    pdf = HTML(string=document).write_pdf()
    assert pdf is not None
    return bytes(pdf)
