"""What text the collection and the service accept, defined once.

Refused anywhere: lone UTF-16 surrogates (JSON allows ``"\\ud800"``; UTF-8 cannot store it) and control
characters other than tab, newline and carriage return. A passage must also hold at least
``MIN_CONTENT_CHARS`` content characters: anything but whitespace, control characters and the punctuation
and symbol blocks below (a passage of just "," is a hub that ranks high for unrelated queries).

The classes are plain character ranges so that the same rules can be written as JSON Schema patterns
(ECMA-262 and Python ``re`` read them alike); ``SCHEMA_PATTERNS`` is what the OpenAPI schema advertises.
"""
from __future__ import annotations

import re

MIN_CONTENT_CHARS = 2

_CONTROL = "\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f"  # Cc minus \t \n \r
# ECMA-262's \s, spelled out (Python's differs): what "blank" means.
_SPACE = "\\t\\n\\u000b\\u000c\\r \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"
_PUNCTUATION = (
    "!-/:-@\\[-`{-~\\u00a1-\\u00bf\\u00d7\\u00f7"  # ASCII and Latin-1 punctuation and symbols
    "\\u060c\\u061b\\u061f\\u066a-\\u066d\\u0964\\u0965"  # Arabic and Devanagari punctuation
    "\\u2000-\\u206f\\u20a0-\\u20cf\\u2e00-\\u2e7f\\u3000-\\u303f"  # general, currency, CJK punctuation
    "\\ufe10-\\ufe1f\\ufe30-\\ufe6f\\uff01-\\uff0f\\uff1a-\\uff20\\uff3b-\\uff40\\uff5b-\\uff65\\ufffd"
)
_ALLOWED = f"[^{_CONTROL}\\ud800-\\udfff]"
_ALLOWED_NO_SURROGATE = f"[^{_CONTROL}]"  # for schemas: JSON generators never produce lone surrogates
_NOT_BLANK = f"[^{_CONTROL}{_SPACE}]"
_CONTENT = f"[^{_CONTROL}{_SPACE}{_PUNCTUATION}]"

_FORBIDDEN_RE = re.compile(f"[{_CONTROL}\\ud800-\\udfff]")
_NOT_BLANK_RE = re.compile(_NOT_BLANK)
_CONTENT_RE = re.compile(_CONTENT)

# JSON Schema ``pattern``s (no lookarounds: fuzzers generate from them).
SCHEMA_PATTERNS = {
    "text": f"^{_ALLOWED_NO_SURROGATE}*{_NOT_BLANK}{_ALLOWED_NO_SURROGATE}*$",
    "passage": f"^{_ALLOWED_NO_SURROGATE}*" + f"{_CONTENT}{_ALLOWED_NO_SURROGATE}*" * MIN_CONTENT_CHARS + "$",
}


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored or embedded (a lone surrogate or a control character, with its
    0-based character offset), or None."""
    found = _FORBIDDEN_RE.search(text)
    if found is None:
        return None
    char, offset = found.group(), found.start()
    if "\ud800" <= char <= "\udfff":
        return f"contains a lone UTF-16 surrogate (U+{ord(char):04X}) at character offset {offset}: not valid Unicode"
    return (f"contains a control character (U+{ord(char):04X}) at character offset {offset}: only tab, newline "
            "and carriage return are allowed")


def is_blank(text: str) -> bool:
    return _NOT_BLANK_RE.search(text) is None


def check_text(text: str) -> str:
    """``text`` unchanged, or ValueError: empty or whitespace only, or ``text_problem``."""
    problem = text_problem(text)
    if problem:
        raise ValueError(problem)
    if is_blank(text):
        raise ValueError("must not be empty or whitespace")
    return text


def check_passage(text: str) -> str:
    """``check_text``, and at least ``MIN_CONTENT_CHARS`` characters that are not punctuation or symbols."""
    check_text(text)
    found = 0
    for _ in _CONTENT_RE.finditer(text):
        found += 1
        if found >= MIN_CONTENT_CHARS:
            return text
    raise ValueError(f"has no content worth indexing: at least {MIN_CONTENT_CHARS} characters that are not "
                     "whitespace, punctuation or symbols are needed")
