"""Candidate compressed labels of a title, and model-free text helpers (token counts, a hashed embedder).

Extractive candidates are ordered subsets of 1..`max_words` content words: a leading speech-act phrase
("Request to", "Ask how to", "Report that", ...) and function words are removed first (English plus a few
words of the other market languages; pass your own `fillers` / `stopwords` for more). Titles in scripts written
without spaces (th, zh, ja, ...) give character spans instead (see `spaceless_spans`).
"""
from __future__ import annotations

import re
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Sequence
from itertools import combinations

import numpy as np

from mtic.labels.text import clean_text, normalize_text

CountTokens = Callable[[str], int]

# Leading speech-act phrases of a knowledge-base title ("Request to cancel ..."): removed only at the start.
FILLER_PREFIXES: tuple[str, ...] = (
    "request to", "ask about", "ask how to", "ask how", "ask why", "ask when", "ask where", "ask whether",
    "ask which", "ask what", "ask if", "ask", "inquire about", "enquire about", "report that", "report",
    "request", "how to", "want to", "need to",
    # a few market languages (id/ms, pt, vi, tl); extend through the `fillers` argument
    "bertanya tentang", "menanyakan", "meminta", "cara", "perguntar sobre", "pedir para", "solicitar",
    "como", "hỏi về", "yêu cầu", "paano", "magtanong tungkol sa",
)
# Function words removed anywhere in a title (lower-case), per language; extend through the `stopwords` argument.
STOPWORDS_BY_LANGUAGE: dict[str, str] = {
    "en": "a an the of to about that this these those is are was were be been being has have had for on in at by "
    "with from and or as it its my your our their his her how why when where which what whether who whom will "
    "would can could should does do did still already but if than then so into onto via per same",
    "id/ms": "yang untuk dan atau di ke dari tentang ini itu sudah telah dengan pada saya anda",
    "pt": "o a os as de do da dos das um uma para sobre que em na nas e ou com por meu minha",
    "vi": "của và hoặc về để cho là đã các những một này đó với tôi bạn",
    "tl": "ang ng sa mga na at o ko ako ay",
}
STOPWORDS: frozenset[str] = frozenset(w for words in STOPWORDS_BY_LANGUAGE.values() for w in words.split())
# Characters dropped at either end of a character span (zh particles / connectives).
CJK_STOP_CHARS = frozenset("的了是在和與与或及我你您請请嗎吗呢吧啊")
# Leading speech-act phrases of titles in spaceless scripts (th, zh).
SPACELESS_FILLER_PREFIXES: tuple[str, ...] = (
    "สอบถามเกี่ยวกับ", "สอบถาม", "ต้องการ", "แจ้งว่า", "แจ้ง", "ขอ",
    "詢問關於", "询问关于", "詢問", "询问", "請問", "请问", "查詢", "查询", "申請", "申请", "反映", "如何",
)

_SPACELESS = re.compile(r"[\u0E00-\u0EFF\u1000-\u109F\u1780-\u17FF\u3040-\u30FF\u3400-\u4DBF\u4E00-\u9FFF\uF900-\uFAFF]")
_CJK = re.compile(r"[\u3040-\u30FF\u3400-\u4DBF\u4E00-\u9FFF\uF900-\uFAFF]+")
_THAI_LEADING_VOWELS = frozenset("\u0E40\u0E41\u0E42\u0E43\u0E44")
_THAI_FOLLOWING = frozenset("\u0E30\u0E32\u0E33\u0E45")
_WORD_EDGE = "\"'`“”‘’()[]{}.,;:!?。，、；：！？…"


def is_spaceless(text: str) -> bool:
    """True when most letters of `text` belong to a script written without spaces (th, lo, km, my, zh, ja)."""
    if text.isascii():
        return False
    letters = [ch for ch in text if ch.isalpha()]
    return bool(letters) and sum(bool(_SPACELESS.match(ch)) for ch in letters) * 2 > len(letters)


def _strip_prefix(text: str, prefixes: Iterable[str]) -> str:
    """Drop leading filler phrases, longest first ("ask how to" before "ask"), repeatedly."""
    ordered = sorted((p.casefold() for p in prefixes), key=len, reverse=True)
    while True:
        low = text.casefold()
        hit = next(
            (p for p in ordered if low.startswith(p) and len(low) > len(p)
             and (not low[len(p)].isalnum() or is_spaceless(p))),
            None,
        )
        if hit is None:
            return text
        text = text[len(hit) :].strip()


def content_words(title: str, fillers: Iterable[str] = FILLER_PREFIXES, stopwords: Iterable[str] = STOPWORDS) -> list[str]:
    """Words of a space-separated title with the leading filler phrase and stop words removed (order kept)."""
    stop = {w.casefold() for w in stopwords}
    words = [w.strip(_WORD_EDGE) for w in _strip_prefix(clean_text(title), fillers).split()]
    kept = [w for w in words if w and w.casefold() not in stop]
    return kept or [w for w in words if w]  # a title made only of stop words keeps them


def _units(chunk: str) -> list[str]:
    """Split a spaceless chunk into units that can start/end a span (Thai: consonant + marks; CJK: a char)."""
    units: list[str] = []
    attach_next = False
    for ch in chunk:
        joins_previous = unicodedata.category(ch) == "Mn" or ch in _THAI_FOLLOWING
        if units and (attach_next or joins_previous):
            units[-1] += ch
        else:
            units.append(ch)
        attach_next = ch in _THAI_LEADING_VOWELS
    return units


