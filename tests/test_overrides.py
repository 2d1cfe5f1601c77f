"""A group override a user would try reaches the object that runs (or fails with one line): never ignored."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

CONF = Path(__file__).resolve().parents[1] / "conf"
HTC_EXPERIMENTS = ["baseline_single", "baseline_naive", "baseline_select", "baseline_select_gold", "htc_supervised",
                   "clara", "lara_pl", "lara"]


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))

    return cfg


@pytest.mark.parametrize("experiment", HTC_EXPERIMENTS)
@pytest.mark.parametrize(("overrides", "encoder"), [([], "minilm-l6"), (["backbone=e5-small"], "e5-small"),
                                                    (["market=id"], "e5-small"),
                                                    (["market=id", "backbone=minilm-l6"], "minilm-l6")])
def test_backbone_override_drives_the_htc_encoder(experiment: str, overrides: list[str], encoder: str) -> None:
    cfg = _compose(f"+experiment={experiment}", *overrides)
    assert cfg.model.backbone == encoder and cfg.backbone.name == encoder  # what trains is what results.json says


@pytest.mark.parametrize("experiment", ["clara", "lara_pl"])
def test_self_consistency_override_reaches_the_pipeline(experiment: str) -> None:
    cfg = _compose(f"+experiment={experiment}", "pipeline.self_consistency=majority", "pipeline.sc_orders=5")
    assert cfg.pipeline._target_ == "mtic.pipelines.clara.clara"
    assert (cfg.pipeline.self_consistency, cfg.pipeline.sc_orders) == ("majority", 5)


@pytest.mark.parametrize("experiment", ["clara", "lara", "lara_pl"])
def test_candidate_proposer_is_on_by_default_and_can_be_switched_off(experiment: str) -> None:
    assert _compose(f"+experiment={experiment}").pipeline.retrieval.candidates.source == "single_turn_htc"
    off = _compose(f"+experiment={experiment}", "pipeline.retrieval.candidates.source=none")
    assert off.pipeline.retrieval.candidates.source == "none"
