"""HTC: the small hierarchical text classifier of the paper (encoder + local heads + HiTIN global head).

Text vector H = mean pooling of the encoder's token states. Local heads, exactly as the paper:

    L_1 = H W_1 + b_1,   L_l = (H ⊕ L_{l-1}) W_l + b_l,   H_local^l = L_l W2_l + b2_l

(`local_chain=false` drops the ⊕ L_{l-1}). The global head (`global_head`, see hitin.py) gives H_global^l over
all label nodes; optional label attention (`label_attention`, see label_attention.py) adds token-level logits.
P_l = softmax(H_local^l + H_global^l [+ attention^l]); loss = sum over levels of the cross-entropy. The
prediction is the leaf class (`level_decoding=leaf`) or the root-to-leaf path with the highest summed
log-probability (`level_decoding=consistent`). The same module serves the single-turn / naive / selective baselines: only the view
of the data changes.

Optimisation: AdamW with two learning rates. The encoder gets `lr` (5e-6, the paper's value for BERT-size
encoders); the freshly initialised heads get `head_lr` (1e-3 by default): at 5e-6 randomly initialised heads
barely move in the few epochs a CPU run affords. Linear warm-up then linear decay.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from mtic.data.schema import Intent
from mtic.data.taxonomy import Taxonomy
from mtic.eval.distributed import EXAMPLE_INDEX
from mtic.eval.metrics import IntentMetrics
from mtic.hub.registry import load_encoder
from mtic.inputs.encoding import IGNORE_INDEX, ClassificationEncoder, PadCollator
from mtic.inputs.views import ViewExample
from mtic.models.coding_tree import taxonomy_coding_tree
from mtic.models.hitin import HiTINHead
from mtic.models.htc_constants import CONSISTENT, LEAF, LEVEL_DECODINGS
from mtic.models.label_attention import LabelAttention
from mtic.models.test_predictions import GatheredTestMetrics

INTENTS_KEY = "mtic_intents"  # the taxonomy, as plain JSON rows, inside every checkpoint


def level_decoding_of(hparams: Mapping[str, Any]) -> str:
    """The level decoding of an HTC's hyper-parameters: `level_decoding`, or `decoding` in checkpoints saved
    before the rename (leaf when neither is there)."""
    return str(hparams.get("level_decoding") or hparams.get("decoding") or LEAF)


def default_text_prefix(backbone: str, cache_dir: str | None = None) -> str:
    """"query: " for e5 encoders (their documented input prefix), "" otherwise."""
    from mtic.hub.registry import _prefixes, resolve_model

    return _prefixes(backbone, resolve_model(backbone, cache_dir)).get("query", "")


def mean_pool(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the token states where `mask` is 1."""
    weights = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def leaf_paths(taxonomy: Taxonomy) -> torch.Tensor:
    """(leaf classes, depth): the class id at every level of each last-level class, root first."""
    rows = []
    for leaf in range(taxonomy.num_classes[-1]):
        path, node = [leaf], leaf
        for level in range(taxonomy.depth - 1, 0, -1):
            node = taxonomy.parents[level][node]
            path.append(node)
        rows.append(path[::-1])
    return torch.tensor(rows, dtype=torch.long)


class LocalHeads(nn.Module):
    """The paper's chained per-level heads: L_l = (H ⊕ L_{l-1}) W_l + b_l, logits_l = L_l W2_l + b2_l."""

    def __init__(self, input_dim: int, num_classes: Sequence[int], hidden: int, chain: bool = True) -> None:
        super().__init__()
        self.chain = chain
        dims = [input_dim + (hidden if chain and level > 0 else 0) for level in range(len(num_classes))]
        self.hidden = nn.ModuleList(nn.Linear(d, hidden) for d in dims)
        self.out = nn.ModuleList(nn.Linear(hidden, c) for c in num_classes)

    def forward(self, h: torch.Tensor) -> list[torch.Tensor]:
        logits, prev = [], None
        for hidden, out in zip(self.hidden, self.out):
            state = hidden(h if prev is None or not self.chain else torch.cat([h, prev], dim=-1))
            logits.append(out(state))
            prev = state
        return logits


