"""Languages of a bundle: the encoder they call for, and what the texts themselves are written in.

A market's languages come from its bundle (`bundle.yaml`'s `languages`, see `conf/market/_base.yaml`). The
default encoder follows them: the English MiniLM when every language is English, the multilingual e5 otherwise
(`encoder_for`). Texts are counted by Unicode script (`script_of`, no model, no dictionary): a bundle that
declares `[en]` but is written in Han characters is caught by `language_mismatch` instead of silently training
an English tokenizer on text it cannot read. Scripts tell Chinese from Thai, not English from Indonesian: both
are counted as Latin, attributed to the declared languages written in it.
"""
from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence

ENGLISH_ENCODER = "minilm-l6"
MULTILINGUAL_ENCODER = "e5-small"
LATIN = "Latin"
OTHER = "other"

# The script a language is written in, for the languages whose script is not Latin (everything else is Latin).
SCRIPT_OF_LANGUAGE = {
    "zh": "Han", "ja": "Japanese", "ko": "Hangul", "th": "Thai", "ar": "Arabic", "fa": "Arabic", "ur": "Arabic",
    "ru": "Cyrillic", "uk": "Cyrillic", "bg": "Cyrillic", "sr": "Cyrillic", "hi": "Devanagari", "mr": "Devanagari",
    "ne": "Devanagari", "he": "Hebrew", "el": "Greek", "bn": "Bengali", "ta": "Tamil", "km": "Khmer", "lo": "Lao",
    "my": "Myanmar", "ka": "Georgian", "hy": "Armenian", "am": "Ethiopic", "si": "Sinhala", "te": "Telugu",
    "gu": "Gujarati", "kn": "Kannada", "ml": "Malayalam", "pa": "Gurmukhi",
}
# Unicode character-name prefixes -> script (kana mark Japanese even beside Han characters).
_NAME_PREFIXES = (
    ("CJK", "Han"), ("HIRAGANA", "Japanese"), ("KATAKANA", "Japanese"), ("HANGUL", "Hangul"), ("THAI", "Thai"),
    ("ARABIC", "Arabic"), ("CYRILLIC", "Cyrillic"), ("DEVANAGARI", "Devanagari"), ("HEBREW", "Hebrew"),
    ("GREEK", "Greek"), ("BENGALI", "Bengali"), ("TAMIL", "Tamil"), ("KHMER", "Khmer"), ("LAO", "Lao"),
    ("MYANMAR", "Myanmar"), ("GEORGIAN", "Georgian"), ("ARMENIAN", "Armenian"), ("ETHIOPIC", "Ethiopic"),
    ("SINHALA", "Sinhala"), ("TELUGU", "Telugu"), ("GUJARATI", "Gujarati"), ("KANNADA", "Kannada"),
    ("MALAYALAM", "Malayalam"), ("GURMUKHI", "Gurmukhi"), ("LATIN", LATIN),
)


def base_language(code: str) -> str:
    """`zh-TW` / `en_US` / `EN` -> `zh` / `en` / `en`."""
    return str(code).strip().lower().replace("_", "-").split("-")[0]


def is_english(code: str) -> bool:
    return base_language(code) == "en"


def encoder_for(languages: Iterable[str]) -> str:
    """The default encoder of a market: English MiniLM when every language is English (or none is given),
    multilingual e5 as soon as one is not."""
    return ENGLISH_ENCODER if all(is_english(code) for code in languages) else MULTILINGUAL_ENCODER


def encoder_reason(languages: Sequence[str]) -> str:
    """Why `encoder_for` chose what it chose, for the run's log and `mtic data stats`."""
    others = [code for code in languages if not is_english(code)]
    if others:
        return f"multilingual: {', '.join(others)} not English"
    return "English only"


def script_of(text: str) -> str:
    """The script most of the letters of `text` are written in (Japanese when it has any kana), else `other`."""
    counts: Counter[str] = Counter()
    for char in text:
        if not char.isalpha():
            continue
        name = unicodedata.name(char, "")
        script = next((s for prefix, s in _NAME_PREFIXES if name.startswith(prefix)), OTHER)
        if script == "Japanese":
            return script
        counts[script] += 1
    return counts.most_common(1)[0][0] if counts else OTHER


def language_of_script(script: str, languages: Sequence[str]) -> str:
    """The declared languages written in `script` ("en" or "en|id" for Latin), or the script's name in
    parentheses when no declared language uses it ("(Han)")."""
    written = [code for code in languages if SCRIPT_OF_LANGUAGE.get(base_language(code), LATIN) == script]
    if not written and script == "Han":  # Japanese written in kanji only
        written = [code for code in languages if base_language(code) == "ja"]
    return "|".join(written) if written else f"({script})"


def language_counts(texts: Iterable[str], languages: Sequence[str]) -> dict[str, int]:
    """Texts per declared language (by script), most frequent first; scripts no declared language is written
    in appear as "(Script)"."""
    counts = Counter(language_of_script(script_of(text), languages) for text in texts)
    counts.pop(f"({OTHER})", None)  # digits, emoji, punctuation only: no language to speak of
    return dict(counts.most_common())


def language_mismatch(counts: dict[str, int], share: float = 0.5) -> str | None:
    """A one-line warning when at least `share` of the texts are in a script no declared language uses."""
    total = sum(counts.values())
    foreign = {label: n for label, n in counts.items() if label.startswith("(")}
    if not total or sum(foreign.values()) < share * total:
        return None
    shown = ", ".join(f"{label[1:-1]} {n / total:.0%}" for label, n in foreign.items())
    return (f"{shown} of the texts are in a script none of the declared languages is written in: "
            "set `languages` in bundle.yaml (the encoder follows them) or market.languages=[..]")
