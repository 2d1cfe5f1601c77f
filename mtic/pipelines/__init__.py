"""Pipelines: what `run.py` runs, selected by the `pipeline` config group."""
from __future__ import annotations

import logging
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from mtic.config_resolvers import market_choice, market_line
from mtic.config_schema import validate_config

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> Any:
    """Validate the composed config and run the pipeline it names (`pipeline._target_`)."""
    validate_config(cfg)
    log.info(market_line(market_choice(cfg)))
    pipeline = instantiate(cfg.pipeline, _partial_=True, _recursive_=False)  # nested nodes: built where used
    return pipeline(cfg)
