"""Models a pipeline trains once and reuses: M_c (CLARA's candidate model) and st_distill's teacher.

A model lives in its own cache directory named by a key that hashes everything that determines it (the bundle's
files, its settings, budget and seed). The directory counts as finished only once `done.json` is written, after
training produced `checkpoints/best.ckpt`; a run that dies while training leaves no marker, so the next run
trains it again from scratch (the directory is cleared first).
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

log = logging.getLogger("mtic")
DONE_FILE = "done.json"
CHECKPOINT = "checkpoints/best.ckpt"


def settings_key(payload: Mapping[str, Any]) -> str:
    """A short hash of JSON-able settings (sorted keys): the name of a cached model or artifact."""
    blob = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def is_done(out_dir: Path) -> bool:
    return (Path(out_dir) / DONE_FILE).is_file()


def train_once(train_cfg: DictConfig, out_dir: Path, settings: Mapping[str, Any], what: str,
               test: bool = False) -> Path:
    """The checkpoint of the model `train_cfg` trains into `out_dir` (its `paths.run_dir`), trained now unless a
    finished one is there; `test`: also test it (its results.json then holds test metrics)."""
    out_dir = Path(out_dir)
    if not is_done(out_dir):
        from mtic.pipelines.train_eval import run as train_eval_run

        if out_dir.exists():
            shutil.rmtree(out_dir)  # an interrupted training: start over
        log.info("%s: training -> %s", what, out_dir)
        print(f"[mtic] {what}: training ({train_cfg.model.backbone}) -> {out_dir}")
        train_eval_run(train_cfg, fit=True, test=test)
        if not (out_dir / CHECKPOINT).is_file():
            raise RuntimeError(f"{out_dir}: {what} training wrote no {CHECKPOINT}")
        (out_dir / DONE_FILE).write_text(json.dumps({"settings": dict(settings)}, default=str), encoding="utf-8")
    return out_dir / CHECKPOINT
