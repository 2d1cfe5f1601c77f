"""Continued pre-training with the LM objective (`pipeline=pretrain`): the paper's Domain-Llama2 on the bundle's chat
logs, or its general-chat pre-training on a chat corpus (ShareGPT), merged before symbol tuning.

The model only owns the tokenizer and the maximum length (`build_encoder`); the data decides which tokens are
targets: every token of the bundle's logs (plain text), the assistant replies of a chat corpus
(mtic/inputs/corpus_datamodule.py renders its conversations with this encoder's tokenizer and length)."""
from __future__ import annotations

from mtic.inputs.encoding import LanguageModelEncoder
from mtic.models.causal_lm import LoraCausalLM


class DomainPretrainLM(LoraCausalLM):
    """LoRA on a causal LM trained on chat logs or a chat corpus; merge it afterwards and symbol-tune from it."""

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
