"""LoRA wrapping and merging shared by symbol tuning and domain-adaptive pre-training."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model

DEFAULT_LORA: dict[str, Any] = {
    "r": 16,
    "alpha": 32,
    "dropout": 0.05,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "top_layers": None,
}


def wrap_lora(model: torch.nn.Module, lora: dict[str, Any] | None = None) -> PeftModel:
    """The causal LM with LoRA adapters on the configured modules; only the adapters train.

    `top_layers: k` puts adapters on the last k decoder layers only: backpropagation then stops at the lowest
    adapted layer, which cuts the backward pass roughly by the share of layers left out (a CPU-budget knob).
    """
    cfg = {**DEFAULT_LORA, **(lora or {})}
    unknown = set(cfg) - set(DEFAULT_LORA)
    if unknown:
        raise ValueError(f"unknown LoRA settings {sorted(unknown)}; allowed: {sorted(DEFAULT_LORA)}")
    config = LoraConfig(
        r=int(cfg["r"]),
        lora_alpha=int(cfg["alpha"]),
        lora_dropout=float(cfg["dropout"]),
        target_modules=list(cfg["target_modules"]),
        task_type="CAUSAL_LM",
        layers_to_transform=_top_layers(model, cfg["top_layers"]),
    )
    return get_peft_model(model, config)


def _top_layers(model: torch.nn.Module, top: int | None) -> list[int] | None:
    if top is None:
        return None
    if int(top) < 1:
        raise ValueError(f"lora.top_layers must be >= 1 (or null for every layer), got {top}")
    total = int(model.config.num_hidden_layers)
    return list(range(max(0, total - int(top)), total))  # a model with fewer layers adapts them all


def save_merged(peft_model: PeftModel, tokenizer: Any, out_dir: str | Path) -> Path:
    """Merge the adapters into the base weights and save a plain HF model directory (safetensors).

    The result loads with `AutoModelForCausalLM.from_pretrained` and can be served by vLLM or LMDeploy.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
