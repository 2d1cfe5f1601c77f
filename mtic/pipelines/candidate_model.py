"""M_c, the paper's fine-tuned single-turn model in LARA / LARA-PL / CLARA: an HTC trained on the labelled
single-turn queries (selected on the single-turn valid queries, so it reads no multi-turn label) whose top
intents for a session's last query join the retrieved demos as candidate intents (`Retriever.candidates`).

`pipeline.retrieval.candidates`:
  source       single_turn_htc (train M_c here, or reuse it) | none (retrieval alone: the ablation row)
  checkpoint   a trained single-turn HTC .ckpt to use instead of training one
  n            candidate intents proposed per session; demos_each: demos of each candidate put in the prompt
  view         the data view M_c trains on (the last query)

M_c is trained once per (bundle files, HTC settings, budget, seed) and cached under
`<cache_dir>/clara/mc-<market>-<key>/` (mtic/pipelines/cached_model.py): LARA, LARA-PL and CLARA of one market
share it. A run that dies while training leaves no `done` marker, so the next run trains it again from scratch.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from mtic.clara.retrieval import uses_ann
from mtic.config_schema import ConfigError
from mtic.data.sources import bundle_fingerprint
from mtic.eval.supervision import SINGLE_TURN, SINGLE_TURN_VALID, Supervision
from mtic.pipelines.cached_model import CHECKPOINT, settings_key, train_once

HTC_SOURCE = "single_turn_htc"
NO_CANDIDATES = "none"
SOURCES = (HTC_SOURCE, NO_CANDIDATES)


def candidate_source(candidates: Mapping[str, Any] | None) -> str:
    """The configured proposer: `single_turn_htc` or `none` (an explicit checkpoint counts as the HTC)."""
    source = (candidates or {}).get("source", NO_CANDIDATES) if isinstance(candidates, Mapping) else candidates
    source = NO_CANDIDATES if source in (None, False) else str(source)
    if source not in SOURCES:
        raise ConfigError(f"'pipeline.retrieval.candidates.source' is {source!r}; allowed values: {', '.join(SOURCES)}")
    return source


def mc_settings(cfg: DictConfig) -> dict[str, Any]:
    """Everything that determines M_c (hashed into its cache key)."""
    return {"model": OmegaConf.to_container(cfg.model, resolve=True),
            "max_epochs": cfg.trainer.get("max_epochs"), "seed": cfg.seed,
            "max_train_examples": cfg.data.get("max_train_examples"),
            "view": OmegaConf.to_container(cfg.pipeline.retrieval.candidates.view, resolve=True)}


def mc_key(cfg: DictConfig, bundle_dir: Path) -> str:
    return settings_key({"bundle_files": bundle_fingerprint(bundle_dir), **mc_settings(cfg)})


def _mc_config(cfg: DictConfig, out_dir: Path) -> DictConfig:
    """The run's config turned into the single-turn baseline: last-query view, single-turn data and selection."""
    from mtic.pipelines.train_eval import bundle_dir_of

    mc = copy.deepcopy(cfg)
    with open_dict(mc):
        mc.paths.run_dir = str(out_dir)
        mc.paths.data_dir = str(bundle_dir_of(cfg))
        mc.experiment = f"{cfg.experiment}-mc"
        mc.method = "single_turn"
        mc.label_free = True
        mc.data.view = copy.deepcopy(cfg.pipeline.retrieval.candidates.view)
        mc.data.pop("eval_view", None)
        mc.data.train_single_turn = True
        mc.data.train_sessions = "none"
        mc.data.valid_sessions = "single_turn"
        mc.logger = None  # M_c is a stage of this run, not a run of its own in W&B
    return mc


def plan_candidates(cfg: DictConfig, retrieval: Mapping[str, Any], bundle_dir: Path) -> tuple[dict[str, Any], Supervision]:
    """The retrieval settings with M_c's checkpoint path filled in (nothing is trained yet) and what M_c reads.

    A cached M_c is named by `model_key` (its cache directory); `ensure_candidate_model` trains it when needed."""
    retrieval = dict(retrieval)
    candidates = dict(retrieval.get("candidates") or {})
    if candidate_source(candidates) == NO_CANDIDATES:
        retrieval["candidates"] = None
        return retrieval, Supervision()
    if candidates.get("checkpoint"):
        return retrieval, Supervision(train=[f"checkpoint:{Path(str(candidates['checkpoint'])).name}"])
    name = f"mc-{cfg.market.name}-{mc_key(cfg, bundle_dir)}"
    out_dir = Path(cfg.paths.cache_dir).expanduser() / "clara" / name
    retrieval["candidates"] = dict(candidates, checkpoint=str(out_dir / CHECKPOINT), model_key=name)
    return retrieval, Supervision(train=[SINGLE_TURN], selection=[SINGLE_TURN_VALID])


def identity(retrieval: Mapping[str, Any], n_demos: int) -> dict[str, Any]:
    """The retrieval settings that determine the demos (a cached M_c by its key, not by where the cache is), without
    Hydra's keys (`_target_`): the view of M_c counts by its settings. The approximate index's settings
    (`ann_above`, `ann`) count only when an index of `n_demos` demos uses it: exact search keys as before them."""
    out = _settings(retrieval)
    if not uses_ann(n_demos, out.get("ann_above"), out.get("ann")):
        out.pop("ann_above", None)
        out.pop("ann", None)
    candidates = out.get("candidates")
    if isinstance(candidates, Mapping) and candidates.get("model_key"):
        out["candidates"] = {k: v for k, v in candidates.items() if k != "checkpoint"}
    return out


def _settings(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {k: _settings(v) for k, v in node.items() if not str(k).startswith("_")}
    return node


def ensure_candidate_model(cfg: DictConfig, retrieval: Mapping[str, Any]) -> dict[str, Any]:
    """Train the planned M_c if its cache has no finished model; returns `retrieval` unchanged."""
    candidates = retrieval.get("candidates") or {}
    if not candidates.get("model_key"):
        return dict(retrieval)
    out_dir = Path(candidates["checkpoint"]).parents[1]
    train_once(_mc_config(cfg, out_dir), out_dir, mc_settings(cfg), "M_c (the single-turn candidate model)")
    return dict(retrieval)
