"""What evaluation needs under data parallelism (trainer=ddp, ddp_cpu): each test example counted once, and the
run's files written by one process.

Under DDP every rank tests a strided share of the test set that Lightning's DistributedSampler pads with repeats
of the first examples, so that all ranks run the same number of batches: with N examples on W ranks,
W * ceil(N / W) - N predictions are duplicates, and rank-local metrics would miss the other ranks' examples.
`gather_once` all-gathers the prediction rows of every rank (torch.distributed.all_gather_object: gloo and nccl),
keeps one row per example index (`EXAMPLE_INDEX`, the example's position in its dataset, which the datamodule
adds to every row) and returns them in dataset order. Guarantee: the rows are exactly one per test example, in
the order a one-process run writes them; the same weights give the same rows, hence the same metrics.
Evaluation is deterministic (no dropout): the duplicates of an example are the same prediction (only the padding
of the batch around it differs, which masks out), so keeping the first is exact.

`is_main_process`: rank 0 of the run (the only process outside DDP). Lightning's subprocess launcher re-runs
`run.py` on every rank; only rank 0 writes results.json and predictions.jsonl (mtic/eval/results.py).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from lightning_utilities.core.rank_zero import rank_zero_only  # light: no torch import (results.py imports this)

EXAMPLE_INDEX = "example_index"
RANK_VARIABLES = ("RANK", "LOCAL_RANK")  # what launchers (Lightning's, torchrun) set in each process


def is_main_process() -> bool:
    """True on global rank 0 and in a one-process run: the rank Lightning set (its strategy, or its import from
    the launcher's environment), else the RANK / LOCAL_RANK environment variables."""
    rank = getattr(rank_zero_only, "rank", None)
    if rank is None:
        rank = next((os.environ[name] for name in RANK_VARIABLES if name in os.environ), 0)
    return int(rank) == 0


def world_size() -> int:
    """Processes of the initialised process group (1 outside DDP)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_once(rows: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every rank's rows, one per `EXAMPLE_INDEX`, sorted by it, the index field removed (the same on every
    rank). A row without the index is a programming error (KeyError): it could not be de-duplicated."""
    every = list(rows)
    if world_size() > 1:
        import torch.distributed as dist

        parts: list[list[Mapping[str, Any]] | None] = [None] * world_size()
        dist.all_gather_object(parts, every)
        every = [row for part in parts for row in part or []]
    once: dict[int, Mapping[str, Any]] = {}
    for row in every:
        once.setdefault(int(row[EXAMPLE_INDEX]), row)
    return [{k: v for k, v in once[i].items() if k != EXAMPLE_INDEX} for i in sorted(once)]
