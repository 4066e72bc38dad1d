"""The report's blocks written as Markdown, every value escaped as literal text."""

from __future__ import annotations

import re

from tocsin.report.layout import Block

# Backslash-escaped wherever they stand: they open emphasis, code, links, images,
# strikethrough or a table cell. ``_`` only emphasises at a word's edge (CommonMark), so
# ``reset_account`` stays as it is.
_MARKDOWN_ESCAPED = re.compile(r"[\\`*\[\]!|~]|(?<![^\W_])_|_(?![^\W_])")
_MARKDOWN_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def markdown_text(value: object) -> str:
    """``value`` as literal text on one line of Markdown (a table cell, a list item, a heading).

    Line breaks and control characters become a space (no new block, no broken table);
    ``&``, ``<`` and ``>`` become entities (no raw HTML, no ``<https://...>`` link);
    the characters that open emphasis, code, links, images, strikethrough or a cell get a
    backslash. A renderer that links bare addresses still shows the address itself.
    """
    text = _CONTROL.sub(" ", str(value))
    text = _MARKDOWN_ESCAPED.sub(lambda m: "\\" + m.group(0), text)
    return re.sub(r"[&<>]", lambda m: _MARKDOWN_ENTITIES[m.group(0)], text)


def write_markdown(blocks: list[Block]) -> str:
    """The blocks as a Markdown document."""
    out: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h1":
            out.append(f"# {markdown_text(block[1])}\n")
        elif kind == "h2":
            out.append(f"## {markdown_text(block[1])}\n")
        elif kind == "h3":
            out.append(f"### {markdown_text(block[1])}\n")
        elif kind == "p":
            out.append(f"{markdown_text(block[1])}\n")
        elif kind == "facts":
            out.append(
                "\n".join(
                    f"- **{markdown_text(label)}**: {markdown_text(value)}"
                    for label, value in block[1]
                )
            )
            out.append("")
        elif kind in ("list", "items"):
            out.append("\n".join(f"- {markdown_text(item)}" for item in block[1]))
            out.append("")
        elif kind == "table":
            headers, rows = block[1], block[2]
            lines = [
                "| " + " | ".join(markdown_text(h) for h in headers) + " |",
                "|" + "---|" * len(headers),
            ]
            lines += ["| " + " | ".join(markdown_text(cell) for cell in row) + " |" for row in rows]
            out.append("\n".join(lines) + "\n")
        elif kind == "blank":
            out.append("\n\n")
        elif (
            kind == "markdown"
        ):  # an annex: a document its action wrote as Markdown, values escaped
            out.append(str(block[1]).rstrip() + "\n")
    return "\n".join(out)
