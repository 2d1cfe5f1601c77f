"""Exact top-k search over unit vectors and the recall@k of an approximate search against it.

Exact search: the similarity of every (query, row) pair is a dot product of unit vectors, computed in blocks of
query rows small enough that one block of similarities stays under `MAX_BLOCK_ENTRIES` floats (one block, i.e. one
matrix product, whenever the whole matrix fits: the results are then bit-identical to one `queries @ rows.T`).
In each row the k best are found with a partial sort (`argpartition`, linear time) and every row tied with the
k-th best joins them before the final sort, so the order is exactly that of a full sort by (similarity
descending, row index ascending): ties go to the lower index, whatever the block size.

recall@k: for each query, the share of the approximate search's top-k that are true top-k neighbours, averaged
over queries (1.0 = the approximate search found every true neighbour); a row tied with the exact k-th neighbour
counts as a true neighbour when the similarities are given (ties are frequent with short texts).
"""
from __future__ import annotations

import numpy as np

MAX_BLOCK_ENTRIES = 1 << 24
"""Most similarities held at once by `exact_top_k` (64 MiB of float32, 3x that with the partial sort's indices)."""


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); zero rows stay zero."""
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array, got shape {matrix.shape}")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def _top_k_of_block(sims: np.ndarray, k: int) -> np.ndarray:
    """Row-wise indices of the k largest values, best first, ties to the lower index."""
    n = sims.shape[1]
    if k >= n:
        return np.lexsort((np.broadcast_to(np.arange(n), sims.shape), -sims), axis=1)[:, :k]
    kth = np.take_along_axis(sims, np.argpartition(sims, n - k, axis=1)[:, n - k : n - k + 1], axis=1)
    out = np.empty((len(sims), k), dtype=np.int64)
    for row, (values, floor) in enumerate(zip(sims, kth[:, 0])):
        candidates = np.flatnonzero(values >= floor)  # the k best and every row tied with the k-th
        out[row] = candidates[np.lexsort((candidates, -values[candidates]))][:k]
    return out


def exact_top_k(queries: np.ndarray, rows: np.ndarray, k: int,
                max_block_entries: int = MAX_BLOCK_ENTRIES) -> tuple[np.ndarray, np.ndarray]:
    """(indices, similarities) of the `k` rows closest to each unit query, each (len(queries), min(k, len(rows))),
    best first; ties go to the lower row index. `queries` and `rows` must already be unit vectors (float32)."""
    k = min(k, len(rows))
    indices = np.empty((len(queries), k), dtype=np.int64)
    sims_out = np.empty((len(queries), k), dtype=np.float32)
    step = max(1, max_block_entries // max(1, len(rows)))
    for start in range(0, len(queries), step):
        sims = queries[start : start + step] @ rows.T
        top = _top_k_of_block(sims, k)
        indices[start : start + step] = top
        sims_out[start : start + step] = np.take_along_axis(sims, top, axis=1)
    return indices, sims_out


def recall_at_k(approximate: np.ndarray, exact: np.ndarray, approximate_sims: np.ndarray | None = None,
                exact_sims: np.ndarray | None = None, tolerance: float = 1e-5) -> float:
    """Mean over queries of (approximate hits that are true top-k neighbours) / k; `approximate` and `exact` are
    (n_queries, k) arrays of row ids (negative ids = no hit).

    Without similarities a hit is a true neighbour when its id is among the exact top-k. With them
    (`approximate_sims`: the exact similarity of each approximate hit, `exact_sims`: the exact top-k
    similarities, best first) a hit is a true neighbour when its similarity reaches the exact k-th one (minus
    `tolerance`): a row tied with the k-th neighbour is as near as the one exact search kept, not a miss."""
    approximate, exact = np.asarray(approximate), np.asarray(exact)
    if approximate.shape != exact.shape or exact.ndim != 2:
        raise ValueError(f"recall@k needs two (n_queries, k) id arrays of one shape, got {approximate.shape} "
                         f"and {exact.shape}")
    if exact.size == 0:
        raise ValueError("recall@k needs at least one query and k >= 1")
    if (approximate_sims is None) != (exact_sims is None):
        raise ValueError("recall@k with ties needs both the approximate hits' and the exact similarities")
    if approximate_sims is not None and exact_sims is not None:
        near = (np.asarray(approximate_sims) >= np.asarray(exact_sims)[:, -1:] - tolerance) & (approximate >= 0)
        return float(near.sum(axis=1).mean() / exact.shape[1])
    found = [len(set(a[a >= 0].tolist()) & set(e.tolist())) for a, e in zip(approximate, exact)]
    return float(np.mean(found) / exact.shape[1])
