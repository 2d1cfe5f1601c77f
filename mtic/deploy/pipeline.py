"""`pipeline=export`: a trained HTC checkpoint -> an export directory, with the run's view and bundle from `cfg`.

    python run.py +experiment=baseline_naive market=sg pipeline=export pipeline.checkpoint=<run dir>/checkpoints/best.ckpt
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mtic.config_schema import ConfigError
from mtic.deploy.artifact import ExportError
from mtic.deploy.export import export_model, parity_sessions, parity_summary
from mtic.deploy.run_context import bundle_path, context_from_config, selector_dir

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
    from mtic.models.htc import HTC

    if not checkpoint:
        raise ConfigError("pipeline=export needs pipeline.checkpoint=<path to an HTC .ckpt>")
    if not Path(checkpoint).is_file():
        raise ConfigError(f"pipeline.checkpoint: {checkpoint} not found")
    context = context_from_config(cfg, Path(checkpoint).resolve().parent.parent)
    if context.view is None:
        raise ConfigError("pipeline=export needs an encoder data view (data=last_query | naive_concat | selected_concat)")
    out = Path(out_dir or Path(cfg.paths.run_dir) / "export")
    model = HTC.from_checkpoint(checkpoint, cache_dir=cfg.paths.cache_dir)
    trained_selector = None
    if context.view.kind == "selected_concat":
        from mtic.models.selector import load_selector

        try:
            trained_selector = load_selector(selector or selector_dir(context))
        except FileNotFoundError as err:
            raise ExportError(f"{err}; pass pipeline.selector=<run dir>/selector") from err
    bundle_dir = bundle_path(context.bundle, context.cache_dir, context.datasets_dir) if context.bundle else None
    sessions, meta = parity_sessions(bundle_dir, parity_split) if bundle_dir else (None, {})
    meta["experiment"] = context.experiment
    card = export_model(model, out, context.view, sessions, trained_selector, int8=int8, per_channel=per_channel,
                        reduce_range=reduce_range, opset=opset, parity_limit=parity_limit, parity_split=parity_split,
                        source_checkpoint=checkpoint, meta=meta)
    print(parity_summary(card))
    print(f"[mtic] export: {out} (serve it with: mtic serve {out})")
    return card
