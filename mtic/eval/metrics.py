"""Intent metrics on torchmetrics: last-query accuracy, per-level accuracy, macro F1, unmatched rate."""
from __future__ import annotations

import torch
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from mtic.data.taxonomy import Taxonomy

UNMATCHED = -1


class IntentMetrics(torch.nn.Module):
    """Accumulates predictions (intent ids, None = no intent) against gold intent ids.

    `compute(prefix)` returns `{prefix}/acc`, `{prefix}/acc_level{l}` (l = 1 root ... depth), `{prefix}/macro_f1`
    and, when match methods were given, `{prefix}/unmatched` (share of outputs that were not an exact label).
    It is fed the predictions of every test example (under DDP gathered from all ranks and de-duplicated first,
    mtic/eval/distributed.py), so torchmetrics' own cross-rank sum at compute time is off: it would count every
    example once per rank (and the DistributedSampler's padding repeats).
    """

    def __init__(self, taxonomy: Taxonomy) -> None:
        super().__init__()
        self.taxonomy = taxonomy
        n = len(taxonomy)
        local = {"sync_on_compute": False}  # complete rows already (see the class docstring)
        self.accuracy = MulticlassAccuracy(num_classes=n + 1, average="micro", ignore_index=None, **local)
        self.macro_f1 = MulticlassF1Score(num_classes=n + 1, average="macro", **local)
        self.levels = torch.nn.ModuleList(
            [MulticlassAccuracy(num_classes=k + 1, average="micro", **local) for k in taxonomy.num_classes]
        )
        self.unmatched = MeanMetric(**local)
        self._saw_unmatched = False

    def _index(self, intent_id: str | None) -> int:
        return self.taxonomy.index(intent_id) if intent_id is not None and intent_id in self.taxonomy else len(self.taxonomy)

    def update(self, predictions: list[str | None], targets: list[str], exact: list[bool] | None = None) -> None:
        pred = torch.tensor([self._index(p) for p in predictions])
        gold = torch.tensor([self._index(t) for t in targets])
        self.accuracy.update(pred, gold)
        self.macro_f1.update(pred, gold)
        for level, metric in enumerate(self.levels):
            none = self.taxonomy.num_classes[level]
            lp = [self.taxonomy.level_ids(p)[level] if p in self.taxonomy else none for p in predictions]
            lg = [self.taxonomy.level_ids(t)[level] for t in targets]
            metric.update(torch.tensor(lp), torch.tensor(lg))
        if exact is not None:
            self._saw_unmatched = True
            self.unmatched.update(torch.tensor([0.0 if e else 1.0 for e in exact]))

    def compute(self, prefix: str) -> dict[str, float]:
        out = {f"{prefix}/acc": float(self.accuracy.compute()), f"{prefix}/macro_f1": float(self._macro_f1())}
        for level, metric in enumerate(self.levels, start=1):
            out[f"{prefix}/acc_level{level}"] = float(metric.compute())
        if self._saw_unmatched:
            out[f"{prefix}/unmatched"] = float(self.unmatched.compute())
        return out

    def _macro_f1(self) -> torch.Tensor:
        """Macro F1 over the gold intents seen (the 'no intent' bucket is not a class)."""
        state = self.macro_f1
        tp, fp, fn = state.tp.float(), state.fp.float(), state.fn.float()
        f1 = torch.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn).clamp(min=1), torch.zeros_like(tp))
        present = (tp + fn)[:-1] > 0
        return f1[:-1][present].mean() if present.any() else torch.tensor(0.0)

    def reset(self) -> None:
        for metric in [self.accuracy, self.macro_f1, self.unmatched, *self.levels]:
            metric.reset()
        self._saw_unmatched = False


