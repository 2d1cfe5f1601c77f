"""A guess of a bundle's languages from its texts, for an import without `--languages`.

Each text counts for the script most of its letters are in (`mtic.data.languages.script_of`). A script only one
language is written in gives that language (Han zh, kana ja, Hangul ko, Thai th, ...). Latin-script texts are
Vietnamese when they hold Vietnamese letters (ơ, ư, đ, ạ, ...), and English as a group when English function
words (the, my, is, where, ...) make up at least `ENGLISH_MIN_SHARE` of their words. Anything else (Indonesian,
Portuguese, Cyrillic, Arabic ...) cannot be told apart by script: at `MIN_SHARE` of the texts or more the import
stops and asks for `--languages`. Languages under `MIN_SHARE` of the texts are left out.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from mtic.data.errors import BundleError
from mtic.data.languages import LATIN, OTHER, SCRIPT_OF_LANGUAGE, script_of

MIN_SHARE = 0.1
ENGLISH_MIN_SHARE = 0.08
ENGLISH_WORDS = frozenset((
    "the", "is", "are", "my", "to", "you", "your", "and", "of", "it", "not", "where", "what", "how", "can", "i",
    "please", "pls", "with", "for", "this", "that", "have", "has", "was", "why", "when", "still", "did", "does",
    "don't", "didn't",
))
VIETNAMESE_LETTERS = frozenset("ăâđêôơưĂÂĐÊÔƠƯ" + "".join(chr(c) for c in range(0x1EA0, 0x1EFA)))
UNKNOWN_LATIN = "Latin script, not English or Vietnamese"


@dataclass(frozen=True)
class LanguageGuess:
    """The guessed language codes (most texts first) and how they were found, for the import's output."""

    languages: tuple[str, ...]
    reason: str


def _language_of_script() -> dict[str, str]:
    """script -> language for the scripts that exactly one language of SCRIPT_OF_LANGUAGE is written in."""
    users: dict[str, list[str]] = {}
    for language, script in SCRIPT_OF_LANGUAGE.items():
        users.setdefault(script, []).append(language)
    return {script: languages[0] for script, languages in users.items() if len(languages) == 1}


def _english_share(texts: list[str]) -> float:
    words = re.findall(r"[\w']+", " ".join(texts).casefold())
    return sum(word in ENGLISH_WORDS for word in words) / len(words) if words else 0.0


def guess_languages(texts: Iterable[str]) -> LanguageGuess:
    """The languages of `texts` (see the module docstring); BundleError when they cannot be guessed."""
    known = _language_of_script()
    counts: Counter[str] = Counter()
    latin: list[str] = []
    for text in texts:
        script = script_of(text)
        if script == LATIN:
            if VIETNAMESE_LETTERS.intersection(text):
                counts["vi"] += 1
            else:
                latin.append(text)
        elif script != OTHER:
            counts[known.get(script, f"{script} script")] += 1
    english = _english_share(latin)
    if latin:
        counts["en" if english >= ENGLISH_MIN_SHARE else UNKNOWN_LATIN] += len(latin)
    total = sum(counts.values())
    if not total:
        raise BundleError("--languages", "the texts have no letters to guess their language from; pass --languages")
    kept = [(label, n) for label, n in counts.most_common() if n >= MIN_SHARE * total] or counts.most_common(1)
    unknown = [(label, n) for label, n in kept if " " in label]
    if unknown:
        shown = ", ".join(f"{n / total:.0%} in {label}" for label, n in unknown)
        raise BundleError("--languages", f"cannot guess the language of the texts ({shown}); pass --languages, "
                                         "e.g. --languages id,en")
    shares = ", ".join(f"{label} {n / total:.0%}" for label, n in kept)
    note = f"; English words {english:.0%} of the Latin-script words" if latin else ""
    return LanguageGuess(tuple(label for label, _ in kept), f"guessed from the texts' scripts: {shares}{note}")
