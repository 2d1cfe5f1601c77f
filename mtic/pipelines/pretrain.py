"""`pipeline=pretrain`: continued pre-training of a causal LM with LoRA, the selected LoRA merged into the base.

Two corpora (the `corpus` config group):
- `corpus=null` (default): the bundle's chat logs through the `data` group (data=transcript: the queries of each
  session as plain text), the paper's in-domain Domain-Llama2. Every token carries loss: the logs hold only the
  customers' messages, and their language is what the model should adapt to.
- `corpus=jsonl | hub`: a general chat corpus (mtic/data/chat_corpus.py; the paper pre-trains on ShareGPT) through
  `pipeline.corpus_data` (mtic/inputs/corpus_datamodule.py). Only the assistant replies carry loss: the model learns
  to answer in the chat format symbol tuning uses; user messages are context.

The merged model is the selected one: the best checkpoint on val/loss when the run selects (its LoRA weights are
loaded before merging), else the last epoch. Symbol-tune from it with `backbone.name=<run dir>/merged`.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mtic.config_schema import ConfigError
from mtic.eval.results import write_results
from mtic.inputs.corpus_datamodule import ChatCorpusDataModule
from mtic.inputs.datamodule import MTICDataModule
from mtic.models.causal_lm import LoraCausalLM
from mtic.models.checkpoint_io import read_checkpoint
from mtic.pipelines.train_eval import build_datamodule, build_model, finish_loggers, fit_trainer, selection_rule

log = logging.getLogger("mtic")
MERGED_DIR = "merged"


def training_data(cfg: DictConfig, corpus_data: DictConfig | None) -> MTICDataModule | ChatCorpusDataModule:
    """The bundle's chat logs (corpus=null) or the general chat corpus of `cfg.corpus` (read by `plan`)."""
    if cfg.get("corpus") is None:
        return build_datamodule(cfg)
    missing = sorted(OmegaConf.missing_keys(cfg.corpus))  # full keys: corpus.path
    if missing:
        raise ConfigError(f"the chat corpus needs {', '.join(missing)}: e.g. corpus=jsonl "
                          "corpus.path=<conversations.jsonl>, or corpus=hub corpus.name=<dataset> corpus.split=train")
    if corpus_data is None:
        raise ConfigError("corpus is set but pipeline.corpus_data (the corpus datamodule) is missing")
    return instantiate(corpus_data, _convert_="all")


def load_selected(model: LoraCausalLM, trainer: pl.Trainer) -> str | None:
    """Load the LoRA weights of the best checkpoint when validation selected one; its path, or None (the weights
    in memory, those of the last epoch, are the selected ones)."""
    callback = trainer.checkpoint_callback
    best = getattr(callback, "best_model_path", "") if callback is not None else ""
    if not best or getattr(callback, "monitor", None) is None:
        return None
    model.load_state_dict(read_checkpoint(best)["state_dict"])
    return best


def run(cfg: DictConfig, merged_dir: str | None = None, corpus_data: DictConfig | None = None) -> dict[str, float]:
    """Train with the LM objective, save the merged model, report the validation loss."""
    started = time.time()
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = training_data(cfg, corpus_data)
    plan = datamodule.plan(f"experiment '{cfg.experiment}'", fit=True, test=False)
    model = build_model(cfg, datamodule)
    trainer = fit_trainer(cfg, plan)
    trainer.fit(model, datamodule=datamodule)
    selected = load_selected(model, trainer)
    out = Path(merged_dir or Path(cfg.paths.run_dir) / MERGED_DIR)
    model.save_merged(out)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    extra = {"merged_model": str(out), "merged_checkpoint": selected or "last epoch",
             "selection": plan.record(selection_rule(cfg)), "training_fallback": datamodule.training_fallback}
    if isinstance(datamodule, ChatCorpusDataModule):
        extra["corpus"] = datamodule.record()
    write_results(cfg.paths.run_dir, cfg, metrics, test_size=0, started_at=started, extra=extra)
    print(f"[mtic] merged pre-trained model: {out}\n[mtic] symbol-tune from it: backbone.name={out}")
    finish_loggers(trainer)
    return metrics
