"""`IntentClassifier`: the intent of the last query of a session, from an ONNX export or a Lightning checkpoint.

```python
from mtic import IntentClassifier
clf = IntentClassifier.load("exports/sg")            # or a .ckpt (needs torch; the view comes from its run)
clf.predict(["where is my parcel", "still nothing"]).intent
clf.predict_batch([["cancel my order"], ["hi", "refund pls"]])
```
On an export nothing imports torch (onnxruntime + tokenizers + numpy), so a service stays small.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mtic.data.schema import Session, Turn
from mtic.data.taxonomy import Taxonomy
from mtic.deploy.artifact import ExportError, ViewSpec, is_export_dir, read_artifact
from mtic.inputs.views import View

log = logging.getLogger("mtic")
TINY = 1e-30


class Runtime(Protocol):
    precision: str

    def level_probabilities(self, texts: Sequence[str], batch_size: int = ...) -> list[np.ndarray]: ...


@dataclass
class Prediction:
    """The predicted intent of a session's last query.

    `levels`: the predicted class of every level of the category path with its probability (root first);
    `top_k`: the most probable intents (last level) with their probabilities.
    """

    intent: str
    title: str
    path: list[str]
    probability: float
    levels: list[dict[str, Any]]
    top_k: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def decode(level_probs: Sequence[np.ndarray], leaf_paths: np.ndarray, decoding: str) -> np.ndarray:
    """Leaf class per row: argmax of the last level, or (`consistent`) the root-to-leaf path with the highest
    summed log-probability (as HTC.decode)."""
    if decoding == "consistent":
        scores = sum(np.log(np.maximum(p[:, leaf_paths[:, level]], TINY)) for level, p in enumerate(level_probs))
        return np.asarray(scores).argmax(-1)
    return level_probs[-1].argmax(-1)


def as_session(queries: Sequence[str], index: int = 0) -> Session:
    """A session from its queries, oldest first (the last one is classified)."""
    if isinstance(queries, str):
        raise TypeError("a session is a list of queries, not a single string: predict(['where is my parcel'])")
    if not queries:
        raise ValueError("a session needs at least one query")
    return Session(id=str(index), turns=tuple(Turn(str(q)) for q in queries))


class IntentClassifier:
    """Sessions -> `Prediction`s with a runtime (ONNX or PyTorch), the trained view and the taxonomy."""

    def __init__(self, runtime: Runtime, view: View, taxonomy: Taxonomy, leaf_intents: Sequence[str],
                 leaf_paths: Sequence[Sequence[int]], decoding: str = "leaf", card: dict[str, Any] | None = None,
                 top_k: int = 5, batch_size: int = 32) -> None:
        self.runtime, self.view, self.taxonomy = runtime, view, taxonomy
        self.leaf_intents = list(leaf_intents)
        self.leaf_paths = np.asarray(leaf_paths, dtype=np.int64)
        self.decoding = decoding
        self.card = dict(card or {})
        self.top_k = top_k
        self.batch_size = batch_size

    # -- loading ------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, precision: str = "auto", threads: int | None = None, top_k: int = 5,
             view: str | ViewSpec | None = None, cache_dir: str | None = None) -> IntentClassifier:
        """From an export directory (`precision` auto = int8 when exported) or an HTC checkpoint (`.ckpt`).

        A checkpoint's view is read from its run's saved config unless `view` (e.g. "naive_concat") is given.
        """
        path = Path(path)
        if not path.exists():
            from mtic.models.checkpoint_io import ArtifactError

            raise ArtifactError(path, "no such export directory or checkpoint")
        if path.is_dir() and is_export_dir(path):
            return cls.from_export(path, precision, threads, top_k)
        if path.is_file() and path.suffix == ".ckpt":
            return cls.from_checkpoint(path, view, threads, top_k, cache_dir)
        raise ExportError(f"{path}: neither an mtic export directory (deploy.json) nor a .ckpt checkpoint")

    @classmethod
    def from_export(cls, root: str | Path, precision: str = "auto", threads: int | None = None,
                    top_k: int = 5) -> IntentClassifier:
        from mtic.deploy.runtime import OnnxClassifier, OnnxSelector

        artifact = read_artifact(root)
        spec = artifact.spec
        selector = OnnxSelector(artifact, precision, threads) if spec.selector else None
        runtime = OnnxClassifier(artifact, precision, threads)
        card = dict(artifact.card, precision=runtime.precision)
        return cls(runtime, spec.view.build(selector), artifact.taxonomy, spec.leaf_intents, spec.leaf_paths,
                   spec.decoding, card, top_k)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, view: str | ViewSpec | None = None, threads: int | None = None,
                        top_k: int = 5, cache_dir: str | None = None) -> IntentClassifier:
        from mtic.deploy.run_context import load_for_serving
        from mtic.deploy.runtime import TorchClassifier
        from mtic.models.htc import leaf_paths, level_decoding_of

        context, spec, model, selector = load_for_serving(checkpoint, view, cache_dir)
        card = {"source_checkpoint": str(checkpoint), "backbone": model.hparams.backbone, "market": context.market,
                "intents": len(model.taxonomy), "view": asdict(spec), "precision": TorchClassifier.precision}
        return cls(TorchClassifier(model, threads), spec.build(selector), model.taxonomy, model.leaf_intents,
                   leaf_paths(model.taxonomy).tolist(), level_decoding_of(model.hparams), card, top_k)

    # -- prediction ---------------------------------------------------------------------------------
    def texts(self, sessions: Sequence[Sequence[str]]) -> list[str]:
        """The model input of every session (the view: last query, naive or selected concatenation)."""
        return [self.view(as_session(queries, k)).text for k, queries in enumerate(sessions)]

    def level_probabilities(self, sessions: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Per-level probability arrays (sessions, classes of the level), root level first."""
        return self.runtime.level_probabilities(self.texts(sessions), self.batch_size)

    def predict(self, queries: Sequence[str], top_k: int | None = None) -> Prediction:
        """The intent of the LAST query of one session (its queries, oldest first)."""
        return self.predict_batch([queries], top_k)[0]

    def predict_batch(self, sessions: Sequence[Sequence[str]], top_k: int | None = None) -> list[Prediction]:
        """One `Prediction` per session."""
        if isinstance(sessions, str) or (sessions and isinstance(sessions[0], str)):
            raise TypeError("predict_batch takes a list of sessions (each a list of queries); use predict(queries)")
        if not sessions:
            return []
        probs = self.level_probabilities(sessions)
        return self.format(probs, decode(probs, self.leaf_paths, self.decoding), top_k)

    def format(self, probs: Sequence[np.ndarray], leaves: np.ndarray, top_k: int | None = None) -> list[Prediction]:
        k = max(1, min(self.top_k if top_k is None else top_k, len(self.leaf_intents)))
        last = probs[-1]
        best = np.argsort(-last, axis=1, kind="stable")[:, :k]
        out = []
        for row, leaf in enumerate(leaves.tolist()):
            intent = self.taxonomy.intent(self.leaf_intents[leaf])
            levels = [{"level": level + 1, "name": self.taxonomy.levels[level][cid],
                       "path": list(self.taxonomy.class_path(level, cid)),
                       "probability": round(float(probs[level][row, cid]), 6)}
                      for level, cid in enumerate(self.leaf_paths[leaf].tolist())]
            top = [{"intent": self.leaf_intents[c], "title": self.taxonomy.intent(self.leaf_intents[c]).title,
                    "probability": round(float(last[row, c]), 6)} for c in best[row].tolist()]
            out.append(Prediction(intent.id, intent.title, list(intent.path), round(float(last[row, leaf]), 6),
                                  levels, top))
        return out

    @property
    def precision(self) -> str:
        return self.runtime.precision
