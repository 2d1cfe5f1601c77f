"""`mtic merge`: a LoRA checkpoint (symbol tuning or pre-training) merged into its base, saved as a plain model."""
from __future__ import annotations

from pathlib import Path

from mtic.hub.registry import load_causal_lm
from mtic.models.checkpoint_io import ArtifactError, read_checkpoint
from mtic.models.htc import INTENTS_KEY
from mtic.models.lora import save_merged, wrap_lora

MODEL_PREFIX = "model."


def merge_checkpoint(checkpoint: str | Path, out_dir: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Rebuild the base model named in the checkpoint's hyper-parameters, load the LoRA weights, merge, save.

    The result is a plain Hugging Face directory (safetensors) that vLLM, LMDeploy or transformers load as is.
    """
    state = read_checkpoint(checkpoint)  # missing / empty / corrupt: `<file>: <reason>`
    hparams = state.get("hyper_parameters") or {}
    if INTENTS_KEY in state:
        raise ArtifactError(checkpoint, "an HTC classifier checkpoint, not a LoRA one: there is nothing to merge; "
                                        "export it with `mtic export CKPT DIR`")
    if "backbone" not in hparams or "lora" not in hparams:
        raise ArtifactError(checkpoint, "not an mtic LoRA checkpoint (no 'backbone' / 'lora' hyper-parameters); "
                                        "mtic merge takes a symbol-tuning or pre-training checkpoint")
    model, tokenizer = load_causal_lm(hparams["backbone"], cache_dir=cache_dir or hparams.get("cache_dir"))
    peft_model = wrap_lora(model, hparams.get("lora"))
    weights = {k[len(MODEL_PREFIX) :]: v for k, v in state["state_dict"].items() if k.startswith(MODEL_PREFIX)}
    result = peft_model.load_state_dict(weights, strict=False)
    if result.unexpected_keys or not weights:
        raise ArtifactError(checkpoint, f"LoRA weights do not fit {hparams['backbone']}: {result.unexpected_keys[:3]}")
    return save_merged(peft_model, tokenizer, out_dir)
