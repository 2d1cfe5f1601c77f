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
}


def wrap_lora(model: torch.nn.Module, lora: dict[str, Any] | None = None) -> PeftModel:
    """The causal LM with LoRA adapters on the configured modules; only the adapters train."""
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
    )
    return get_peft_model(model, config)


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