def spaceless_spans(title: str, max_units: int = 6, min_units: int = 2) -> list[str]:
    """Candidate labels of a title in a spaceless script (fillers and edge particles dropped).

    Contiguous spans of `min_units`..`max_units` units (a CJK character; a Thai consonant with its marks),
    plus, for Han/kana, ordered pairs of non-overlapping `min_units` spans ("取消" + "訂單"): without a word
    segmenter a key word and its object are rarely adjacent. Thai spans are approximate (no dictionary), so
    prefer `english=True` or LLM candidates for Thai titles.
    """
    text = _strip_prefix(clean_text(title), SPACELESS_FILLER_PREFIXES)
    # chunks are separated by spaces, punctuation and symbols (not by combining marks, which \W would split on)
    marked = "".join(" " if unicodedata.category(ch)[0] in "ZPS" or ch.isspace() else ch for ch in text)
    units_stream: list[tuple[int, list[str]]] = []  # (position in the title, units) of every min-size span
    spans: list[str] = []
    position = 0
    for chunk in marked.split():
        units = _units(chunk)
        for size in range(min(min_units, len(units)), min(max_units, len(units)) + 1):
            for start in range(len(units) - size + 1):
                piece = units[start : start + size]
                if piece[0] in CJK_STOP_CHARS or piece[-1] in CJK_STOP_CHARS:
                    continue
                spans.append("".join(piece))
                if size == min_units and _CJK.fullmatch("".join(piece)):
                    units_stream.append((position + start, piece))
        position += len(units) + 1
    for (p, a), (q, b) in combinations(units_stream, 2):
        if q >= p + len(a) + 1:  # not overlapping and not adjacent (adjacent pairs are already spans)
            spans.append("".join(a + b))
    return spans


def _titlecase(words: Sequence[str]) -> str:
    """Capitalise the first letter of every word and keep the rest as written ("OTP" stays "OTP")."""
    return " ".join(w[:1].upper() + w[1:] for w in words)


def extractive_candidates(
    title: str,
    max_words: int = 4,
    max_content_words: int = 12,
    fillers: Iterable[str] = FILLER_PREFIXES,
    stopwords: Iterable[str] = STOPWORDS,
    titlecase: bool = True,
) -> list[str]:
    """Ordered subsets of 1..`max_words` content words (the first `max_content_words` of them), deduplicated.

    Titles in spaceless scripts give contiguous character spans instead (`spaceless_spans`).
    """
    if is_spaceless(title):
        found = spaceless_spans(title, max_units=max(2, 2 * max_words - 2))
        return list(dict.fromkeys(found)) or [clean_text(title)]
    words = content_words(title, fillers, stopwords)[:max_content_words]
    out: dict[str, None] = {}
    for size in range(1, min(max_words, len(words)) + 1):
        for combo in combinations(words, size):
            out[_titlecase(combo) if titlecase else " ".join(combo)] = None
    return list(out) or [clean_text(title)]


def clean_llm_candidate(text: object, title_tokens: int, count_tokens: CountTokens) -> str | None:
    """First line of an LLM proposal, quotes and edge punctuation removed; None when empty or not shorter."""
    if not isinstance(text, str):
        return None
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    cand = clean_text(lines[0]) if lines else ""
    if not cand or count_tokens(cand) >= max(title_tokens, 2):
        return None
    return cand


# -- embedding helpers -------------------------------------------------------------------------------------------
def _features(text: str) -> list[str]:
    """Words of a text (characters for spaceless scripts), lower-cased."""
    norm = normalize_text(text)
    return [ch for ch in norm if not ch.isspace()] if is_spaceless(norm) else norm.split()


class HashedEmbedder:
    """A model-free, deterministic embedder: each word is a unit vector of hashed features (the word itself and
    its character trigrams, so "cancel" ~ "cancelled"), weighted by the square root of its IDF over `corpus` when
    given (words shared by many titles, such as "order", count less; the root keeps them from vanishing), summed
    and L2-normalised.

    The fallback of `LabelSet` when a compressed label must be made without a model, and handy in tests.
    """

    def __init__(self, corpus: Sequence[str] = (), dim: int = 1024, n: int = 3) -> None:
        self.dim, self.n = dim, n
        docs = [set(_features(t)) for t in corpus]
        counts: dict[str, int] = {}
        for doc in docs:
            for w in doc:
                counts[w] = counts.get(w, 0) + 1
        self.weight = {w: float(np.sqrt(np.log((len(docs) + 1) / (c + 1)) + 1.0)) for w, c in counts.items()}
        self.default_weight = float(np.sqrt(np.log(len(docs) + 1) + 1.0)) if docs else 1.0
        self._cache: dict[str, np.ndarray] = {}

    def _word(self, word: str) -> np.ndarray:
        if word in self._cache:
            return self._cache[word]
        vec = np.zeros(self.dim, dtype=np.float64)
        padded = f"<{word}>"
        for feat in [f"w:{word}"] + [padded[k : k + self.n] for k in range(max(1, len(padded) - self.n + 1))]:
            vec[zlib.crc32(feat.encode("utf-8")) % self.dim] += 1.0
        vec *= self.weight.get(word, self.default_weight) / np.linalg.norm(vec)
        self._cache[word] = vec
        return vec

    def __call__(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for w in _features(text):
                out[row] += self._word(w)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)


def word_count(text: str) -> int:
    """Token counter without a tokenizer: whitespace words, or characters for spaceless scripts."""
    return len(text.replace(" ", "")) if is_spaceless(text) else len(text.split())
