"""`results.json`: one file per run with everything the comparison tables need (no secrets)."""
from __future__ import annotations

import json
import os
import platform
import re
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mtic.eval.supervision import Supervision

RESULTS_FILE = "results.json"
SECRET_KEY = re.compile(r"(api[_-]?key|secret|passw(or)?d|credential|(^|_)(auth_|access_|hf_)?token$)", re.IGNORECASE)


def redact(value: Any) -> Any:
    """Copy of a nested config with the value of every secret-looking key (api_key, token, password...) as '***'."""
    if isinstance(value, dict):
        return {k: "***" if SECRET_KEY.search(str(k)) and v else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


HTC_SWITCHES = ("global_head", "local_chain", "label_attention")  # the classifier's ablation switches


def ablation_settings(cfg: DictConfig) -> dict[str, Any]:
    """The settings the paper's tables vary, read from the composed config."""
    model = cfg.get("model", {}) or {}
    labels = cfg.get("labels", {}) or {}
    return {
        "target": labels.get("target"),
        "cross_lingual": labels.get("cross_lingual"),
        "backbone": cfg.get("backbone", {}).get("name"),
        "decode": model.get("decode"),
        "history": model.get("history"),
        "view": cfg.get("data", {}).get("view", {}).get("_target_", "").rsplit(".", 1)[-1] or None,
        "prompt": (cfg.get("prompt") or {}).get("name"),
        "self_consistency": (cfg.get("pipeline") or {}).get("self_consistency"),
        "candidates": candidates_setting(cfg),
        "pseudo_selection": pseudo_selection_setting(cfg),
        **{switch: model.get(switch) for switch in HTC_SWITCHES},
    }


def candidates_setting(cfg: DictConfig) -> str | None:
    """Who proposes candidate intents in the LLM pipelines (retrieval + M_c, or retrieval alone)."""
    retrieval = (cfg.get("pipeline") or {}).get("retrieval") or {}
    candidates = retrieval.get("candidates") if hasattr(retrieval, "get") else None
    if not candidates:
        return None
    return candidates.get("source")


def pseudo_selection_setting(cfg: DictConfig) -> str | None:
    """What LARA-PL / CLARA select their model on: the pseudo-labelled valid split, plus single-turn valid queries."""
    pseudo_valid = (cfg.get("pipeline") or {}).get("pseudo_valid")
    if not pseudo_valid:
        return None
    return "pseudo+single_turn" if pseudo_valid.get("single_turn") else "pseudo"


def write_results(
    run_dir: str | Path,
    cfg: DictConfig,
    metrics: dict[str, float],
    test_size: int,
    started_at: float,
    extra: dict[str, Any] | None = None,
    supervision: Supervision | None = None,
) -> Path:
    """Write `results.json` atomically into `run_dir` and return its path.

    `supervision` (the gold label sources the run read, see mtic/eval/supervision.py) is recorded with the
    run's `label_free` claim; every pipeline passes it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "experiment": cfg.get("experiment"),
        "market": cfg.market.name,
        "languages": list(cfg.market.languages),
        "method": cfg.get("method"),
        **ablation_settings(cfg),
        "seed": cfg.get("seed"),
        "label_free": bool(cfg.get("label_free", False)),
        "supervision": supervision.as_record() if supervision is not None else None,
        "test_size": test_size,
        "metrics": {k: round(float(v), 6) for k, v in metrics.items()},
        "wall_time_s": round(time.time() - started_at, 2),
        "host": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "config": redact(OmegaConf.to_container(cfg, resolve=True)),
    }
    if extra:
        record.update(extra)
    path = run_dir / RESULTS_FILE
    _write_atomically(path, record)
    return path


def update_results(run_dir: str | Path, extra: dict[str, Any], metrics: dict[str, float] | None = None) -> None:
    """Add fields (and metrics) to an existing `results.json` of `run_dir`, atomically; no file, no change."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        return
    record = json.loads(path.read_text(encoding="utf-8"))
    record.update(extra)
    record.setdefault("metrics", {}).update(metrics or {})
    _write_atomically(path, record)


def _write_atomically(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    os.replace(tmp, path)
