"""Frozen sentence-encoder features for scikit-learn estimators (`+experiment=baseline_embedding`: `pipeline=tfidf`
with `model=embedding_lr`).

`SentenceFeatures` is a scikit-learn transformer: texts -> the mean-pooled, L2-normalised vectors of a registry
encoder (the market's: minilm-l6 / e5-small), computed once per distinct text and cached in memory for the life of
the object, so that fit and predict on overlapping texts embed each text once. Nothing is trained in the encoder:
the classifier on top (logistic regression) is the only fitted part, which is why it learns in seconds from a few
hundred queries where fine-tuning the encoder needs many epochs. `weight` scales the block (e.g. beside TF-IDF in a
`sklearn.pipeline.make_union`).
Guarantee: `transform` is a pure function of the texts (deterministic encoder in eval mode, no dropout).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


class SentenceFeatures(TransformerMixin, BaseEstimator):
    """Texts -> frozen encoder embeddings (n, dim), times `weight`."""

    def __init__(self, encoder: str = "minilm-l6", cache_dir: str | None = None, batch_size: int = 64,
                 weight: float = 1.0) -> None:
        self.encoder, self.cache_dir, self.batch_size, self.weight = encoder, cache_dir, batch_size, weight

    def _embedder(self) -> Any:
        if getattr(self, "_model", None) is None:
            from mtic.hub.registry import load_sentence_embedder

            self._model = load_sentence_embedder(self.encoder, self.cache_dir)
            self._vectors: dict[str, np.ndarray] = {}
        return self._model

    def fit(self, texts: Sequence[str], y: Any = None) -> SentenceFeatures:
        self._embedder()
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        embedder = self._embedder()
        texts = [str(t) for t in texts]
        missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if missing:
            self._vectors.update(zip(missing, embedder.encode(missing, "query", batch_size=self.batch_size)))
        return self.weight * np.stack([self._vectors[t] for t in texts]) if texts else np.zeros((0, embedder.dim))

    def __getstate__(self) -> dict[str, Any]:  # pickling (joblib) keeps the settings, not the loaded encoder
        return {k: v for k, v in self.__dict__.items() if k not in ("_model", "_vectors")}
