"""`pipeline=export`: a trained HTC checkpoint -> an export directory, with the run's view and bundle from `cfg`.

    python run.py +experiment=baseline_naive market=sg pipeline=export pipeline.checkpoint=<run dir>/checkpoints/best.ckpt

The export itself is `mtic.deploy.export.export_checkpoint`, as for `mtic export`; only the run context differs
(the composed config here, the checkpoint's saved config there).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mtic.config_schema import ConfigError
from mtic.deploy.artifact import VIEW_KINDS
from mtic.deploy.export import export_checkpoint, parity_summary
from mtic.deploy.run_context import context_from_config

log = logging.getLogger("mtic")


def run(
    cfg: DictConfig,
    checkpoint: str | None = None,
    out_dir: str | None = None,
    int8: bool = True,
    per_channel: bool = True,
    reduce_range: bool = True,
    opset: int = 17,
    parity_split: str = "valid",
    parity_limit: int | None = 500,
    selector: str | None = None,
) -> dict[str, Any]:
    """Export `checkpoint` with the view of `cfg.data` and parity on `cfg`'s bundle; returns the model card."""
    if not checkpoint:
        raise ConfigError("pipeline=export needs pipeline.checkpoint=<path to an HTC .ckpt>")
    if not Path(checkpoint).is_file():
        raise ConfigError(f"pipeline.checkpoint: {checkpoint} not found")
    context = context_from_config(cfg, Path(checkpoint).resolve().parent.parent)
    if context.view is None:
        raise ConfigError(f"pipeline=export needs an encoder data view (data={' | '.join(VIEW_KINDS)})")
    out = Path(out_dir or Path(cfg.paths.run_dir) / "export")
    card = export_checkpoint(checkpoint, out, cache_dir=cfg.paths.cache_dir, context=context, selector=selector,
                             int8=int8, per_channel=per_channel, reduce_range=reduce_range, opset=opset,
                             parity_limit=parity_limit, parity_split=parity_split)
    print(parity_summary(card))
    print(f"[mtic] export: {out} (serve it with: mtic serve {out})")
    return card
