"""Train, select and test the configured classifier on pseudo-labelled sessions: the stage CLARA, LARA-PL and
st_distill share after their labellers (an LLM with self-consistency, a symbol-tuned teacher) have kept sessions.

The kept sessions (a sessions file, last turn labelled) are split once, seeded: `pseudo_valid.share` of them (at
most `pseudo_valid.max_sessions`, at least one) select the model (early stopping, checkpoint choice), the rest
train it beside the single-turn queries (`pseudo:<run dir>/pseudo_train.jsonl`); `pseudo_valid.single_turn` adds
the single-turn valid queries to the selection data. The classifier's budget is its experiment's (the one HTC
budget, experiment/_htc.yaml). No gold multi-turn label is read here: the run's `data.train_sessions` and
`data.valid_sessions` must be none, and the label sources of the labelling stage are passed on to results.json.
"""
from __future__ import annotations

import copy
import json
import random
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from mtic.clara.pseudo_label import Outputs
from mtic.config_schema import ConfigError
from mtic.data.bundle import Bundle, read_unlabeled_gold, write_jsonl
from mtic.data.schema import Session
from mtic.data.taxonomy import Taxonomy
from mtic.eval.results import update_results, write_results
from mtic.eval.supervision import GOLD_UNLABELED, PSEUDO_LABELS, Supervision, sessions_source
from mtic.inputs.datamodule import NO_SESSIONS, PSEUDO_PREFIX, SINGLE_TURN_SOURCE
from mtic.pipelines.train_eval import run as train_eval_run

PSEUDO_TRAIN_FILE = "pseudo_train.jsonl"
PSEUDO_VALID_FILE = "pseudo_valid.jsonl"
PSEUDO_LABEL_REPORT = ("sessions", "kept", "kept_share", "precision", "session_statuses", "answer_statuses", "files",
                       "llm_stats")


def require_pseudo_sources(cfg: DictConfig, method: str) -> None:
    """ConfigError unless `data.train_sessions` and `data.valid_sessions` are none: the pseudo-labelled sessions
    are what trains and selects the model."""
    for key in ("train_sessions", "valid_sessions"):
        if cfg.data.get(key, NO_SESSIONS) != NO_SESSIONS:
            raise ConfigError(f"'data.{key}' is {cfg.data.get(key)!r}: {method} trains and selects the model on its "
                              f"pseudo-labelled sessions, so data.{key} must be none")


def pseudo_label_gold(bundle: Bundle, sessions: Sequence[Session], split: str, taxonomy: Taxonomy
                      ) -> tuple[dict[str, str], list[str]]:
    """Gold intents of the labelled sessions' last turns, to score the pseudo-labels (Table 4), never to train on:
    the sessions' own labels, else the bundle's unlabelled gold side file (`sessions/unlabeled.gold.jsonl`); and
    the evaluation source that is (none when there is no gold)."""
    gold = {s.id: s.target for s in sessions if s.target is not None}
    if gold:
        return gold, [sessions_source(split)]
    if bundle.root is None:
        return {}, []
    wanted = {s.id for s in sessions}
    side = read_unlabeled_gold(bundle.root, set(taxonomy.ids)) or []
    gold = {s.id: s.target for s in side if s.id in wanted and s.target is not None}
    return gold, [GOLD_UNLABELED] if gold else []


