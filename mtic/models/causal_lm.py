"""A LoRA-wrapped causal LM as a LightningModule: loss only where labels are, cosine schedule, small checkpoints."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from mtic.hub.registry import load_causal_lm
from mtic.inputs.encoding import IGNORE_INDEX
from mtic.models.lora import save_merged, wrap_lora


class LoraCausalLM(pl.LightningModule):
    """Base of symbol tuning and domain-adaptive pre-training.

    The LM head runs only on positions that carry loss, so the vocabulary projection (the main cost for
    262k-token vocabularies) never sees prompt tokens. Checkpoints hold only the trainable (LoRA) weights.
    """

    def __init__(
        self,
        backbone: str,
        cache_dir: str | None = None,
        dtype: str = "float32",
        lora: dict | None = None,
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.05,
    ) -> None:
        super().__init__()
        base, self.tokenizer = load_causal_lm(backbone, cache_dir=cache_dir, dtype=getattr(torch, dtype))
        self.model = wrap_lora(base, lora)

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.tokenizer.eos_token_id

    def lm_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean next-token cross-entropy over positions whose label is not IGNORE_INDEX."""
        base = self.model.get_base_model()
        hidden = base.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        targets = batch["labels"][:, 1:]
        keep = targets != IGNORE_INDEX
        logits = base.get_output_embeddings()(hidden[:, :-1][keep])
        softcap = getattr(base.config, "final_logit_softcapping", None)
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return F.cross_entropy(logits.float(), targets[keep])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.lm_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0], sync_dist=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.log("val/loss", self.lm_loss(batch), prog_bar=True, batch_size=batch["input_ids"].shape[0],
                 sync_dist=True)

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = max(1, int(total * self.hparams.warmup_ratio))

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep only the trainable (LoRA) weights: checkpoints stay megabytes, not the whole base model."""
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """LoRA-only checkpoints load on top of the freshly loaded base model; every saved key must fit."""
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        if result.unexpected_keys:
            raise RuntimeError(f"checkpoint keys that do not fit this model: {result.unexpected_keys[:5]}")
        return result

    def save_merged(self, out_dir: str | Path) -> Path:
        """LoRA merged into the base, saved as a plain HF model directory (servable by vLLM / LMDeploy)."""
        return save_merged(self.model, self.tokenizer, out_dir)
