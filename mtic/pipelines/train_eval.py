"""Train a model on a bundle and test it (`pipeline=train_test`): the pipeline behind symbol tuning, the HTC and
the baselines, and the training stage of the selective, CLARA and M_c pipelines."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mtic.data.datamodule import planned_supervision
from mtic.data.sources import resolve_bundle
from mtic.eval.results import ablation_settings, redact, results_line, write_predictions, write_results
from mtic.eval.supervision import Supervision
from mtic.eval.wandb_records import attach_to_wandb

log = logging.getLogger("mtic")


def bundle_dir_of(cfg: DictConfig) -> Path:
    """The bundle this run reads: `paths.data_dir` when set, else `market.bundle`."""
    spec = cfg.paths.get("data_dir") or cfg.market.bundle
    return resolve_bundle(spec, cfg.paths.cache_dir, cfg.paths.get("datasets_dir"))


def build_components(cfg: DictConfig) -> tuple[pl.LightningDataModule, pl.LightningModule]:
    """Datamodule (bundle + view) and model (which supplies the encoder), wired together.

    The model node is instantiated recursively: a generative model's `labels: ${labels}` gets the bundle's
    taxonomy, and its `summaries` node (labels=summary) the queries of the training examples actually used."""
    datamodule = instantiate(cfg.data, bundle_dir=str(bundle_dir_of(cfg)))
    runtime: dict[str, Any] = {"taxonomy": datamodule.taxonomy}
    if cfg.model.get("labels") is not None:
        runtime["labels"] = {"taxonomy": datamodule.taxonomy}
    if cfg.model.get("summaries") is not None:
        runtime["summaries"] = {"queries": training_queries(datamodule)}
    model = instantiate(cfg.model, _convert_="all", **runtime)  # plain hparams: checkpoints load with weights_only
    datamodule.set_encoder(model.build_encoder(), model.pad_token_id)
    return datamodule, model


def training_queries(datamodule: pl.LightningDataModule) -> list[str]:
    """Every query of the training examples used (after `data.max_train_examples`): what labels=summary
    summarises."""
    return [q for example in datamodule.train_examples() for q, _ in (example.turns or [(example.text, None)])]


def build_trainer(cfg: DictConfig) -> pl.Trainer:
    """Trainer with the configured loggers and callbacks (each instantiated from its `_target_`)."""
    loggers = [_make_logger(c, cfg) for c in (cfg.get("logger") or {}).values() if c]
    config = redact(OmegaConf.to_container(cfg, resolve=True))
    for logger in loggers:
        logger.log_hyperparams({"config": config})
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    return instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)


def _make_logger(node: DictConfig, cfg: DictConfig) -> Any:
    """A logger; those with tags (W&B) also get the ablation settings as `key=value` tags."""
    if "tags" not in node:
        return instantiate(node)
    tags = list(node.tags or []) + [f"{k}={v}" for k, v in ablation_settings(cfg).items() if v is not None]
    return instantiate(node, tags=tags)


def run(cfg: DictConfig, fit: bool = True, test: bool = True, checkpoint: str | None = None,
        supervision: Supervision | None = None) -> dict[str, float]:
    """Fit, test, write `results.json` and `predictions.jsonl` in the run directory; returns the metrics.

    With fit=false, `checkpoint` (a Lightning checkpoint) is tested instead of the freshly built model.
    `supervision`: label sources read by earlier stages of the calling pipeline (selector, candidate model);
    the datamodule's own sources are added, and a `label_free` run reading gold multi-turn labels stops here,
    before any training.
    """
    started = time.time()
    pl.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.run_dir)
    label_free, where = bool(cfg.get("label_free", False)), f"experiment '{cfg.experiment}'"
    data = cfg.data
    planned = planned_supervision(data.get("train_single_turn", True), data.get("train_sessions", "train"),
                                  data.get("valid_sessions", "valid"))
    (supervision or Supervision()).merged(planned).enforce(label_free, where=where)  # before any model loads
    datamodule, model = build_components(cfg)
    used = (supervision or Supervision()).merged(datamodule.supervision())
    if not fit and checkpoint is not None:
        used.add(train=[f"checkpoint:{Path(checkpoint).name}"])
    used.enforce(label_free, where=where)
    trainer = build_trainer(cfg)
    if fit:
        trainer.fit(model, datamodule=datamodule)
    metrics: dict[str, float] = {}
    data_sizes = {split: len(data) for split, data in datamodule.datasets.items()}  # examples per split
    if test:
        ckpt = _best_checkpoint(trainer) if fit else _existing(checkpoint)
        datamodule.set_encoder(model.build_test_encoder(), model.pad_token_id)  # ST: turns only, no ids
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        write_predictions(run_dir, getattr(model, "test_outputs", []))
        data_sizes["test"] = len(datamodule.datasets["test"])
    test_size = data_sizes.get("test", 0)
    sizes = {"data_sizes": data_sizes}
    path = write_results(run_dir, cfg, metrics, test_size, started, extra=sizes, supervision=used)
    log.info("results: %s -> %s", json.dumps(metrics), path)
    print(results_line(cfg, metrics, test_size, path))
    attach_to_wandb(trainer.loggers, path)
    finish_loggers(trainer)
    return metrics


def _existing(checkpoint: str | None) -> str | None:
    if checkpoint is None:
        return None
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pipeline.checkpoint: no such checkpoint file: {path}")
    return str(path)


def _best_checkpoint(trainer: pl.Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    best = getattr(callback, "best_model_path", "") if callback else ""
    return best or None




def finish_loggers(trainer: pl.Trainer) -> None:
    """Close W&B runs so that every job of a multirun logs as its own run."""
    for logger in trainer.loggers:
        experiment = getattr(logger, "_experiment", None)
        if experiment is not None and hasattr(experiment, "finish"):
            experiment.finish()
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    except ImportError:  # wandb is a dependency, but finishing must never crash a finished run
        pass
