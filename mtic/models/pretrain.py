"""Domain-adaptive continued pre-training (the paper's Domain-Llama2): the plain LM objective on chat logs."""
from __future__ import annotations

from mtic.inputs.encoding import LanguageModelEncoder
from mtic.models.causal_lm import LoraCausalLM


class DomainPretrainLM(LoraCausalLM):
    """LoRA on a causal LM trained on the bundle's queries; merge it afterwards and symbol-tune from it."""

    def __init__(
        self,
        backbone: str,
        cache_dir: str | None = None,
        dtype: str = "float32",
        lora: dict | None = None,
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.05,
        max_length: int = 256,
    ) -> None:
        super().__init__(backbone, cache_dir, dtype, lora, lr, weight_decay, warmup_ratio)
        self.save_hyperparameters()

    def build_encoder(self) -> LanguageModelEncoder:
        return LanguageModelEncoder(self.tokenizer, max_length=self.hparams.max_length)