class HTC(GatheredTestMetrics, pl.LightningModule):
    """Hierarchical text classifier over a taxonomy of any depth (1 = flat) on a registry encoder."""

    def __init__(
        self,
        backbone: str,
        taxonomy: Taxonomy,
        cache_dir: str | None = None,
        global_head: bool = True,
        local_chain: bool = True,
        label_attention: bool = False,
        tree_height: int = 3,
        node_dim: int = 64,
        local_dim: int | None = None,
        attention_dim: int = 128,
        readout: str = "sum",
        dropout: float = 0.1,
        lr: float = 5e-6,
        head_lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.05,
        max_length: int = 128,
        text_prefix: str | None = None,
        level_decoding: str = LEAF,
        freeze_embeddings: bool = False,
        checkpoint_optimizer: bool = False,
        freeze_encoder: bool = False,
    ) -> None:
        super().__init__()
        if level_decoding not in LEVEL_DECODINGS:
            raise ValueError(f"level_decoding must be one of {LEVEL_DECODINGS}, got {level_decoding!r}")
        if text_prefix is None:
            text_prefix = default_text_prefix(backbone, cache_dir)
        self.save_hyperparameters(ignore=["taxonomy"])
        self.hparams.text_prefix = text_prefix
        self.taxonomy = taxonomy
        self.encoder, self.tokenizer = load_encoder(backbone, cache_dir)  # the tokenizer is never pickled
        self.encoder.train()  # the registry hands out eval-mode models; Lightning keeps module modes as found
        if freeze_embeddings:
            self.encoder.get_input_embeddings().requires_grad_(False)
        if freeze_encoder:  # pre-trained features: no backward through the encoder, no dropout in it, not saved
            self.encoder.requires_grad_(False)
        hidden = int(self.encoder.config.hidden_size)
        classes = taxonomy.num_classes
        self.dropout = nn.Dropout(dropout)
        self.local = LocalHeads(hidden, classes, local_dim or hidden, chain=local_chain)
        self.tree = taxonomy_coding_tree(taxonomy, tree_height) if global_head else None
        self.global_head = HiTINHead(hidden, classes, self.tree, node_dim, dropout, readout) if self.tree else None
        self.label_attention = LabelAttention(hidden, classes, attention_dim, dropout) if label_attention else None
        self.register_buffer("paths", leaf_paths(taxonomy), persistent=False)
        self.leaf_intents = taxonomy.leaf_intent_ids()
        self.metrics = IntentMetrics(taxonomy)
        self.test_outputs: list[dict[str, Any]] = []

    # -- data -------------------------------------------------------------------------------------
    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        for value in (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id):
            if value is not None:
                return int(value)
        return 0

    def build_encoder(self) -> ClassificationEncoder:
        """Text -> ids + per-level class ids (left truncation keeps the last query)."""
        return ClassificationEncoder(self.tokenizer, self.taxonomy, self.hparams.max_length, self.hparams.text_prefix)

    def build_test_encoder(self) -> ClassificationEncoder:
        """Test sessions are encoded as training ones (the classifier reads their ids)."""
        return self.build_encoder()

    # -- model ------------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        """Per-level logits [(batch, num_classes[l])], root level first."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.hparams.freeze_encoder):
            tokens = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        h = self.dropout(mean_pool(tokens, attention_mask))
        logits = self.local(h)
        if self.global_head is not None:
            logits = [a + b for a, b in zip(logits, self.global_head(h))]
        if self.label_attention is not None:
            logits = [a + b for a, b in zip(logits, self.label_attention(tokens, attention_mask))]
        return logits

    def loss(self, logits: list[torch.Tensor], level_labels: torch.Tensor) -> torch.Tensor:
        """Sum over levels of the mean cross-entropy (rows labelled IGNORE_INDEX do not count)."""
        total = logits[0].new_zeros(())
        for level, level_logits in enumerate(logits):
            gold = level_labels[:, level]
            if (gold != IGNORE_INDEX).any():
                total = total + F.cross_entropy(level_logits.float(), gold, ignore_index=IGNORE_INDEX)
        return total

    def decode(self, logits: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(leaf class, its probability) per row: argmax leaf, or the best root-to-leaf path (`consistent`)."""
        log_probs = [x.float().log_softmax(-1) for x in logits]
        if self.hparams.level_decoding == CONSISTENT:
            scores = sum(lp[:, self.paths[:, level]] for level, lp in enumerate(log_probs))
            leaf = scores.argmax(-1)
        else:
            leaf = log_probs[-1].argmax(-1)
        return leaf, log_probs[-1].gather(1, leaf[:, None]).squeeze(1).exp()

    # -- steps ------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch["input_ids"], batch["attention_mask"]), batch["level_labels"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0], sync_dist=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self(batch["input_ids"], batch["attention_mask"])
        labels = batch["level_labels"]
        size = batch["input_ids"].shape[0]
        self.log("val/loss", self.loss(logits, labels), prog_bar=True, batch_size=size, sync_dist=True)
        leaf, _ = self.decode(logits)
        keep = labels[:, -1] != IGNORE_INDEX
        if keep.any():
            acc = (leaf[keep] == labels[keep, -1]).float().mean()
            self.log("val/acc", acc, prog_bar=True, batch_size=int(keep.sum()), sync_dist=True)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        leaf, prob = self.decode(self(batch["input_ids"], batch["attention_mask"]))
        intents = [self.leaf_intents[i] for i in leaf.tolist()]
        self.add_test_rows(batch[EXAMPLE_INDEX], [
            {"session_id": sid, "target": t, "intent": p, "probability": round(float(q), 6)}
            for sid, t, p, q in zip(batch["session_id"], batch["target"], intents, prob.tolist())
        ])

    def score_test_rows(self, rows: list[dict[str, Any]]) -> None:
        """Accuracy over the rows with a gold intent (GatheredTestMetrics gathers them from every rank)."""
        scored = [r for r in rows if r["target"] is not None]
        if scored:
            self.metrics.update([r["intent"] for r in scored], [r["target"] for r in scored])

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        leaf, prob = self.decode(self(batch["input_ids"], batch["attention_mask"]))
        return [{"session_id": s, "intent": self.leaf_intents[i], "probability": float(q)}
                for s, i, q in zip(batch["session_id"], leaf.tolist(), prob.tolist())]

    # -- inference helpers ------------------------------------------------------------------------
    @torch.no_grad()
    def leaf_probabilities(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """(len(texts), leaf classes) probabilities, columns in `leaf_intents` order (model input = the text)."""
        encode, collate = self.build_encoder(), PadCollator(self.pad_token_id)
        was_training = self.training
        self.eval()
        out = []
        for start in range(0, len(texts), batch_size):
            batch = collate([encode(ViewExample(session_id=str(k), target=None, text=t))
                             for k, t in enumerate(texts[start : start + batch_size])])
            logits = self(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))
            out.append(logits[-1].float().softmax(-1).cpu())
        self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, len(self.leaf_intents))

    def train(self, mode: bool = True) -> HTC:
        """A frozen encoder stays in eval mode (deterministic features) while the heads train."""
        super().train(mode)
        if self.hparams.get("freeze_encoder"):
            self.encoder.eval()
        return self

    # -- optimisation -----------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            no_decay = param.ndim < 2 or "norm" in name.lower()
            groups.setdefault((name.startswith("encoder."), no_decay), []).append(param)
        hp = self.hparams
        params = [{"params": ps, "lr": hp.lr if enc else hp.head_lr, "weight_decay": 0.0 if nd else hp.weight_decay}
                  for (enc, nd), ps in groups.items()]
        optimizer = torch.optim.AdamW(params)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = max(1, int(total * hp.warmup_ratio))

        def schedule(step: int) -> float:
            return (step + 1) / warmup if step < warmup else max(0.0, (total - step) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- checkpoints ------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the taxonomy as plain JSON rows: a checkpoint alone rebuilds the model (no pickled objects)."""
        checkpoint[INTENTS_KEY] = [intent.to_json() for intent in self.taxonomy.intents]
        if not self.hparams.checkpoint_optimizer:  # weights only: 1/3 of the size; pipeline.resume starts afresh
            checkpoint.pop("optimizer_states", None)
            checkpoint.pop("lr_schedulers", None)
        frozen = self._frozen_names()  # e.g. frozen word embeddings: the registry's weights, not saved again
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k not in frozen}

    def _frozen_names(self) -> set[str]:
        return {name for name, param in self.named_parameters() if not param.requires_grad}

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Checkpoints may lack frozen parameters (they come from the registry); every other key must fit."""
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if k not in self._frozen_names()]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"checkpoint does not fit this model: missing {missing[:5]}, "
                               f"unexpected {result.unexpected_keys[:5]}")
        return result

    @classmethod
    def from_checkpoint(cls, path: str | Path, cache_dir: str | None = None, map_location: str = "cpu") -> HTC:
        """A trained HTC from a Lightning checkpoint (`weights_only` loading; the encoder comes from the registry)."""
        from mtic.models.checkpoint_io import read_checkpoint

        return cls.from_state(read_checkpoint(path, map_location), path, cache_dir)

    @classmethod
    def from_state(cls, checkpoint: dict[str, Any], path: str | Path, cache_dir: str | None = None) -> HTC:
        """A trained HTC from a loaded checkpoint dict (`path` names it in errors: `<path>: <reason>`)."""
        from mtic.models.checkpoint_io import ArtifactError, one_line

        if INTENTS_KEY not in checkpoint or "state_dict" not in checkpoint:
            kind = ("a LoRA checkpoint (merge it with `mtic merge`)" if "lora" in (checkpoint.get("hyper_parameters")
                    or {}) else "not an mtic HTC classifier checkpoint")
            raise ArtifactError(path, f"{kind}: it has no {INTENTS_KEY!r} taxonomy or no state_dict")
        try:
            intents = [Intent(r["id"], r["title"], tuple(r["path"]), r.get("title_en"), r.get("label"),
                              r.get("label_en")) for r in checkpoint[INTENTS_KEY]]
            hparams = dict(checkpoint["hyper_parameters"])
            hparams["level_decoding"] = level_decoding_of(hparams)  # checkpoints before the rename say `decoding`
            hparams.pop("decoding", None)
        except (KeyError, TypeError, ValueError) as err:
            raise ArtifactError(path, f"damaged HTC checkpoint: bad taxonomy or hyper-parameters "
                                      f"({type(err).__name__}: {one_line(err)})") from None
        if cache_dir is not None:
            hparams["cache_dir"] = cache_dir
        model = cls(taxonomy=Taxonomy.from_intents(intents), **hparams)
        try:
            model.load_state_dict(checkpoint["state_dict"])
        except (RuntimeError, TypeError, AttributeError) as err:
            raise ArtifactError(path, f"the weights do not fit the model they name ({one_line(err)})") from None
        return model.eval()
