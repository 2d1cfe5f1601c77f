"""Approximate nearest-neighbour search for large demo indexes: an HNSW graph (usearch, `pip install 'mtic[ann]'`)
over the unit demo vectors with the inner-product metric, so its similarity is the exact index's cosine.

HNSW gives no exactness guarantee; what it costs is measured when the index is built: `recall_sample` indexed
demos (seeded sample) each query the graph and the exact index for their k+1 nearest demos, the query itself is
left out of both lists, and recall@k of the graph against exact search (a demo tied with the exact k-th
neighbour counts as found, see vector_search.recall_at_k) is logged and kept on the index
(`ApproximateIndex.recall`). A query for which the graph returns fewer than k demos is answered exactly, so every
search returns min(k, size) demos per query like the exact index.

`pipeline.retrieval.ann` (conf/pipeline/_llm_labelling.yaml) instantiates `UsearchHNSW`; the demo index builds it
only above `pipeline.retrieval.ann_above` demos (mtic/clara/retrieval.py).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from mtic.clara.vector_search import exact_top_k, recall_at_k, unit_rows

log = logging.getLogger("mtic")
INSTALL_HINT = "the approximate demo index needs usearch: pip install 'mtic[ann]' (or pipeline.retrieval.ann=null)"


def _usearch_index_class() -> Any:
    try:
        from usearch.index import Index
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return Index


def _without_self(ids: np.ndarray, sims: np.ndarray, selves: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ids (k+1 found) minus the row's own id (or minus the last when it was not found), k left."""
    keep = ids != selves[:, None]
    keep[keep.sum(axis=1) > k, -1] = False
    return ids[keep].reshape(len(ids), k), sims[keep].reshape(len(ids), k)


class ApproximateIndex:
    """A built HNSW graph over `vectors` (unit rows, kept by reference); `search` mirrors the exact index."""

    def __init__(self, graph: Any, vectors: np.ndarray, threads: int) -> None:
        self.graph, self.vectors, self.threads = graph, vectors, threads
        self.recall: float | None = None
        self.recall_queries = 0

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices, similarities), each (len(queries), min(k, len)), best first."""
        k = min(k, len(self))
        if len(queries) == 0:
            return np.empty((0, k), dtype=np.int64), np.empty((0, k), dtype=np.float32)
        matches = self.graph.search(queries, k, threads=self.threads)
        ids = np.asarray(matches.keys, dtype=np.int64).reshape(len(queries), -1)[:, :k]
        sims = (1.0 - np.asarray(matches.distances, dtype=np.float32)).reshape(len(queries), -1)[:, :k]
        short = np.flatnonzero(np.asarray(matches.counts).reshape(-1) < k)
        if len(short):  # the graph found fewer than k: answer those queries exactly
            ids[short], sims[short] = exact_top_k(queries[short], self.vectors, k)
        return ids, sims

    def measure_recall(self, k: int, sample: int, seed: int = 0) -> float:
        """recall@k against exact search, leave-one-out, on `sample` indexed vectors (see the module docstring)."""
        k = min(k, len(self) - 1)
        if k < 1 or sample < 1:
            raise ValueError("recall needs k >= 1, a sample of at least one query and an index of two vectors")
        rows = np.random.default_rng(seed).choice(len(self), size=min(sample, len(self)), replace=False)
        queries = self.vectors[rows]
        approx, _ = _without_self(*self.search(queries, k + 1), rows, k)
        exact, exact_sims = _without_self(*exact_top_k(queries, self.vectors, k + 1), rows, k)
        approx_sims = np.einsum("qd,qkd->qk", queries, self.vectors[approx])  # the hits' exact similarities
        self.recall, self.recall_queries = recall_at_k(approx, exact, approx_sims, exact_sims), len(rows)
        return self.recall


@dataclass(frozen=True)
class UsearchHNSW:
    """HNSW settings (usearch): `connectivity` = graph degree, `expansion_add` / `expansion_search` = candidate
    list sizes when adding / searching (larger = higher recall, slower); `dtype` of the stored vectors (f32, f16,
    i8; f32 vectors are referenced, not copied); `threads` 0 = all cores; `recall_sample` demos measure recall@k."""

    connectivity: int = 16
    expansion_add: int = 128
    expansion_search: int = 64
    dtype: str = "f32"
    threads: int = 0
    recall_sample: int = 1000
    seed: int = 0

    def build(self, vectors: np.ndarray, k: int) -> ApproximateIndex:
        """The graph over `vectors` (unit rows) with its recall@k measured and logged."""
        index_class = _usearch_index_class()
        vectors = unit_rows(vectors)
        graph = index_class(ndim=vectors.shape[1], metric="ip", dtype=self.dtype, connectivity=self.connectivity,
                            expansion_add=self.expansion_add, expansion_search=self.expansion_search)
        graph.add(np.arange(len(vectors), dtype=np.uint64), vectors, copy=self.dtype != "f32", threads=self.threads)
        index = ApproximateIndex(graph, vectors, self.threads)
        if len(vectors) > 1 and self.recall_sample > 0:
            recall = index.measure_recall(k, self.recall_sample, self.seed)
            log.info("demo index: HNSW (usearch) over %d demos, recall@%d against exact search %.4f "
                     "(%d sampled demos as queries, themselves left out)", len(vectors), min(k, len(vectors) - 1),
                     recall, index.recall_queries)
        return index
