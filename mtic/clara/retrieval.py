"""LARA retrieval: an embedding index over the labelled single-turn queries, searched with every query of a session.

Each query of a session retrieves its top-k most similar labelled queries (cosine similarity of unit vectors);
the hits are merged over the session (a demo keeps its best similarity, history queries optionally weighted
down), de-duplicated and capped. Optionally a candidate proposer (the fine-tuned single-turn HTC) names likely
intents for the last query; the demos of those intents closest to the last query are always included. The
similarity of every demo is kept: self-consistency orders the demos by it.

The index searches exactly (brute force, mtic/clara/vector_search.py) up to `ann_above` demos; above it, and
only when an approximate index is configured (`ann`, mtic/clara/ann.py), the demos of a session come from an
HNSW graph whose recall@k against exact search is measured and logged when it is built. Exact results do not
depend on the threshold: below it they are those of a full sort by (similarity, index).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from mtic.clara.vector_search import exact_top_k, unit_rows
from mtic.data.schema import SingleTurnQuery

Embed = Callable[[Sequence[str], str], np.ndarray]
"""`embed(texts, kind)` -> (len(texts), dim) array; kind is 'query' or 'passage' (e5 prefixes)."""
CandidateFn = Callable[[Sequence[str]], Sequence[Sequence[str]]]
"""`candidates(last_queries)` -> for each query, intent ids ranked most likely first (e.g. the single-turn HTC)."""

QUERY_KIND = "query"
EMBED_KINDS = ("query", "passage")


@dataclass(frozen=True)
class Demo:
    """A retrieved labelled single-turn query and its similarity to the session (higher = closer)."""

    text: str
    intent: str
    score: float


class ApproximateSearch(Protocol):
    """An approximate index's settings (`pipeline.retrieval.ann`): `build(unit vectors, k)` -> an index whose
    `search(unit queries, k)` returns (indices, similarities) like `exact_top_k`, with its measured `recall`."""

    def build(self, vectors: np.ndarray, k: int) -> Any: ...


def unique_demos(texts: Iterable[str], intents: Iterable[str]) -> list[tuple[str, str]]:
    """The (text, intent) pairs the index holds: each once, first occurrence order."""
    return list(dict.fromkeys(zip(texts, intents)))


def uses_ann(n_demos: int, ann_above: int | None, ann: Any) -> bool:
    """Whether an index of `n_demos` demos searches approximately: an `ann` is configured and n_demos > ann_above."""
    return ann is not None and ann_above is not None and n_demos > int(ann_above)


class DemoIndex:
    """Unit vectors of labelled queries in one matrix; cosine similarity is a dot product.

    Duplicate (text, intent) pairs are indexed once. `doc_kind` is the embedding kind of the indexed queries:
    'query' for symmetric query-to-query similarity (the e5 recommendation), 'passage' for asymmetric search.
    With `ann` and more than `ann_above` demos, `search` goes to the approximate index built by `ann`
    (its recall@`recall_k` is measured at build: `self.approximate.recall`); otherwise it is exact.
    """

    def __init__(self, texts: Sequence[str], intents: Sequence[str], embed: Embed, doc_kind: str = QUERY_KIND,
                 ann_above: int | None = None, ann: ApproximateSearch | None = None, recall_k: int = 5) -> None:
        if len(texts) != len(intents):
            raise ValueError("texts and intents must have the same length")
        if doc_kind not in EMBED_KINDS:
            raise ValueError(f"doc_kind must be one of {EMBED_KINDS}, got {doc_kind!r}")
        pairs = unique_demos(texts, intents)
        if not pairs:
            raise ValueError("the demo index needs at least one labelled query")
        self.texts = [t for t, _ in pairs]
        self.intents = [i for _, i in pairs]
        self.vectors = unit_rows(embed(self.texts, doc_kind))
        if len(self.vectors) != len(self.texts):
            raise ValueError("embed returned a different number of vectors than texts")
        self.approximate = ann.build(self.vectors, recall_k) if uses_ann(len(pairs), ann_above, ann) else None
        by_intent: dict[str, list[int]] = {}
        for k, intent in enumerate(self.intents):
            by_intent.setdefault(intent, []).append(k)
        self.by_intent = {i: np.asarray(rows) for i, rows in by_intent.items()}

    @classmethod
    def from_queries(cls, queries: Iterable[SingleTurnQuery], embed: Embed, doc_kind: str = QUERY_KIND,
                     **search: Any) -> DemoIndex:
        """The index of `queries`; `search`: `ann_above`, `ann`, `recall_k` (see the class)."""
        queries = list(queries)
        return cls([q.text for q in queries], [q.intent for q in queries], embed, doc_kind, **search)

    def __len__(self) -> int:
        return len(self.texts)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices, similarities), each (len(vectors), min(k, len)), best first; exact search: ties go to the
        lower index."""
        if self.approximate is not None:
            return self.approximate.search(unit_rows(vectors), k)
        return exact_top_k(unit_rows(vectors), self.vectors, k)

    def best_of_intent(self, vector: np.ndarray, intent: str, n: int) -> list[tuple[int, float]]:
        """The `n` queries of `intent` closest to `vector` as (index, similarity), best first."""
        rows = self.by_intent.get(intent)
        if rows is None or n <= 0:
            return []
        sims = self.vectors[rows] @ unit_rows(vector[None, :])[0]
        order = np.lexsort((rows, -sims))[:n]
        return [(int(rows[j]), float(sims[j])) for j in order]

    def demo(self, index: int, score: float) -> Demo:
        return Demo(self.texts[index], self.intents[index], float(score))


