"""Pipelines: what `run.py` runs, selected by the `pipeline` config group."""
from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from mtic.config_schema import validate_config


def run(cfg: DictConfig) -> Any:
    """Validate the composed config and run the pipeline it names (`pipeline._target_`)."""
    validate_config(cfg)
    pipeline = instantiate(cfg.pipeline, _partial_=True, _recursive_=False)  # nested nodes: built where used
    return pipeline(cfg)
