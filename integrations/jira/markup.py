"""Plain text made literal in Jira wiki markup (``jira_text``): what ``JiraTickets.comment``
sends, so that a value in a comment can never become a link, a mention, an image, a table
or a heading. REST API v2 (``/rest/api/2/...``) takes a comment body as wiki markup on both
Cloud and Data Center.
"""

from __future__ import annotations

import re

# Markup Jira's renderer opens wherever these stand; a backslash before each makes it text
# (they are among the characters atlassian-renderer un-escapes after a backslash).
_ALWAYS_MARKUP = frozenset("![]{}|")
# Phrase markers (*bold*, _italic_, -struck-, +under+, ^sup^, ~sub~, ??cite??, %) only
# open or close next to a non-letter: between two letters or digits they stay text.
_PHRASE_MARKUP = frozenset("*_-+^~?%@")
# Emoticons: (y) (x) (!) (on) (flag)... and :) ;) :( ;(
_EMOTICON = re.compile(r"\((?=[^\s()]{1,7}\))|(?<=[:;])[()]")
# Markup that only counts at the start of a line and has no backslash escape.
_LINE_START_MARKUP = re.compile(r"^([ \t]*)(h[1-6]\.|bq\.|#)", re.MULTILINE)
_ZERO_WIDTH_SPACE = "\u200b"


def jira_text(value: object) -> str:
    r"""``value`` as literal text in Jira wiki markup (REST API v2 comments and fields).

    Markup characters get a backslash (``[click|http://evil]`` shows as typed,
    ``{noformat}`` closes nothing, ``[~accountid]`` mentions nobody, ``!x.png!`` shows
    no image, ``|`` makes no table), phrase markers too unless they stand inside a word
    (``plain-jira`` stays as it is); a backslash in the value is followed by a zero-width
    space, so it can neither escape Tocsin's next backslash nor make a ``\`` line
    break; ``h1.``, ``bq.`` and ``#`` at a line start get the same invisible space before
    them so they stay text. Line breaks are kept. A bare ``https://`` address is still
    made clickable by Jira, showing its own address.
    """
    text = str(value).replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\\", "\\" + _ZERO_WIDTH_SPACE)
    emoticon = {match.start() for match in _EMOTICON.finditer(text)}
    out: list[str] = []
    for index, char in enumerate(text):
        if char in _ALWAYS_MARKUP or index in emoticon:
            out.append("\\")
        elif char in _PHRASE_MARKUP:
            before = text[index - 1] if index else " "
            after = text[index + 1] if index + 1 < len(text) else " "
            if not (before.isalnum() and after.isalnum()):
                out.append("\\")
        out.append(char)
    return _LINE_START_MARKUP.sub(
        lambda m: m.group(1) + _ZERO_WIDTH_SPACE + m.group(2), "".join(out)
    )
