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


# --------------------------------------------------------------------------- every experiment x every group override
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml") if not p.stem.startswith("_"))


def _is_llm_pipeline(cfg) -> bool:
    from mtic.config_schema import LLM_PIPELINES

    return cfg.pipeline._target_ in LLM_PIPELINES


def _compose_group(experiment: str, group: str, choice: str, *more: str):
    """`group=choice` on the experiment; where the experiment has no such group Hydra stops in one line naming it,
    and the appended form (`+group=choice`) composes, to be refused by the config schema."""
    from hydra.errors import ConfigCompositionException

    try:
        return _compose(f"+experiment={experiment}", f"{group}={choice}", *more)
    except ConfigCompositionException as error:
        assert f"Could not override '{group}'" in str(error)
        return _compose(f"+experiment={experiment}", f"+{group}={choice}", *more)


def _label_reader(cfg):
    """The config node the run instantiates its label set from (None: the experiment reads no label text)."""
    return cfg.model.get("labels") if "labels" in cfg.model else cfg.pipeline.get("labels")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_market_override_reaches_the_run(experiment: str) -> None:
    from mtic.config_schema import validate_config

    cfg = _compose(f"+experiment={experiment}", "market=id")
    validate_config(cfg)
    if experiment != "pretrain_sg":  # pretrain_sg pins its market (its name says so)
        assert cfg.market.name == "id" and "id" in cfg.market.bundle


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_labels_override_reaches_the_label_set_or_fails_in_one_line(experiment: str) -> None:
    from mtic.config_schema import ConfigError, validate_config

    cfg = _compose(f"+experiment={experiment}", "labels=original")
    reader = _label_reader(cfg)
    if reader is None:
        with pytest.raises(ConfigError, match="'labels' is set but experiment"):
            validate_config(cfg)
        return
    validate_config(cfg)
    from hydra.utils import instantiate

    from mtic.data.schema import Intent
    from mtic.data.taxonomy import Taxonomy

    taxonomy = Taxonomy.from_intents([Intent(id="a", title="Track my parcel", path=("delivery", "track"))])
    labels = instantiate(reader, taxonomy=taxonomy)
    assert str(labels.kind) == "original" and labels.label_of("a") == "Track my parcel"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_prompt_override_reaches_the_template_or_fails_in_one_line(experiment: str) -> None:
    from hydra.utils import instantiate

    from mtic.config_schema import ConfigError, validate_config

    cfg = _compose_group(experiment, "prompt", "p_symbolic")
    if not _is_llm_pipeline(cfg):
        with pytest.raises(ConfigError, match="'prompt' is set but pipeline"):
            validate_config(cfg)
        return
    validate_config(cfg)
    template = instantiate(cfg.prompt)
    assert template.name == "p_symbolic" and template.symbolic


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_llm_override_reaches_the_backend_or_fails_in_one_line(experiment: str) -> None:
    from hydra.utils import instantiate

    from mtic.config_schema import ConfigError, validate_config

    cfg = _compose_group(experiment, "llm", "openai", "llm.model=my-served-model",
                         "llm.base_url=http://127.0.0.1:9/v1")
    if not _is_llm_pipeline(cfg):
        with pytest.raises(ConfigError, match="'llm' is set but pipeline"):
            validate_config(cfg)
        return
    validate_config(cfg)
    llm = instantiate(cfg.llm, cache=False)  # no request is sent by building it
    assert type(llm).__name__ == "OpenAILLM" and llm.model == "my-served-model"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_self_consistency_override_reaches_the_vote_or_fails_in_one_line(experiment: str) -> None:
    from hydra.errors import ConfigCompositionException

    overrides = (f"+experiment={experiment}", "pipeline.self_consistency=majority", "pipeline.sc_orders=5")
    try:
        cfg = _compose(*overrides)
    except ConfigCompositionException as error:  # a pipeline without an LLM vote has no such key
        assert "pipeline.self_consistency" in str(error)
        return
    from mtic.pipelines.clara import voting

    pipe = cfg.pipeline
    assert _is_llm_pipeline(cfg)
    assert voting(pipe.self_consistency, pipe.sc_orders, pipe.sc_seed)[:2] == (5, "majority")


