"""`pipeline=pretrain`: continued pre-training on the bundle's chat logs, then the LoRA merged into the base."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig

from mtic.eval.results import write_results
from mtic.pipelines.train_eval import build_datamodule, build_model, finish_loggers, fit_trainer, selection_rule

log = logging.getLogger("mtic")
MERGED_DIR = "merged"


def run(cfg: DictConfig, merged_dir: str | None = None) -> dict[str, float]:
    """Train with the LM objective, save the merged model, report the validation loss.

    Symbol-tune from the result with `backbone.name=<run dir>/merged`.
    """
    started = time.time()
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    plan = datamodule.plan(f"experiment '{cfg.experiment}'", fit=True, test=False)
    model = build_model(cfg, datamodule)
    trainer = fit_trainer(cfg, plan)
    trainer.fit(model, datamodule=datamodule)
    out = Path(merged_dir or Path(cfg.paths.run_dir) / MERGED_DIR)
    model.save_merged(out)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    extra = {"merged_model": str(out), "selection": plan.record(selection_rule(cfg)),
             "training_fallback": datamodule.training_fallback}
    write_results(cfg.paths.run_dir, cfg, metrics, test_size=0, started_at=started, extra=extra)
    print(f"[mtic] merged domain-adapted model: {out}\n[mtic] symbol-tune from it: backbone.name={out}")
    finish_loggers(trainer)
    return metrics
