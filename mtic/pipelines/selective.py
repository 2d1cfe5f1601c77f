"""`pipeline=selective`: the selective-concatenation baseline.

1. Train the selector (`pipeline.selector`, see mtic/models/selector.py) on the bundle's labelled sessions,
   or reuse a saved one (`pipeline.selector.path`); it is saved to `<run dir>/selector`.
2. Point the view at it (`data.view.selector = load_selector(path)`, so the composed config stays the record).
3. Train and test the configured model with `mtic.pipelines.train_eval.run`; the selector's summary joins
   results.json under `selector`.
"""
from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf, open_dict

from mtic.config_schema import ConfigError
from mtic.data.bundle import read_bundle
from mtic.eval.results import update_results
from mtic.eval.supervision import SELECTOR_GOLD, SINGLE_TURN, Supervision
from mtic.inputs.data_plan import require_data
from mtic.inputs.datamodule import config_supervision
from mtic.inputs.views import VIEW_NAMES, SelectedConcatView, view_target
from mtic.models.selector import SELECTOR_DIR
from mtic.pipelines.train_eval import bundle_dir_of
from mtic.pipelines.train_eval import run as train_eval_run

log = logging.getLogger("mtic")
VIEW = view_target(SelectedConcatView)


def prepare_selector(cfg: DictConfig, settings: Mapping[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Train (or reuse) the selector; returns where it is saved and its training summary."""
    from mtic.models.selector import load_selector, train_selector

    settings = dict(settings)
    path = settings.pop("path", None)
    if path:
        load_selector(path)  # fail early on a wrong path
        return Path(path), {"source": "pretrained", "path": str(path)}
    settings.setdefault("backbone", cfg.model.get("backbone"))
    selector, summary = train_selector(bundle_dir_of(cfg), cache_dir=cfg.paths.cache_dir, seed=cfg.seed, **settings)
    out = selector.save(Path(cfg.paths.run_dir) / SELECTOR_DIR)
    log.info("selector: %s -> %s", json.dumps(summary), out)
    return out, summary


def selector_supervision(settings: Mapping[str, Any], summary: Mapping[str, Any] | None = None) -> Supervision:
    """The selector's label source: gold multi-turn sessions (`selector:gold`) unless it learns from single-turn
    pairs (`pipeline.selector.sessions: none`, or a bundle without labelled sessions) or is a saved one."""
    if settings.get("path"):
        return Supervision(train=[f"selector:{Path(str(settings['path'])).name}"])
    if summary is not None:
        return Supervision(train=[SELECTOR_GOLD if summary.get("source") == "sessions" else SINGLE_TURN])
    return Supervision(train=[SINGLE_TURN if settings.get("sessions", "train") == "none" else SELECTOR_GOLD])


def run(cfg: DictConfig, selector: Mapping[str, Any] | None = None, fit: bool = True, test: bool = True) -> dict[str, float]:
    """Selector first, then train_eval.run with the selector in the view; returns the test metrics.

    A label-free run (`label_free: true`) must train its selector on single-turn pairs; that is checked before
    the selector trains."""
    if cfg.data.get("view", {}).get("_target_") != VIEW:
        raise ConfigError(f"pipeline=selective needs data={VIEW_NAMES[SelectedConcatView]} (view {VIEW}), "
                          f"got {cfg.data.view._target_}")
    pl.seed_everything(cfg.seed, workers=True)
    settings = OmegaConf.to_container(selector, resolve=True) if isinstance(selector, DictConfig) else dict(selector or {})
    data = cfg.data
    planned = config_supervision(data).merged(selector_supervision(settings))
    where = f"experiment '{cfg.experiment}'"
    planned.enforce(bool(cfg.get("label_free", False)), where=where)
    require_data(read_bundle(bundle_dir_of(cfg)), data, where, fit, test, "pipeline.test=false to train only")
    path, summary = prepare_selector(cfg, settings)  # type: ignore[arg-type]
    train_cfg = copy.deepcopy(cfg)
    with open_dict(train_cfg):
        train_cfg.data.view.selector = {"_target_": "mtic.models.selector.load_selector", "path": str(path)}
    metrics = train_eval_run(train_cfg, fit=fit, test=test, supervision=selector_supervision(settings, summary))
    update_results(cfg.paths.run_dir, {"selector": summary})
    return metrics
