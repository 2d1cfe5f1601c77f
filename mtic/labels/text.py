"""Text helpers shared by label targets, compression and output matching: normalisation and answer phrases."""
from __future__ import annotations

import re
import unicodedata

ANSWER_PREFIX = "The intent title is"
"""The phrase that precedes the label in a Symbol Tuning answer ("The intent title is {label}")."""

SUMMARY_TEMPLATE = "You are asking about {summary}. So, the intent title is {label}"
"""The answer of the `summary` target: a summary of the conversation, then the verbose title as the label."""

_SPACES = re.compile(r"\s+")
_PREFIX = re.compile(re.escape(ANSWER_PREFIX) + r"\s*:?", re.IGNORECASE)
# Characters stripped from both ends: whitespace, quotes, brackets and sentence punctuation (several scripts).
_EDGE = " \t\r\n\"'`“”‘’«»「」『』()[]{}<>.,;:!?。，、；：！？…*_-–—"


def clean_text(text: object) -> str:
    """Unicode NFC, control characters dropped, whitespace collapsed, edge quotes/punctuation stripped.

    Case is kept; anything that is not a string gives ''.
    """
    if not isinstance(text, str):
        return ""
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else " " for ch in text)
    return _SPACES.sub(" ", text).strip(_EDGE).strip()


def normalize_text(text: object) -> str:
    """The comparison key of a label: `clean_text`, then case-folded."""
    return clean_text(text).casefold()


def strip_answer_prefix(text: object) -> str:
    """The part after the LAST "the intent title is" (case-insensitive), or the whole text when absent."""
    if not isinstance(text, str):
        return ""
    found = list(_PREFIX.finditer(text))
    return text[found[-1].end() :] if found else text


def first_line(text: str) -> str:
    """The first non-blank line of a text ('' when there is none)."""
    return next((line for line in text.splitlines() if line.strip()), "")


def parse_summary_answer(text: object) -> str:
    """Label text of a summary answer ("You are asking about X. So, the intent title is R" -> "R").

    The first line after the phrase, cleaned; without the phrase the cleaned first line of the text
    (best effort, never an exception).
    """
    return clean_text(first_line(strip_answer_prefix(text)))


def output_key(text: object) -> str:
    """The comparison key of a generated output: answer phrase dropped, first line, then `normalize_text`."""
    return parse_summary_answer(text).casefold()
