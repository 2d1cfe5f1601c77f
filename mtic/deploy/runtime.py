"""Model runtimes behind `IntentClassifier`: ONNX Runtime (no torch) and a PyTorch HTC (checkpoints, references).

Both turn texts (already made by the view) into per-level probability arrays with the SAME encoder code the HTC
trains with (`ClassificationEncoder`: text prefix, left truncation). Texts are run in batches of similar length so
padding stays small; rows come back in input order.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtic.data.taxonomy import Taxonomy
from mtic.deploy.artifact import INPUT_NAMES, Artifact
from mtic.deploy.tokenizer import FastTokenizer
from mtic.inputs.encoding import ClassificationEncoder
from mtic.inputs.views import ViewExample
from mtic.models.checkpoint_io import ArtifactError, existing_file, one_line

DEFAULT_BATCH = 32


def ort_session(path: str | Path, threads: int | None = None) -> Any:
    """A CPU InferenceSession; `threads` = intra-op threads (None: onnxruntime's default, one per core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = int(threads)
    options.log_severity_level = 3  # warnings about unused initialisers etc. are noise for users
    existing_file(path, "ONNX model")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own (pybind) classes for damaged files
        raise ArtifactError(path, f"not a loadable ONNX model ({one_line(err)}); the export is damaged: export "
                                  "again (mtic export --force)") from None


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) int64 arrays, right-padded to the longest row."""
    width = max(1, max(len(r) for r in rows))
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for k, row in enumerate(rows):
        ids[k, : len(row)] = row
        mask[k, : len(row)] = 1
    return ids, mask


def batched(rows: Sequence[Sequence[int]], run: Callable[[list[int]], list[np.ndarray]], widths: Sequence[int],
            batch_size: int = DEFAULT_BATCH) -> list[np.ndarray]:
    """Run `run(indices)` over length-sorted chunks and scatter its (rows, width_l) outputs back into order."""
    out = [np.zeros((len(rows), w), dtype=np.float32) for w in widths]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        for level, values in enumerate(run(chunk)):
            out[level][chunk] = values
    return out


class OnnxClassifier:
    """Texts -> per-level probabilities with an exported HTC (onnxruntime + tokenizers only)."""

    def __init__(self, artifact: Artifact, precision: str = "auto", threads: int | None = None) -> None:
        spec = artifact.spec
        path, self.precision = artifact.model_path(precision)
        self.session = ort_session(path, threads)
        self.encoder = ClassificationEncoder(FastTokenizer(artifact.root / spec.tokenizer), artifact.taxonomy,
                                             spec.max_length, spec.text_prefix)
        self.pad_token_id = spec.pad_token_id
        self.widths = [len(names) for names in spec.levels]

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encoder(ViewExample(session_id="", target=None, text=t))["input_ids"] for t in texts]

    def level_probabilities(self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH) -> list[np.ndarray]:
        rows = self.encode(texts)

        def run(chunk: list[int]) -> list[np.ndarray]:
            ids, mask = pad_rows([rows[i] for i in chunk], self.pad_token_id)
            return self.session.run(None, {INPUT_NAMES[0]: ids, INPUT_NAMES[1]: mask})

        return batched(rows, run, self.widths, batch_size)


class OnnxSelector:
    """The selective-concat selector on ONNX: `selector(history, last) -> index | None` (same rule as
    mtic.models.selector.Selector: the best history query if its probability reaches the threshold, ties to the
    most recent)."""

    def __init__(self, artifact: Artifact, precision: str = "auto", threads: int | None = None) -> None:
        spec = artifact.spec.selector
        if spec is None:
            raise ValueError(f"{artifact.root}: this export has no selector")
        path, self.precision = artifact.model_path(precision, selector=True)
        self.session = ort_session(path, threads)
        self.tokenizer = FastTokenizer(artifact.root / spec.tokenizer)
        self.spec = spec

    def probabilities(self, history: Sequence[str], last: str) -> list[float]:
        if not history:
            return []
        rows = self.tokenizer([self.spec.text_prefix + h for h in history], [last] * len(history), truncation=True,
                              max_length=self.spec.max_length)["input_ids"]
        ids, mask = pad_rows(rows, self.spec.pad_token_id)
        return self.session.run(None, {INPUT_NAMES[0]: ids, INPUT_NAMES[1]: mask})[0].reshape(-1).tolist()

    def __call__(self, history: Sequence[str], last: str) -> int | None:
        probs = self.probabilities(history, last)
        best = max(reversed(range(len(probs))), key=lambda k: probs[k]) if probs else None
        return best if best is not None and probs[best] >= self.spec.threshold else None


class TorchClassifier:
    """Texts -> per-level probabilities with a PyTorch HTC (a checkpoint, or the reference at export time)."""

    precision = "fp32-eager"

    def __init__(self, model: Any, threads: int | None = None) -> None:
        import torch

        from mtic.inputs.encoding import PadCollator

        if threads:
            torch.set_num_threads(int(threads))
        self.model = model.eval()
        self.encoder = model.build_encoder()
        self.collate = PadCollator(model.pad_token_id)
        self.widths = list(model.taxonomy.num_classes)

    @property
    def taxonomy(self) -> Taxonomy:
        return self.model.taxonomy

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encoder(ViewExample(session_id="", target=None, text=t))["input_ids"] for t in texts]

    def level_probabilities(self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH) -> list[np.ndarray]:
        import torch

        rows = self.encode(texts)
        device = next(self.model.parameters()).device

        @torch.no_grad()
        def run(chunk: list[int]) -> list[np.ndarray]:
            batch = self.collate([{"input_ids": rows[i], "attention_mask": [1] * len(rows[i])} for i in chunk])
            logits = self.model(batch["input_ids"].to(device), batch["attention_mask"].to(device))
            return [x.float().softmax(-1).cpu().numpy() for x in logits]

        return batched(rows, run, self.widths, batch_size)
