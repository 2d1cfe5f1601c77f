"""Parity of an export against the PyTorch model it came from: same sessions, both full pipelines."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtic.data.schema import Session
from mtic.deploy.predictor import IntentClassifier, decode
from mtic.deploy.runtime import TorchClassifier
from mtic.inputs.views import View


def _accuracy(leaves: np.ndarray, leaf_intents: Sequence[str], targets: Sequence[str | None]) -> float | None:
    rows = [(leaf_intents[int(leaf)], t) for leaf, t in zip(leaves, targets) if t is not None]
    return sum(p == t for p, t in rows) / len(rows) if rows else None


def parity_report(model: Any, torch_view: View, export_dir: str | Path, precision: str,
                  sessions: Sequence[Session]) -> dict[str, Any]:
    """PyTorch (eager, fp32) vs the export at `precision` on `sessions`.

    `argmax_agreement`: share of sessions with the same predicted intent; `max_abs_diff`: the largest absolute
    difference of any level's probabilities; `input_agreement`: share of identical model inputs (below 1 only when
    an exported selector picks differently); accuracies against the sessions' last-turn labels where labelled.
    """
    exported = IntentClassifier.from_export(export_dir, precision=precision)
    queries = [s.queries for s in sessions]
    torch_texts = [torch_view(s).text for s in sessions]
    onnx_texts = exported.texts(queries)
    reference = TorchClassifier(model).level_probabilities(torch_texts)
    candidate = exported.runtime.level_probabilities(onnx_texts)
    same_inputs = [a == b for a, b in zip(torch_texts, onnx_texts)]
    ref_leaf = decode(reference, exported.leaf_paths, exported.decoding)
    got_leaf = decode(candidate, exported.leaf_paths, exported.decoding)
    diff = max((float(np.abs(a - b).max()) for a, b in zip(reference, candidate) if a.size), default=0.0)
    targets = [s.target for s in sessions]
    acc_torch = _accuracy(ref_leaf, exported.leaf_intents, targets)
    acc_onnx = _accuracy(got_leaf, exported.leaf_intents, targets)
    n = max(1, len(sessions))
    return {
        "argmax_agreement": round(float((ref_leaf == got_leaf).sum()) / n, 6),
        "max_abs_diff": float(f"{diff:.3e}"),
        "input_agreement": round(sum(same_inputs) / n, 6),
        "accuracy_torch": None if acc_torch is None else round(acc_torch, 6),
        "accuracy_onnx": None if acc_onnx is None else round(acc_onnx, 6),
    }