@dataclass
class Retriever:
    """Demos for whole sessions (LARA): top-`k` per query, merged by best weighted similarity, capped.

    `history_weight` scales the similarities found by history queries (1.0 = all queries count alike).
    With `candidates`, the `demos_per_candidate` closest demos of each of the `n_candidates` proposed intents
    are included first (their retrieval similarity is kept), the remaining slots go to the best merged hits.
    Returned demos are sorted by similarity, best first.
    """

    index: DemoIndex
    embed: Embed
    k: int = 5
    max_demos: int = 10
    history_weight: float = 1.0
    candidates: CandidateFn | None = None
    n_candidates: int = 3
    demos_per_candidate: int = 2
    query_kind: str = QUERY_KIND

    def __post_init__(self) -> None:
        if self.k < 1 or self.max_demos < 1:
            raise ValueError("k and max_demos must be at least 1")
        if self.query_kind not in EMBED_KINDS:
            raise ValueError(f"query_kind must be one of {EMBED_KINDS}, got {self.query_kind!r}")

    def retrieve(self, sessions: Sequence[Sequence[str]]) -> list[list[Demo]]:
        """Demos for each session (a session = its queries, oldest first); all queries are embedded in one call."""
        if any(not queries for queries in sessions):
            raise ValueError("every session needs at least one query")
        flat = [q for queries in sessions for q in queries]
        if not flat:
            return []
        vectors = unit_rows(self.embed(flat, self.query_kind))
        hits, sims = self.index.search(vectors, self.k)
        proposals = self._proposals([queries[-1] for queries in sessions])
        out, start = [], 0
        for s, queries in enumerate(sessions):
            stop = start + len(queries)
            best: dict[int, float] = {}
            for row in range(start, stop):
                weight = 1.0 if row == stop - 1 else self.history_weight
                for idx, sim in zip(hits[row].tolist(), sims[row].tolist()):
                    best[idx] = max(best.get(idx, -np.inf), weight * sim)
            forced: dict[int, float] = {}
            for intent in proposals[s]:
                for idx, sim in self.index.best_of_intent(vectors[stop - 1], intent, self.demos_per_candidate):
                    forced[idx] = max(sim, best.get(idx, -np.inf))
            out.append(self._select(best, forced))
            start = stop
        return out

    def _proposals(self, last_queries: list[str]) -> list[list[str]]:
        if self.candidates is None:
            return [[] for _ in last_queries]
        ranked = self.candidates(last_queries)
        if len(ranked) != len(last_queries):
            raise ValueError("the candidate proposer must return one list per query")
        return [[i for i in ids if i in self.index.by_intent][: self.n_candidates] for ids in ranked]

    def _select(self, best: dict[int, float], forced: dict[int, float]) -> list[Demo]:
        ranked = lambda pool: sorted(pool.items(), key=lambda kv: (-kv[1], kv[0]))
        chosen = dict(ranked(forced)[: self.max_demos])
        for idx, score in ranked(best):
            if len(chosen) >= self.max_demos:
                break
            chosen.setdefault(idx, score)
        return [self.index.demo(idx, score) for idx, score in ranked(chosen)]


def build_retriever(bundle: Any, taxonomy: Any, embedder: Any, cache_dir: str | None = None, doc_kind: str = "query",
                    k: int = 5, max_demos: int = 10, history_weight: float = 1.0,
                    single_turn_split: str | None = "train", candidates: Mapping[str, Any] | None = None,
                    ann_above: int | None = None, ann: ApproximateSearch | Mapping[str, Any] | None = None,
                    ) -> Retriever:
    """`pipeline.retrieval`'s `_target_`: the demo index over the labelled single-turn queries of `bundle`
    (`single_turn_split`) and the session retriever. `embedder` is the loaded sentence embedder (the config names
    it; the pipeline loads it once for retrieval and the answer matcher). `candidates`: M_c's settings, used when
    they name a `checkpoint` (the single-turn HTC that proposes intents). Above `ann_above` demos the index is the
    approximate one `ann` builds (a config node with its `_target_` is instantiated here); null = always exact."""
    queries = bundle.require_single_turn(single_turn_split or None)
    if isinstance(ann, Mapping):
        from hydra.utils import instantiate

        ann = instantiate(ann)
    index = DemoIndex.from_queries(queries, embedder.encode, doc_kind=doc_kind, ann_above=ann_above, ann=ann,
                                   recall_k=int(k))
    candidates = dict(candidates or {})
    proposer = None
    if candidates.get("checkpoint"):
        from mtic.clara.candidates import htc_candidates

        proposer = htc_candidates(candidates["checkpoint"], taxonomy, cache_dir, top_k=int(candidates.get("n", 3)))
    return Retriever(index, embedder.encode, k=int(k), max_demos=int(max_demos), history_weight=float(history_weight),
                     candidates=proposer, n_candidates=int(candidates.get("n", 3)),
                     demos_per_candidate=int(candidates.get("demos_each", 2)))
