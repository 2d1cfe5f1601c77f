"""Train a model on a bundle and test it (`pipeline=train_test`): the pipeline behind symbol tuning, the HTC and
the baselines, and the training stage of the selective, CLARA and M_c pipelines."""
from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import ModelCheckpoint

from mtic.config_schema import ConfigError
from mtic.data.sources import resolve_bundle
from mtic.data.taxonomy import Taxonomy
from mtic.eval.distributed import is_main_process
from mtic.eval.results import ablation_settings, redact, results_line, write_predictions, write_results
from mtic.eval.supervision import Supervision
from mtic.eval.wandb_records import attach_to_wandb
from mtic.inputs.data_plan import ValidationPlan
from mtic.inputs.datamodule import EncodedDataModule, MTICDataModule, config_supervision
from mtic.labels.targets import LabelSet
from mtic.models.checkpoint_io import ArtifactError, existing_file, read_checkpoint

log = logging.getLogger("mtic")


def bundle_dir_of(cfg: DictConfig) -> Path:
    """The bundle this run reads: `paths.data_dir` when set, else `market.bundle`."""
    spec = cfg.paths.get("data_dir") or cfg.market.bundle
    return resolve_bundle(spec, cfg.paths.cache_dir, cfg.paths.get("datasets_dir"))


def build_components(cfg: DictConfig) -> tuple[MTICDataModule, pl.LightningModule]:
    """Datamodule (bundle + view) and model (which supplies the encoder), wired together."""
    datamodule = build_datamodule(cfg)
    return datamodule, build_model(cfg, datamodule)


def build_datamodule(cfg: DictConfig) -> MTICDataModule:
    """The datamodule of `cfg.data` on the run's bundle: reads the bundle, loads no model."""
    return instantiate(cfg.data, bundle_dir=str(bundle_dir_of(cfg)))


TAXONOMY = "taxonomy"
"""The model-node key (value `???`) of a model that takes the bundle's taxonomy, supplied by `build_model`."""


def build_model(cfg: DictConfig, datamodule: EncodedDataModule) -> pl.LightningModule:
    """The model of `cfg.model`, its encoder installed in `datamodule`.

    What only the data can give is declared in the model node and supplied here: `taxonomy: ???` (the models that
    predict intents: symbol tuning, the HTC) gets the bundle's taxonomy; the node is instantiated recursively, so a
    generative model's `labels: ${labels}` gets it too, and its `summaries` node (labels=summary) the conversations
    of the training examples actually used. A node that declares none of them (continued pre-training) reads
    nothing but the encoder slot of `datamodule`, which may then hold a chat corpus instead of a bundle."""
    runtime: dict[str, Any] = {}
    if TAXONOMY in cfg.model.keys():  # noqa: SIM118 (`in` reads False for a ??? value; keys() lists it)
        runtime[TAXONOMY] = _taxonomy_of(datamodule, cfg.model._target_)
    if cfg.model.get("labels") is not None:
        runtime["labels"] = {TAXONOMY: _taxonomy_of(datamodule, cfg.model._target_)}
    if cfg.model.get("summaries") is not None:
        runtime["summaries"] = {"conversations": training_conversations(datamodule)}
    model = instantiate(cfg.model, _convert_="all", **runtime)  # plain hparams: checkpoints load with weights_only
    datamodule.set_encoder(model.build_encoder(), model.pad_token_id)
    return model


def _taxonomy_of(datamodule: EncodedDataModule, model: str) -> Taxonomy:
    taxonomy = getattr(datamodule, TAXONOMY, None)
    if not isinstance(taxonomy, Taxonomy):
        raise ConfigError(f"model {model} predicts intents, but its training data ({type(datamodule).__name__}) holds "
                          "no intent taxonomy: train it on a bundle (pipeline=pretrain trains model=pretrain only)")
    return taxonomy


def training_conversations(datamodule: pl.LightningDataModule) -> list[tuple[str, ...]]:
    """The conversation so far (queries 1..j) of every labelled turn j of the training examples used (after
    `data.max_train_examples`): what labels=summary summarises."""
    out: list[tuple[str, ...]] = []
    for example in datamodule.train_examples():
        turns = example.turns or ((example.text, example.target),)
        queries = tuple(q for q, _ in turns)
        out += [queries[: j + 1] for j, (_, intent) in enumerate(turns) if intent is not None]
    return out


def build_trainer(cfg: DictConfig) -> pl.Trainer:
    """Trainer with the configured loggers and callbacks (each instantiated from its `_target_`)."""
    loggers = [_make_logger(c, cfg) for c in (cfg.get("logger") or {}).values() if c]
    config = redact(OmegaConf.to_container(cfg, resolve=True))
    for logger in loggers:
        logger.log_hyperparams({"config": config})
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    return instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)


