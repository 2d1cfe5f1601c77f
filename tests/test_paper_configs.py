"""The paper's symbol-tuning configs compose with the paper's recipe; the CPU recipe differs only where stated."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from mtic.inputs.chat import VICUNA_SYSTEM_PROMPT, ChatFormat, chat_format

CONF = Path(__file__).resolve().parents[1] / "conf"


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize("experiment, backbone", [("st_paper_llama2_7b", "meta-llama/Llama-2-7b-hf"),
                                                  ("st_paper_seallm_7b", "SeaLLMs/SeaLLM-7B-chat"),
                                                  ("st_paper_vicuna_7b", "lmsys/vicuna-7b-v1.5")])
def test_paper_recipe(experiment: str, backbone: str) -> None:
    cfg = _compose(f"+experiment={experiment}", "market=id")
    assert cfg.model.lr == pytest.approx(2e-5)
    assert cfg.trainer.max_epochs == 10
    assert list(cfg.model.lora.target_modules) == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert cfg.model.lora.top_layers is None  # adapters on every layer
    assert cfg.model.chat_format == "vicuna"
    assert cfg.trainer.accelerator == "gpu"
    assert cfg.backbone.name == backbone and cfg.market.name == "id"


def test_cpu_recipe_differs_where_the_readme_says() -> None:
    cfg = _compose("+experiment=st_sg")
    assert (cfg.model.lr, cfg.trainer.max_epochs, cfg.model.lora.top_layers) == (1e-3, 2, 12)
    assert cfg.model.chat_format is None and cfg.backbone.name == "smollm2-135m"


def test_chat_formats() -> None:
    assert chat_format(None) == ChatFormat() == chat_format("mtic")
    vicuna = chat_format("vicuna")
    assert vicuna.system_prompt == VICUNA_SYSTEM_PROMPT and vicuna.user_tag == "USER:"
    assert vicuna.answer_prefix == ChatFormat().answer_prefix  # the paper's answer phrase either way
    assert chat_format({"system_prompt": "S"}).system_prompt == "S"
    with pytest.raises(ValueError, match="unknown chat_format 'alpaca'"):
        chat_format("alpaca")


def test_htc_recipes() -> None:
    paper = _compose("+experiment=baseline_naive", "market=sg")
    assert (paper.model.freeze_encoder, paper.trainer.max_epochs, paper.callbacks.early_stopping.monitor) == \
        (False, 5, "val/loss")
    assert paper.model.lr == pytest.approx(5e-6) and paper.model.freeze_embeddings is True
    fast = _compose("+experiment=clara", "market=sg", "htc_recipe=fast")  # merged after the experiment's own values
    assert (fast.model.freeze_encoder, fast.trainer.max_epochs) == (True, 30)
    assert (fast.callbacks.checkpoint.monitor, fast.callbacks.checkpoint.mode) == ("val/acc", "max")
    assert (fast.callbacks.early_stopping.monitor, fast.callbacks.early_stopping.mode) == ("val/acc", "max")
