"""What every pipeline leaves in its run directory: `results.json` (everything the comparison tables need, no
secrets) and `predictions.jsonl` (one row per test session), and the console line that ends a run."""
from __future__ import annotations

import json
import os
import platform
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mtic.config_resolvers import market_choice
from mtic.eval.distributed import is_main_process
from mtic.eval.supervision import Supervision

RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.jsonl"
SECRET_KEY = re.compile(r"(api[_-]?key|secret|passw(or)?d|credential|(^|_)(auth_|access_|hf_)?token$)", re.IGNORECASE)


MASK = "***"
URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s?#'\"]+)@")
SECRET_PARAM = re.compile(
    r"(?P<name>[?&;](?:[a-z0-9_.-]*?(?:api[_-]?key|secret|passw(?:or)?d|credential|token|signature)|key|sig|code|auth)=)"
    r"(?P<value>[^&#\s'\"]+)", re.IGNORECASE)
# API-key-shaped tokens (sk-..., hf_..., ghp_...): 20+ characters with a digit and a capital (model names have neither)
SECRET_TOKEN = re.compile(r"\b(?:sk|pk|rk|hf|ghp|gho|ghs|xox[bpa])[-_](?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Z])"
                          r"[A-Za-z0-9_-]{20,}")


def redact_text(text: str) -> str:
    """`text` with URL credentials (`scheme://user:pass@`), secret query parameters (`?api_key=`, `&token=`,
    `&sig=` ...) and API-key-shaped tokens (`sk-...`, `hf_...`) masked as '***'."""
    text = URL_USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = SECRET_PARAM.sub(lambda m: f"{m['name']}{MASK}", text)
    return SECRET_TOKEN.sub(MASK, text)


def _secret_key(key: object) -> bool:
    """A secret-looking key; `*_env` keys name an environment variable (api_key_env: OPENAI_API_KEY), not a secret."""
    return bool(SECRET_KEY.search(str(key))) and not str(key).lower().endswith("_env")


def redact(value: Any) -> Any:
    """Copy of a nested config with the value of every secret-looking key (api_key, token, password...) as '***',
    and credentials inside every string value (URL userinfo, secret query parameters, key-shaped tokens) masked."""
    if isinstance(value, dict):
        return {k: MASK if _secret_key(k) and v else redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def secret_override(override: str) -> str | None:
    """Why a command-line override (`key=value`, `+key=value`, `++key=value`) carries a secret, or None."""
    key, eq, value = override.partition("=")
    if not eq or not value.strip() or value.strip() in ("null", "~", "''", '""'):
        return None
    name = key.lstrip("+~").rsplit(".", 1)[-1]
    if _secret_key(name) and "${" not in value:
        return f"{key.lstrip('+~')} looks like a secret"
    if redact_text(value) != value:
        return f"the value of {key.lstrip('+~')} holds credentials"
    return None


def redact_yaml_file(path: str | Path) -> bool:
    """Rewrite a YAML file (Hydra's .hydra/config.yaml, overrides.yaml, hydra.yaml) with `redact` applied;
    untouched (and False) when there is nothing to mask."""
    import yaml

    path = Path(path)
    if not path.is_file():
        return False
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    clean = redact(data)
    if clean == data:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(clean, sort_keys=False, allow_unicode=True), encoding="utf-8")
    os.replace(tmp, path)
    return True


class RedactingFilter:
    """A logging filter that masks credentials (`redact_text`) in every record's rendered message."""

    def filter(self, record: Any) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is logging's business, not ours
            return True
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


_FILTER = RedactingFilter()


def redact_logs(*names: str) -> None:
    """Mask credentials in the records of the loggers `names` (e.g. "httpx", "openai"; "" = root) and in
    everything reaching the root logger's handlers (Hydra's run.log and console)."""
    import logging

    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    for handler in logging.getLogger().handlers:  # records of other loggers propagate to these
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)


HTC_SWITCHES = ("global_head", "local_chain", "label_attention")  # the classifier's ablation switches


def ablation_settings(cfg: DictConfig) -> dict[str, Any]:
    """The settings the paper's tables vary, read from the composed config."""
    model = cfg.get("model", {}) or {}
    labels = cfg.get("labels", {}) or {}
    return {
        "target": labels.get("target"),
        "label_choice": label_choice_setting(labels),
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
        "htc_recipe": None if model.get("freeze_encoder") is None else ("fast" if model.get("freeze_encoder") else "paper"),
    }


def label_choice_setting(labels: Any) -> str | None:
    """How compressed labels were chosen: `curated` (forced) or the proposers the objective chose among."""
    if labels.get("target") != "compressed":
        return None
    if labels.get("force"):
        return str(labels.get("force"))
    return "objective:" + "+".join(str(p) for p in labels.get("proposers") or [])


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


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far, in MB (None where the platform does not report it)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux, bytes on macOS
    return round(kb / (1024 * 1024 if platform.system() == "Darwin" else 1024), 1)


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
    run's `label_free` claim; every pipeline passes it. Under DDP only rank 0 writes (the path is returned on
    every rank)."""
    run_dir = Path(run_dir)
    path = run_dir / RESULTS_FILE
    if not is_main_process():
        return path
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "experiment": cfg.get("experiment"),
        "market": cfg.market.name,
        "languages": list(cfg.market.languages),
        "market_choice": market_choice(cfg),
        "method": cfg.get("method"),
        **ablation_settings(cfg),
        "seed": cfg.get("seed"),
        "label_free": bool(cfg.get("label_free", False)),
        "supervision": supervision.as_record() if supervision is not None else None,
        "test_size": test_size,
        "metrics": {k: round(float(v), 6) for k, v in metrics.items()},
        "wall_time_s": round(time.time() - started_at, 2),
        "host": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "peak_rss_mb": peak_rss_mb(),
        "config": redact(OmegaConf.to_container(cfg, resolve=True)),
    }
    if extra:
        record.update(extra)
    _write_atomically(path, record)
    return path


def write_predictions(run_dir: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write `predictions.jsonl` into `run_dir` (one JSON row per test session: session_id, target, intent and
    what the method adds) and return its path. Under DDP only rank 0 writes."""
    run_dir = Path(run_dir)
    path = run_dir / PREDICTIONS_FILE
    if not is_main_process():
        return path
    run_dir.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def results_line(cfg: DictConfig, metrics: Mapping[str, float], test_size: int, path: Path) -> str:
    """The console summary that ends a run: its test metrics and where results.json is."""
    shown = ", ".join(f"{k.split('/', 1)[1]}={v:.4f}" for k, v in sorted(metrics.items()))
    return (f"[mtic] {cfg.experiment} market={cfg.market.name} n_test={test_size}: {shown or 'no test metrics'}\n"
            f"[mtic] results: {path}")


def update_results(run_dir: str | Path, extra: dict[str, Any], metrics: dict[str, float] | None = None) -> None:
    """Add fields (and metrics) to an existing `results.json` of `run_dir`, atomically; no file, no change (and
    none on the other ranks of a DDP run)."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file() or not is_main_process():
        return
    record = json.loads(path.read_text(encoding="utf-8"))
    record.update(extra)
    record.setdefault("metrics", {}).update(metrics or {})
    _write_atomically(path, record)


def _write_atomically(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    os.replace(tmp, path)
