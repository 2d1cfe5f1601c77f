"""The same run records as `results.json`, through W&B: attach them to a run, read them back for `compare`."""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SUMMARY_KEY = "mtic_results"
_KEPT_OUT = ("config", "_path")  # the config is already the run's W&B config; paths are local


def summary_record(results_file: str | Path) -> dict[str, Any]:
    """The part of a results.json record that goes into a W&B run summary (everything but the config)."""
    record = json.loads(Path(results_file).read_text(encoding="utf-8"))
    return {k: v for k, v in record.items() if k not in _KEPT_OUT}


def attach_to_wandb(loggers: Iterable[Any], results_file: str | Path) -> int:
    """Store the run record in the summary of every W&B logger's run; returns how many runs got it."""
    runs = [logger.experiment for logger in loggers if type(logger).__name__ == "WandbLogger"]
    if runs:
        record = summary_record(results_file)  # read once, whatever the number of W&B loggers
        for run in runs:
            run.summary[SUMMARY_KEY] = record
    return len(runs)


def _plain(value: Any) -> Any:
    """W&B summary values come back as its own mapping types; turn them into plain dicts/lists."""
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def record_from_wandb_run(run: Any) -> dict[str, Any] | None:
    """One compare record from a W&B API run, or None when the run carries no mtic record (e.g. it crashed)."""
    summary = _plain(run.summary)
    record = summary.get(SUMMARY_KEY)
    if not isinstance(record, dict) or "market" not in record:
        return None
    record = dict(record)
    path = getattr(run, "path", None)
    record["_path"] = "wandb:" + ("/".join(path) if path else str(getattr(run, "id", "?")))
    return record


def records_from_wandb(project_path: str, api: Any = None, filters: dict[str, Any] | None = None,
                       max_runs: int = 10_000) -> list[dict[str, Any]]:
    """Every mtic record of the finished runs of `ENTITY/PROJECT` (W&B API key from the environment)."""
    if project_path.count("/") != 1 or not all(project_path.split("/")):
        raise ValueError(f"--wandb expects ENTITY/PROJECT, got {project_path!r}")
    if api is None:
        import wandb

        api = wandb.Api(timeout=60)
    records = []
    for index, run in enumerate(api.runs(project_path, filters=filters or {})):
        if index >= max_runs:
            break
        record = record_from_wandb_run(run)
        if record is not None:
            records.append(record)
    return records
