"""Strings from outside made safe to print: on a terminal and in Markdown.

Model ids, `model_type`, dtype and file names, a server's error message, a GPU file's names: any
of them may hold an escape sequence (which a terminal obeys: colours, a moved cursor, a retitled
window, a hyperlink), a carriage return that overwrites the line, a bidirectional override that
shows text in another order than it is (CVE-2021-42574, "Trojan Source"), or Markdown that turns
a pull-request comment into an image, a link or a mention. JSON needs none of this: `json.dumps`
escapes control characters and keeps the strings exact.
"""

from __future__ import annotations

import re

# Bidirectional controls (Unicode UAX #9: embeddings, overrides, isolates, marks) and the line and
# paragraph separators, which some terminals and editors break lines at.
_BIDI_AND_SEPARATORS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029"
_UNSAFE = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f{_BIDI_AND_SEPARATORS}]")


def _escape(match: re.Match[str]) -> str:
    c = match.group()
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def terminal_safe(text: str) -> str:
    """One line with every control character, bidi control and line separator shown escaped
    (as Python writes them), so what is printed is what the string holds.

    >>> terminal_safe("qwen2\\x1b[2J\\r\\nok \\u202egpj.exe")
    'qwen2\\\\x1b[2J\\\\x0d\\\\x0aok \\\\u202egpj.exe'
    >>> terminal_safe("Qwen/Qwen1.5-110B: 207.14 GiB")
    'Qwen/Qwen1.5-110B: 207.14 GiB'
    """
    return _UNSAFE.sub(_escape, text) if _UNSAFE.search(text) else text


def terminal_lines(text: str) -> str:
    """A multi-line text (a rendered table) with each line made terminal_safe; its newlines stay."""
    return "\n".join(terminal_safe(line) for line in text.split("\n"))


# The ASCII punctuation that means something inside a line of GitHub Markdown: a backslash before
# any ASCII punctuation makes it a literal (CommonMark 0.31, section 2.4), and `\|` is a literal pipe
# in a GitHub table cell (GFM spec, section 4.10). `<` and `&` would start HTML and entities, `[`
# and `]` links and images, `` ` `` code, `*`, `_` and `~` emphasis. (`#`, `>`, `-` and `+` mean
# something only at the start of a line, which a table cell or a rendered line never is.)
_MARKDOWN = re.compile(r"([\\`*_\[\]<|~&])")


def markdown_text(text: str) -> str:
    """Text from outside as Markdown that renders as exactly that text, on one line.

    >>> print(markdown_text("a|b <img src=x> ![x](http://e) `c` **d**"))
    a\\|b \\<img src=x> !\\[x\\](http://e) \\`c\\` \\*\\*d\\*\\*
    """
    return _MARKDOWN.sub(r"\\\1", terminal_safe(text))
