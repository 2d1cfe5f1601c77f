"""Map a generated output string to an intent: exact -> gestalt -> embedding -> none.

1. exact: the output's key (answer phrase "The intent title is" dropped, first line, case-folded, whitespace
   collapsed, edge quotes/punctuation stripped) equals a label's key;
2. gestalt: the label with the highest gestalt pattern-matching ratio (Ratcliff/Obershelp, `difflib`
   `SequenceMatcher.ratio`, as in the paper; or `rapidfuzz.fuzz.ratio`, an Indel-distance ratio that agrees
   on near-misses and is much faster) when it reaches `gestalt_threshold`;
3. embedding: the label whose embedding is closest (cosine) to the output's, when an `embed` callable is
   given (label embeddings are computed once, on first need) and the cosine reaches `embedding_threshold`;
4. none: no intent (empty or unusable output). Never raises on the output's content.

The paper's "hallucination" / unmatched rate is the share of outputs whose method is not "exact"
(`unmatched_rate`): the model produced something that is not one of the labels.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Literal

import numpy as np

from mtic.labels.text import normalize_text, output_key, parse_summary_answer

MatchMethod = Literal["exact", "gestalt", "embedding", "none"]
EXACT: MatchMethod = "exact"
GESTALT: MatchMethod = "gestalt"
EMBEDDING: MatchMethod = "embedding"
UNMATCHED: MatchMethod = "none"
MATCH_METHODS: tuple[MatchMethod, ...] = (EXACT, GESTALT, EMBEDDING, UNMATCHED)
GESTALT_BACKENDS: tuple[str, ...] = ("difflib", "rapidfuzz")

Embed = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class MatchResult:
    """The intent an output maps to (None when unmatched), how, and the score of that step.

    score: 1.0 for exact, the ratio in [0, 1] for gestalt, the cosine for embedding; for none the best score
    that fell short (0.0 for an empty output).
    """

    intent_id: str | None
    method: MatchMethod
    score: float

    @property
    def matched(self) -> bool:
        return self.intent_id is not None


def unmatched_rate(results: Iterable[MatchResult]) -> float:
    """Share of outputs that are not exactly a label (the paper's hallucination rate); 0.0 for no outputs."""
    methods = [r.method for r in results]
    return sum(m != EXACT for m in methods) / len(methods) if methods else 0.0


class OutputMatcher:
    """Maps generated strings to intent ids over a fixed label set ({intent id: label text}).

    Labels must be unique after normalisation (a ValueError names the clashing intents).
    """

    def __init__(
        self,
        labels: Mapping[str, str],
        embed: Embed | None = None,
        gestalt_backend: str = "difflib",
        gestalt_threshold: float = 0.6,
        embedding_threshold: float | None = None,
    ) -> None:
        if gestalt_backend not in GESTALT_BACKENDS:
            raise ValueError(f"unknown gestalt_backend {gestalt_backend!r}; choose one of {list(GESTALT_BACKENDS)}")
        if not labels:
            raise ValueError("an OutputMatcher needs at least one label")
        self.ids: list[str] = list(labels)
        self.labels: list[str] = [labels[i] for i in self.ids]
        self.keys: list[str] = [normalize_text(t) for t in self.labels]
        self._exact: dict[str, int] = {}
        for idx, key in enumerate(self.keys):
            if not key:
                raise ValueError(f"intent {self.ids[idx]} has an empty label")
            if key in self._exact:
                raise ValueError(f"intents {self.ids[self._exact[key]]} and {self.ids[idx]} share the label {key!r}")
            self._exact[key] = idx
        self.embed = embed
        self.gestalt_backend = gestalt_backend
        self.gestalt_threshold = float(gestalt_threshold)
        self.embedding_threshold = embedding_threshold
        self._label_vectors: np.ndarray | None = None
        if gestalt_backend == "rapidfuzz":
            try:
                from rapidfuzz import fuzz, process
            except ImportError as err:  # pragma: no cover - rapidfuzz is a dependency of mtic
                raise ImportError("gestalt_backend='rapidfuzz' needs the rapidfuzz package") from err
            self._fuzz, self._process = fuzz, process

    # -- steps -------------------------------------------------------------------------------------------------
    def gestalt(self, key: str) -> tuple[int | None, float]:
        """Index of the most similar label key and its ratio in [0, 1] (first label wins ties)."""
        if not key:
            return None, 0.0
        if self.gestalt_backend == "rapidfuzz":
            found = self._process.extractOne(key, self.keys, scorer=self._fuzz.ratio, processor=None)
            return (None, 0.0) if found is None else (int(found[2]), float(found[1]) / 100.0)
        matcher = SequenceMatcher(None, autojunk=False)
        matcher.set_seq2(key)  # SequenceMatcher caches its analysis of the second sequence
        best_idx, best = None, -1.0
        for idx, label_key in enumerate(self.keys):
            matcher.set_seq1(label_key)
            if matcher.real_quick_ratio() <= best or matcher.quick_ratio() <= best:
                continue
            ratio = matcher.ratio()
            if ratio > best:
                best_idx, best = idx, ratio
        return best_idx, max(best, 0.0)

    @property
    def label_vectors(self) -> np.ndarray:
        """L2-normalised label embeddings (computed once)."""
        if self.embed is None:
            raise ValueError("this matcher has no embed function")
        if self._label_vectors is None:
            self._label_vectors = _normalised(self.embed(list(self.labels)), len(self.labels))
        return self._label_vectors

    def nearest(self, texts: Sequence[str]) -> list[tuple[int, float]]:
        """(label index, cosine) of the nearest label for each text, in one embedding call."""
        if not texts:
            return []
        sims = _normalised(self.embed(list(texts)), len(texts)) @ self.label_vectors.T  # type: ignore[misc]
        best = sims.argmax(axis=1)
        return [(int(b), float(sims[k, b])) for k, b in enumerate(best)]

    # -- public ------------------------------------------------------------------------------------------------
    def match(self, text: object) -> MatchResult:
        """The intent of one generated output (see the module docstring for the steps)."""
        return self.match_many([text])[0]

    def match_many(self, texts: Iterable[object]) -> list[MatchResult]:
        """`match` for many outputs; the embedding step embeds all leftovers in one call."""
        texts = list(texts)
        out: list[MatchResult | None] = [None] * len(texts)
        leftovers: list[int] = []
        shortfall: dict[int, float] = {}
        for k, text in enumerate(texts):
            key = output_key(text)
            if not key:
                out[k] = MatchResult(None, UNMATCHED, 0.0)
                continue
            if key in self._exact:
                out[k] = MatchResult(self.ids[self._exact[key]], EXACT, 1.0)
                continue
            idx, score = self.gestalt(key)
            if idx is not None and score >= self.gestalt_threshold:
                out[k] = MatchResult(self.ids[idx], GESTALT, score)
                continue
            shortfall[k] = score
            leftovers.append(k)
        if leftovers and self.embed is not None:
            for k, (idx, cos) in zip(leftovers, self.nearest([parse_summary_answer(texts[k]) for k in leftovers])):
                if self.embedding_threshold is None or cos >= self.embedding_threshold:
                    out[k] = MatchResult(self.ids[idx], EMBEDDING, cos)
                else:
                    shortfall[k] = max(shortfall[k], cos)
        return [r if r is not None else MatchResult(None, UNMATCHED, shortfall[k]) for k, r in enumerate(out)]

    def __call__(self, text: object) -> str | None:
        """The intent id of an output, or None."""
        return self.match(text).intent_id


def output_matcher(labels: Mapping[str, str], embedder: Embed | None = None, embedding: bool = False,
                   **options: object) -> OutputMatcher:
    """The one factory of answer matchers: an `OutputMatcher` over `labels` ({intent id: label text}, e.g.
    `LabelSet.as_dict()`); with `embedding`, answers no earlier stage matched fall back to the nearest label by
    `embedder`. `options`: gestalt_backend, gestalt_threshold, embedding_threshold. It is `pipeline.matcher`'s
    `_target_` (CLARA / LARA: the retrieval embedder) and builds the symbol-tuned LM's matcher (`model.matcher`,
    `model.match_embedder`)."""
    return OutputMatcher(labels, embed=embedder if embedding else None, **options)  # type: ignore[arg-type]


def _normalised(rows: object, n: int) -> np.ndarray:
    """A float (n, dim) array with unit rows (zero rows stay zero)."""
    arr = np.asarray(rows, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(f"embed returned shape {arr.shape} for {n} texts; expected (n, dim)")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return arr / np.where(norms == 0, 1.0, norms)
