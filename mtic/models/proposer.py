"""A local causal LM as a text proposer: a few short continuations of a prompt (label-compression candidates)."""
from __future__ import annotations

from pathlib import Path

import torch

from mtic.models.backbones import load_causal_lm


class LocalProposer:
    """`proposer(prompt) -> [candidate, ...]`: beam-search continuations cut at the first line break."""

    def __init__(self, backbone: str, cache_dir: str | Path | None = None, n: int = 3, max_new_tokens: int = 8) -> None:
        self.model, self.tokenizer = load_causal_lm(backbone, cache_dir=cache_dir)
        self.model.eval()
        self.n = n
        self.max_new_tokens = max_new_tokens

    @torch.no_grad()
    def __call__(self, prompt: str) -> list[str]:
        inputs = self.tokenizer(prompt, return_tensors="pt")
        out = self.model.generate(
            **inputs,
            num_beams=max(self.n, 2),
            num_return_sequences=self.n,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        )
        width = inputs["input_ids"].shape[1]
        texts = self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        return [t.strip().splitlines()[0].strip() for t in texts if t.strip()]