# --------------------------------------------------------------------------- one vocabulary: renamed keys
@pytest.mark.parametrize(("decode", "mode"), [("score", "score"), ("greedy", "generate")])
def test_llm_decode_reaches_the_backend_mode(decode: str, mode: str) -> None:
    from mtic.clara.llm import build_llm

    cfg = _compose("+experiment=clara", "llm=openai", "llm.base_url=http://127.0.0.1:9/v1", f"llm.decode={decode}")
    llm = build_llm(**{**cfg.llm, "cache": False})  # score: the closed set goes to the server as guided choice
    assert llm.mode == mode and llm.choice_param == "structured_outputs"


@pytest.mark.parametrize(("override", "new"), [("+llm.mode=generate", "llm.decode"),
                                               ("+model.decoding=consistent", "model.level_decoding")])
def test_an_old_key_name_is_a_one_line_error_naming_the_new_one(override: str, new: str) -> None:
    from mtic.config_schema import ConfigError, renamed_key_message, validate_config

    experiment = "clara" if "llm" in override else "baseline_single"
    with pytest.raises(ConfigError, match=f"was renamed: use {new} ") as error:
        validate_config(_compose(f"+experiment={experiment}", override))
    assert "\n" not in str(error.value)
    assert new in renamed_key_message(override.lstrip("+").partition("=")[0])  # run.py: before Hydra composes


@pytest.mark.parametrize("group", ["llm", "prompt", "sweep", "launcher"])
def test_optional_groups_are_null_in_the_root_defaults_and_chosen_without_plus(group: str) -> None:
    from hydra.errors import ConfigCompositionException

    from mtic.config_schema import old_override_message

    assert _compose().get(group) is None
    option = {"llm": "openai", "prompt": "p", "sweep": "markets", "launcher": "joblib"}[group]
    with pytest.raises(ConfigCompositionException):
        _compose("+experiment=st_sg", f"+{group}={option}")
    assert old_override_message(f"+{group}={option}") == (f"'{group}' is in the root defaults (null until chosen): "
                                                          f"use {group}={option}, without '+'")
    assert old_override_message(f"{group}={option}") is None


def test_level_decoding_reaches_the_htc() -> None:
    from mtic.config_schema import ConfigError, validate_config

    cfg = _compose("+experiment=baseline_single", "model.level_decoding=consistent")
    validate_config(cfg)
    assert cfg.model.level_decoding == "consistent"
    with pytest.raises(ConfigError, match="model.level_decoding"):
        validate_config(_compose("+experiment=baseline_single", "model.level_decoding=beam"))


@pytest.mark.parametrize(("data", "view"), [("last_query", "LastQueryView"), ("naive_concat", "NaiveConcatView"),
                                            ("last_two", "LastKView"), ("selected_concat", "SelectedConcatView"),
                                            ("chat", "ChatView"), ("transcript", "TranscriptView")])
def test_data_is_the_base_plus_a_view_choice(data: str, view: str) -> None:
    """data=X is data/_base + data/view=X (+ X's budgets); data/view= swaps only the view."""
    cfg = _compose("+experiment=baseline_naive", f"data={data}")
    assert cfg.data._target_ == "mtic.inputs.datamodule.MTICDataModule"
    assert cfg.data.view._target_ == f"mtic.inputs.views.{view}"
    if data == "chat":
        assert (cfg.data.view.history_labels, cfg.data.eval_view.history_labels) == ("gold", "none")
    if data == "last_two":
        assert cfg.data.view.k == 2
    swapped = _compose("+experiment=baseline_naive", f"data={data}", "data/view=last_query")
    assert swapped.data.view == {"_target_": "mtic.inputs.views.LastQueryView"}
    assert {k: v for k, v in swapped.data.items() if k != "view"} == {k: v for k, v in cfg.data.items() if k != "view"}