def _watches_validation(node: Any) -> bool:
    return bool(node) and str(node.get("monitor") or "").startswith("val/")


def _is_checkpoint(node: Any) -> bool:
    return issubclass(get_class(node._target_), ModelCheckpoint)


def selection_rule(cfg: DictConfig) -> str | None:
    """How the callbacks select the model on validation data, e.g. 'early stopping and the best checkpoint on
    val/loss'; None when no callback watches a val/ metric."""
    watching = [node for node in (cfg.get("callbacks") or {}).values() if _watches_validation(node)]
    if not watching:
        return None
    kinds = [kind for kind in ("early stopping", "the best checkpoint")
             if any((kind == "the best checkpoint") == _is_checkpoint(n) for n in watching)]
    return f"{' and '.join(kinds)} on {', '.join(sorted({str(n.monitor) for n in watching}))}"


def without_selection(cfg: DictConfig) -> DictConfig:
    """The config of a fit that has no validation data: no validation loop, no callback that watches a val/
    metric (early stopping), and checkpoints that watch nothing (`best.ckpt` = the last epoch)."""
    out = copy.deepcopy(cfg)
    with open_dict(out):
        out.trainer.limit_val_batches = 0
        for name, node in list((out.get("callbacks") or {}).items()):
            if _watches_validation(node):
                if _is_checkpoint(node):
                    node.monitor = None
                else:
                    del out.callbacks[name]
    return out


def fit_trainer(cfg: DictConfig, plan: ValidationPlan) -> pl.Trainer:
    """The trainer of a fit, selecting the model as `plan` says (said in one line)."""
    log.info(plan.line(selection_rule(cfg)))
    return build_trainer(cfg if plan.selects else without_selection(cfg))


def _make_logger(node: DictConfig, cfg: DictConfig) -> Any:
    """A logger; those with tags (W&B) also get the ablation settings as `key=value` tags."""
    if "tags" not in node:
        return instantiate(node)
    tags = list(node.tags or []) + [f"{k}={v}" for k, v in ablation_settings(cfg).items() if v is not None]
    return instantiate(node, tags=tags)


def run(cfg: DictConfig, fit: bool = True, test: bool = True, checkpoint: str | None = None,
        supervision: Supervision | None = None, resume: str | None = "auto") -> dict[str, float]:
    """Fit, test, write `results.json` and `predictions.jsonl` in the run directory; returns the metrics.

    With fit=false, `checkpoint` (a Lightning checkpoint) is tested instead of the freshly built model.
    `supervision`: label sources read by earlier stages of the calling pipeline (selector, candidate model);
    the datamodule's own sources are added, and a `label_free` run reading gold multi-turn labels stops here,
    before any training.
    `resume` (`pipeline.resume`): where a fit starts, see `resume_point`.
    """
    started = time.time()
    pl.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.run_dir)
    label_free, where = bool(cfg.get("label_free", False)), f"experiment '{cfg.experiment}'"
    data = cfg.data
    planned = config_supervision(data)
    (supervision or Supervision()).merged(planned).enforce(label_free, where=where)  # before any model loads
    if fit:
        _given_checkpoint(resume)  # pipeline.resume=<file>: a missing file is one line before data and model load
    datamodule = build_datamodule(cfg)
    plan = datamodule.plan(where, fit=fit, test=test, test_without="pipeline.test=false to train only")
    used = (supervision or Supervision()).merged(datamodule.supervision())
    if not fit and checkpoint is not None:
        used.add(train=[f"checkpoint:{Path(checkpoint).name}"])
    used.enforce(label_free, where=where)
    model = build_model(cfg, datamodule)
    trainer = fit_trainer(cfg, plan) if fit else build_trainer(cfg)
    if fit:
        start = resume_point(trainer, run_dir, resume)
        trainer.fit(model, datamodule=datamodule, ckpt_path=start, weights_only=True)
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
    sizes: dict[str, Any] = {"data_sizes": data_sizes}
    if isinstance(getattr(model, "labels", None), LabelSet):
        sizes["labels"] = model.labels.report()  # which proposer won how many labels, file overrides
    if fit:
        sizes["selection"] = plan.record(selection_rule(cfg))
        sizes["training_fallback"] = datamodule.training_fallback
    sizes["world_size"] = trainer.world_size  # processes of a data-parallel run (trainer=ddp, ddp_cpu); 1 otherwise
    path = write_results(run_dir, cfg, metrics, test_size, started, extra=sizes, supervision=used)  # rank 0 only
    if trainer.is_global_zero:
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


RESUME_CHOICES = ("auto", "never")
"""`pipeline.resume`: one of these, or the path of a checkpoint to resume from."""
LAST = "last.ckpt"