def pseudo_label_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The pseudo-label figures as metrics (`pseudo/...`), so `compare.py --metric` tables them (Table 4)."""
    metrics = {"pseudo/kept_share": summary.get("kept_share")}
    precision = summary.get("precision") or {}
    metrics["pseudo/precision_without_sc"] = precision.get("without_sc")
    metrics["pseudo/precision_with_sc"] = precision.get("with_sc")
    return {k: float(v) for k, v in metrics.items() if v is not None}


def split_pseudo_labelled(sessions_file: str | Path, run_dir: Path, share: float, max_sessions: int | None,
                          seed: int) -> tuple[Path, Path, int]:
    """Carve a validation split off the kept sessions (the paper keeps 1.5k pseudo-labelled samples for early
    stopping): `share` of them, at most `max_sessions`, at least one, drawn with `seed`; the rest trains.
    Returns (train file, valid file, number of validation sessions)."""
    lines = [line for line in Path(sessions_file).read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(lines) < 2:
        raise RuntimeError(f"{sessions_file}: {len(lines)} pseudo-labelled session(s) kept; at least 2 are needed "
                           "to train and to select a model on pseudo-labels (label more sessions: "
                           "pipeline.unlabeled.max_sessions)")
    n_valid = max(1, round(share * len(lines)))
    n_valid = min(n_valid, int(max_sessions) if max_sessions else n_valid, len(lines) - 1)
    order = list(range(len(lines)))
    random.Random(seed).shuffle(order)
    valid_rows = sorted(order[:n_valid])
    train_rows = sorted(order[n_valid:])
    run_dir.mkdir(parents=True, exist_ok=True)
    train_path, valid_path = run_dir / PSEUDO_TRAIN_FILE, run_dir / PSEUDO_VALID_FILE
    write_jsonl(train_path, [json.loads(lines[k]) for k in train_rows])
    write_jsonl(valid_path, [json.loads(lines[k]) for k in valid_rows])
    return train_path, valid_path, n_valid


def copy_summary(summary: Mapping[str, Any], run_dir: Path) -> None:
    """Copy the summary files next to the run's results (the records stay where they were labelled)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = Outputs.of(summary["files"]["records"])
    for src in (paths.summary_json, paths.summary_md):
        if src.is_file() and src.resolve() != (run_dir / src.name).resolve():
            shutil.copyfile(src, run_dir / src.name)


def train_on_pseudo_labels(cfg: DictConfig, summary: Mapping[str, Any], used: Supervision, report: dict[str, Any],
                           fit: bool, test: bool, pseudo_valid: Mapping[str, Any], started: float) -> dict[str, float]:
    """Split the kept sessions of `summary`, train / select / test the configured model on them, and write
    results.json with `report` (the pseudo-label figures added); with fit=false and test=false only the figures."""
    run_dir = Path(cfg.paths.run_dir)
    copy_summary(summary, run_dir)
    sessions_file = summary["files"]["sessions"]
    print(f"[mtic] pseudo-labels: kept {summary['kept']} of {summary['sessions']} sessions -> {sessions_file}")
    report = {**report, "pseudo_labels": {k: summary.get(k) for k in PSEUDO_LABEL_REPORT}}
    if not (fit or test):
        used.add(train=[PSEUDO_LABELS])
        write_results(run_dir, cfg, pseudo_label_metrics(summary), 0, started, extra=report, supervision=used)
        return {}
    if summary["kept"] == 0:
        raise RuntimeError(f"no session was kept (see {Outputs.of(summary['files']['records']).summary_md}): nothing "
                           "to train on; label more sessions (pipeline.unlabeled.max_sessions) or keep more "
                           "(CLARA: pipeline.self_consistency; st_distill: pipeline.min_confidence)")
    train_file, valid_file, n_valid = split_pseudo_labelled(
        sessions_file, run_dir, float(pseudo_valid.get("share", 0.2)), pseudo_valid.get("max_sessions"), cfg.seed)
    report["pseudo_labels"]["valid_sessions"] = n_valid
    train_cfg = copy.deepcopy(cfg)
    with open_dict(train_cfg):
        train_cfg.data.train_sessions = PSEUDO_PREFIX + str(train_file)
        pseudo = PSEUDO_PREFIX + str(valid_file)
        train_cfg.data.valid_sessions = [pseudo, SINGLE_TURN_SOURCE] if pseudo_valid.get("single_turn") else pseudo
    metrics = train_eval_run(train_cfg, fit=fit, test=test, supervision=used)
    report["wall_time_s"] = round(time.time() - started, 2)  # labelling included
    update_results(run_dir, report, pseudo_label_metrics(summary))
    return metrics
