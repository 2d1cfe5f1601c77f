"""The test epoch shared by the models that predict intents (HTC, symbol tuning): per-session prediction rows,
then metrics over every test example exactly once.

`test_step` appends one row per example to `test_outputs`, carrying the example's `EXAMPLE_INDEX` (the
datamodule puts it in every batch). At the end of the epoch the rows of every rank are gathered and
de-duplicated (`gather_once`: under DDP the DistributedSampler pads ranks with repeated examples), the model
scores them into its `IntentMetrics` (`score_test_rows`), and the metrics are logged. Guarantee: the logged
metrics and `test_outputs` (written as predictions.jsonl by rank 0) cover each test example once, in dataset
order, on one process or many; every rank holds the same values, so the `sync_dist` mean changes nothing.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mtic.eval.distributed import EXAMPLE_INDEX, gather_once
from mtic.eval.metrics import IntentMetrics


class GatheredTestMetrics:
    """Mixin for a LightningModule (list it before `pl.LightningModule`); the model supplies `metrics` and
    `score_test_rows`."""

    metrics: IntentMetrics
    test_outputs: list[dict[str, Any]]

    def on_test_epoch_start(self) -> None:
        self.metrics.reset()
        self.test_outputs = []

    def add_test_rows(self, indices: torch.Tensor | Sequence[int], rows: Sequence[dict[str, Any]]) -> None:
        """Keep a batch's prediction rows, each tagged with its example's dataset index."""
        positions = indices.tolist() if isinstance(indices, torch.Tensor) else list(indices)
        self.test_outputs.extend({**row, EXAMPLE_INDEX: int(i)} for i, row in zip(positions, rows, strict=True))

    def on_test_epoch_end(self) -> None:
        self.test_outputs = gather_once(self.test_outputs)
        self.metrics.reset()
        self.score_test_rows(self.test_outputs)
        for name, value in self.metrics.compute("test").items():
            self.log(name, value, sync_dist=True)  # type: ignore[attr-defined]  # LightningModule.log

    def score_test_rows(self, rows: list[dict[str, Any]]) -> None:
        """Update `self.metrics` with the gathered rows (each test example once)."""
        raise NotImplementedError