def resume_point(trainer: pl.Trainer, run_dir: Path, resume: str | None) -> str | None:
    """The checkpoint a fit resumes from (None: a fresh fit), said in one line either way it matters.

    `auto`: the run's `checkpoints/last.ckpt` when there is one that holds the optimizer state. A weights-only
    one (HTC's default `model.checkpoint_optimizer=false`, CLARA's `save_weights_only`) or an unreadable one
    (killed while written) cannot restore the optimizer, scheduler and early stopping: the fit starts fresh and
    says why (resuming the weights with a new optimizer and warm-up would be another run under the same name).
    `never`: always fresh. A path: that checkpoint, which must hold the optimizer state.

    A fresh fit first moves the directory's old `*.ckpt` into `stale-<time>/` (else Lightning would write
    `best-v1.ckpt` beside the killed run's `best.ckpt`); a resumed fit keeps only its checkpoint and the best it
    recorded, so `best.ckpt` stays the best of the whole run."""
    choice = "never" if resume is None else str(resume)
    folder = _checkpoint_dir(trainer, run_dir)
    tidy = is_main_process()  # DDP: every rank runs this; rank 0 alone moves old checkpoints
    path: Path | None = None
    if choice == "auto":
        path = folder / LAST if (folder / LAST).is_file() else None
    elif choice != "never":
        path = _given_checkpoint(choice)
    state = _resumable_state(path, explicit=choice not in RESUME_CHOICES) if path is not None else None
    if state is None:
        if tidy:
            _move_stale(folder, keep=set())
        return None
    kept = {path.resolve()} | {Path(p).resolve() for p in _recorded_best(state)}
    if tidy:
        _move_stale(folder, keep=kept)
    epoch, step = int(state.get("epoch", -1)) + 1, int(state.get("global_step", 0))
    _say(f"resuming from {path} (saved after epoch {epoch}, step {step}): weights, optimizer, scheduler and "
         "early-stopping state restored", logging.INFO)
    return str(path)


def _given_checkpoint(resume: str | None) -> Path | None:
    """The file `pipeline.resume` names (None for auto / never); an ArtifactError when there is none."""
    if resume is None or str(resume) in RESUME_CHOICES:
        return None
    path = Path(str(resume)).expanduser()
    try:
        return existing_file(path)
    except ArtifactError as err:
        raise ArtifactError(err.path, f"pipeline.resume: {err.reason}") from None


def _checkpoint_dir(trainer: pl.Trainer, run_dir: Path) -> Path:
    callback = trainer.checkpoint_callback
    dirpath = getattr(callback, "dirpath", None) if callback else None
    return Path(dirpath) if dirpath else run_dir / "checkpoints"


def _resumable_state(path: Path, explicit: bool) -> dict[str, Any] | None:
    """The checkpoint's contents when a fit can resume from it. `pipeline.resume=<path>` that cannot is an
    error; `auto` says why it starts fresh and returns None."""
    try:
        state = read_checkpoint(path)
        setting = ("model.checkpoint_optimizer=false" if "callbacks" in state
                   else "callbacks.checkpoint.save_weights_only=true")
        why = None if "optimizer_states" in state else (
            f"holds weights only ({setting}), so the optimizer state cannot be restored; model.checkpoint_optimizer="
            "true and callbacks.checkpoint.save_weights_only=false make runs resumable")
    except ArtifactError as err:
        if explicit:
            raise ArtifactError(err.path, f"pipeline.resume: {err.reason}") from None
        state, why = {}, f"is unreadable ({err.reason})"
    if why is None:
        return state
    if explicit:
        raise ArtifactError(path, f"pipeline.resume: cannot resume a fit from this checkpoint: it {why}")
    _say(f"not resuming: {path} {why}; training starts fresh")
    return None


def _recorded_best(state: Mapping[str, Any]) -> list[str]:
    """The best checkpoints the ModelCheckpoint callbacks of a checkpoint recorded."""
    callbacks = state.get("callbacks") or {}
    return [str(s["best_model_path"]) for name, s in callbacks.items()
            if str(name).startswith("ModelCheckpoint") and isinstance(s, Mapping) and s.get("best_model_path")]


def _move_stale(folder: Path, keep: set[Path]) -> None:
    """Move the folder's checkpoints other than `keep` into `stale-<time>/`, saying so."""
    stale = sorted(p for p in folder.glob("*.ckpt") if p.is_file() and p.resolve() not in keep)
    if not stale:
        return
    target = folder / time.strftime("stale-%Y%m%d-%H%M%S")
    target.mkdir(parents=True, exist_ok=True)
    for old in stale:
        old.replace(target / old.name)
    names = ", ".join(p.name for p in stale)
    _say(f"moved {len(stale)} old checkpoint(s) ({names}) to {target}: the new best.ckpt stands alone")


def _say(message: str, level: int = logging.WARNING) -> None:
    """One line on the console and in run.log (Hydra's job logging)."""
    log.log(level, message)



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
