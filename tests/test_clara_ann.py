"""The demo index at scale: exact top-k equals a full sort whatever the block size, recall@k is what it says, the
index switches to the configured approximate index only above `ann_above`, and the cache key of exact search is
the one before the approximate index existed."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mtic.clara.ann import ApproximateIndex
from mtic.clara.retrieval import DemoIndex, build_retriever
from mtic.clara.vector_search import exact_top_k, recall_at_k, unit_rows
from mtic.pipelines.candidate_model import identity

CONF = Path(__file__).resolve().parents[1] / "conf"


def _unit(rng: np.random.Generator, n: int, dim: int = 16) -> np.ndarray:
    return unit_rows(rng.normal(size=(n, dim)))


def _full_sort(queries: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """The reference: every similarity sorted, (similarity descending, index ascending)."""
    sims = queries @ rows.T
    return np.lexsort((np.broadcast_to(np.arange(len(rows)), sims.shape), -sims), axis=1)[:, :k]


@pytest.mark.parametrize("block", [1, 37, 1 << 24])
def test_exact_top_k_is_a_full_sort_with_ties_to_the_lower_index(block: int) -> None:
    rng = np.random.default_rng(0)
    # small integers: every dot product is exact in float32 whatever the blocking, and many of them tie
    rows = rng.integers(-2, 3, size=(300, 3)).astype(np.float32)
    queries = rng.integers(-2, 3, size=(40, 3)).astype(np.float32)
    for k in (1, 7, 300, 500):
        ids, sims = exact_top_k(queries, rows, k, max_block_entries=block)
        np.testing.assert_array_equal(ids, _full_sort(queries, rows, k))
        np.testing.assert_array_equal(sims, np.take_along_axis(queries @ rows.T, ids, axis=1))


def test_recall_at_k_counts_shared_ids_per_query() -> None:
    exact = np.array([[0, 1, 2], [3, 4, 5]])
    assert recall_at_k(exact, exact) == 1.0
    assert recall_at_k(np.array([[2, 1, 9], [5, 4, 3]]), exact) == pytest.approx((2 / 3 + 1) / 2)
    assert recall_at_k(np.array([[-1, -1, 0], [7, 8, 9]]), exact) == pytest.approx(1 / 6)
    with pytest.raises(ValueError):
        recall_at_k(np.zeros((2, 2)), exact)
    # with similarities: row 7 ties with the exact 3rd neighbour of query 0 (0.5), row 8 is farther (0.4)
    exact_sims = np.array([[0.9, 0.7, 0.5], [0.8, 0.6, 0.3]])
    assert recall_at_k(np.array([[0, 1, 7], [3, 4, 5]]), exact, np.array([[0.9, 0.7, 0.5], [0.8, 0.6, 0.3]]),
                       exact_sims) == 1.0
    assert recall_at_k(np.array([[0, 1, 8], [3, 4, 5]]), exact, np.array([[0.9, 0.7, 0.4], [0.8, 0.6, 0.3]]),
                       exact_sims) == pytest.approx((2 / 3 + 1) / 2)
    with pytest.raises(ValueError):
        recall_at_k(exact, exact, approximate_sims=exact_sims)


class _ExactGraph:
    """A stand-in for the HNSW graph: exact neighbours; `lossy`: the last one of every answer is the farthest row."""

    def __init__(self, vectors: np.ndarray, lossy: bool = False) -> None:
        self.vectors, self.lossy = vectors, lossy

    def search(self, queries: np.ndarray, count: int, threads: int = 0) -> SimpleNamespace:
        ids, sims = exact_top_k(queries, self.vectors, count)
        if self.lossy:
            ids[:, -1] = np.argmin(queries @ self.vectors.T, axis=1)
        return SimpleNamespace(keys=ids.astype(np.uint64), distances=1.0 - sims, counts=np.full(len(ids), count))


def test_measured_recall_leaves_the_query_out_and_counts_misses() -> None:
    vectors = _unit(np.random.default_rng(1), 200)
    k = 4
    assert ApproximateIndex(_ExactGraph(vectors), vectors, threads=1).measure_recall(k, sample=50) == 1.0
    # every query is indexed, so it finds itself first; its k-th true neighbour is replaced by the farthest row
    lossy = ApproximateIndex(_ExactGraph(vectors, lossy=True), vectors, threads=1)
    assert lossy.measure_recall(k, sample=50) == pytest.approx((k - 1) / k)
    assert lossy.recall_queries == 50


class _CountingANN:
    """An approximate index setting that records its builds and searches exactly (no usearch needed)."""

    def __init__(self) -> None:
        self.built: list[tuple[int, int]] = []

    def build(self, vectors: np.ndarray, k: int) -> SimpleNamespace:
        self.built.append((len(vectors), k))
        return SimpleNamespace(search=lambda q, n: exact_top_k(q, vectors, n), recall=1.0)


def test_index_is_exact_up_to_the_threshold_and_approximate_above() -> None:
    rng = np.random.default_rng(2)
    table = {f"q{i}": v for i, v in enumerate(_unit(rng, 60))}
    embed = lambda texts, kind: np.stack([table[t] for t in texts])
    texts, intents = list(table), [f"i{n % 5}" for n in range(60)]
    ann = _CountingANN()
    exact = DemoIndex(texts, intents, embed, ann_above=60, ann=ann, recall_k=3)
    assert exact.approximate is None and ann.built == []
    plain = DemoIndex(texts, intents, embed)
    queries = _unit(rng, 9)
    for got, want in zip(exact.search(queries, 3), plain.search(queries, 3)):
        np.testing.assert_array_equal(got, want)
    approx = DemoIndex(texts, intents, embed, ann_above=59, ann=ann, recall_k=3)
    assert approx.approximate is not None and ann.built == [(60, 3)]
    assert DemoIndex(texts, intents, embed, ann_above=None, ann=ann).approximate is None


def test_cache_key_of_exact_search_ignores_the_approximate_settings() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+experiment=lara"])
    retrieval = OmegaConf.to_container(cfg.pipeline.retrieval, resolve=True)
    assert retrieval["ann_above"] == 200000 and retrieval["ann"]["_target_"] == "mtic.clara.ann.UsearchHNSW"
    before = {k: v for k, v in retrieval.items() if k not in ("ann_above", "ann")}
    assert identity(retrieval, n_demos=200000) == identity(before, n_demos=200000)
    above = identity(retrieval, n_demos=200001)
    assert above["ann_above"] == 200000 and above["ann"]["connectivity"] == 16
    assert "_target_" not in above["ann"]


def test_configured_usearch_index_has_high_recall() -> None:
    pytest.importorskip("usearch")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+experiment=lara", "pipeline.retrieval.ann_above=100",
                                                       "pipeline.retrieval.ann.threads=1"])
    node = OmegaConf.to_container(cfg.pipeline.retrieval, resolve=True)
    rng = np.random.default_rng(3)
    n, dim = 2000, 32
    vectors = _unit(rng, n, dim)
    texts = [f"demo {i}" for i in range(n)]
    table = dict(zip(texts, vectors))
    embedder = SimpleNamespace(encode=lambda batch, kind="query": np.stack([table[t] for t in batch]))
    bundle = SimpleNamespace(require_single_turn=lambda split: [SimpleNamespace(text=t, intent=f"i{i % 7}")
                                                                 for i, t in enumerate(texts)])
    retriever = build_retriever(bundle, None, embedder, ann_above=node["ann_above"], ann=node["ann"], k=5)
    index = retriever.index.approximate
    assert index is not None and index.recall_queries == 1000
    assert index.recall >= 0.95
    queries = _unit(rng, 200, dim)  # fresh queries: recall of the search itself, computed independently
    got, sims = retriever.index.search(queries, 5)
    want, _ = exact_top_k(queries, vectors, 5)
    assert recall_at_k(got, want) >= 0.95
    np.testing.assert_allclose(sims, np.take_along_axis(queries @ vectors.T, got, axis=1), atol=1e-4)
