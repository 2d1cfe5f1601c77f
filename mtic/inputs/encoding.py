"""Encoders turn view examples into token ids; `PadCollator` pads a batch dynamically."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mtic.data.taxonomy import Taxonomy
from mtic.inputs.views import ViewExample

if TYPE_CHECKING:  # torch is imported where tensors are made: ClassificationEncoder also serves torch-free ONNX
    import torch

IGNORE_INDEX = -100
PAD_VALUES = {"input_ids": None, "attention_mask": 0, "labels": IGNORE_INDEX}


@dataclass
class ClassificationEncoder:
    """Encoder input for the HTC and baselines: one text -> ids, plus the class id of every level.

    Truncation drops tokens from the left (the oldest history) so the last query always survives.
    `text_prefix` is prepended to every text (e5 models want "query: ").
    """

    tokenizer: Any
    taxonomy: Taxonomy
    max_length: int = 128
    text_prefix: str = ""

    def __call__(self, example: ViewExample) -> dict[str, Any]:
        self.tokenizer.truncation_side = "left"
        ids = self.tokenizer(self.text_prefix + example.text, truncation=True, max_length=self.max_length)["input_ids"]
        if example.target is not None and example.target in self.taxonomy:
            level_labels = self.taxonomy.level_ids(example.target)
        else:
            level_labels = [IGNORE_INDEX] * self.taxonomy.depth
        return {
            "input_ids": ids,
            "attention_mask": [1] * len(ids),
            "level_labels": level_labels,
            "session_id": example.session_id,
            "target": example.target,
        }


@dataclass
class PadCollator:
    """Pads `input_ids`/`attention_mask`/`labels` to the longest sequence of the batch (dynamic padding).

    Equal-length integer lists become tensors; anything else (ids, raw turns) is passed through as a list.
    """

    pad_token_id: int
    padding_side: str = "right"
    passthrough: tuple[str, ...] = field(default=("session_id", "target", "turns"))

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch: dict[str, Any] = {}
        for key in features[0]:
            values = [f[key] for f in features]
            if key in PAD_VALUES:
                pad = self.pad_token_id if PAD_VALUES[key] is None else PAD_VALUES[key]
                batch[key] = self._pad(values, pad)
            elif key not in self.passthrough and all(isinstance(v, list) for v in values):
                batch[key] = torch.tensor(values, dtype=torch.long)
            elif key not in self.passthrough and all(isinstance(v, (int, float)) for v in values):
                batch[key] = torch.tensor(values)
            else:
                batch[key] = values
        return batch

    def _pad(self, rows: list[list[int]], value: int) -> torch.Tensor:
        import torch

        width = max(len(r) for r in rows)
        out = torch.full((len(rows), width), value, dtype=torch.long)
        for k, row in enumerate(rows):
            if self.padding_side == "right":
                out[k, : len(row)] = torch.tensor(row, dtype=torch.long)
            else:
                out[k, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        return out


@dataclass
class LanguageModelEncoder:
    """Plain language-modelling input: every token of the text is a target (domain-adaptive pre-training)."""

    tokenizer: Any
    max_length: int = 256

    def __call__(self, example: ViewExample) -> dict[str, Any]:
        ids = self.tokenizer(example.text, truncation=True, max_length=self.max_length)["input_ids"]
        eos = self.tokenizer.eos_token_id
        if eos is not None and len(ids) < self.max_length:
            ids = ids + [eos]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids), "session_id": example.session_id}


Encoder = Callable[[ViewExample], dict[str, Any]]
