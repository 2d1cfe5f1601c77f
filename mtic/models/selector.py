"""The selective-concatenation baseline's selector: which history query, if any, helps classify the last one.

A cross-encoder of the same encoder family scores a (history query, last query) pair: encoder over the text pair
-> mean pooling -> linear -> logit of "this history query is about the same intent". `Selector(history, last)`
returns the index of the best-scoring history query when its probability reaches `threshold`, else None ("no
useful context"); it plugs into `SelectedConcatView(selector=...)`.

Training: `PairScorer` is a LightningModule (binary cross-entropy on pair batches, AdamW) fitted by a CPU
`pl.Trainer` on a `PairDataModule` (mtic/inputs/pairs.py: the pairs - labelled-session pairs or the single-turn
fallback - and why they do not flow through `MTICDataModule`). Positives are all same-intent history turns; recency
enters at selection time (ties go to the most recent query), and `gold_choice` - the most recent same-intent turn -
is what the view would ideally receive. results.json records which pair source was used.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from mtic.data.bundle import Bundle
from mtic.data.schema import Session
from mtic.hub.registry import load_encoder
from mtic.inputs.pairs import Pair, PairDataModule, session_pairs, single_turn_pairs

__all__ = ["Pair", "PairScorer", "Selector", "gold_choice", "load_selector", "selection_accuracy", "session_pairs",
           "single_turn_pairs", "train_selector"]  # the pair builders live in mtic.inputs.pairs, named here too

SELECTOR_DIR = "selector"  # where a run keeps its trained selector (<run dir>/selector), read by export and serving
CONFIG_FILE = "selector.json"
HEAD_FILE = "head.safetensors"
ENCODER_DIR = "encoder"
_LOADED: dict[str, Selector] = {}  # selectors trained in this process, by the path they were saved to


def gold_choice(session: Session) -> int | None:
    """Index of the most recent history turn with the last turn's intent (None: no such turn)."""
    target = session.target
    for k in range(len(session.turns) - 2, -1, -1):
        if target is not None and session.turns[k].intent == target:
            return k
    return None


class PairScorer(pl.LightningModule):
    """Cross-encoder: (history, last) token ids -> one logit; trained on pair batches (`PairDataModule`) with
    binary cross-entropy and AdamW (encoder at `lr`, head at max(lr, 1e-3), weight decay `weight_decay`)."""

    def __init__(self, encoder: nn.Module, lr: float = 5e-5, weight_decay: float = 0.01) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(int(encoder.config.hidden_size), 1)
        self.lr, self.weight_decay = lr, weight_decay
        self.losses: list[float] = []  # every training step's loss, in order (train_selector's summary)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(pooled).squeeze(-1)

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch["input_ids"], batch["attention_mask"])
        loss = F.binary_cross_entropy_with_logits(logits, batch["labels"].to(logits.dtype))
        self.losses.append(float(loss.detach()))
        self.log("selector/train_loss", loss, batch_size=len(logits))
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW([
            {"params": self.encoder.parameters(), "lr": self.lr},
            {"params": self.head.parameters(), "lr": max(self.lr, 1e-3)},
        ], lr=self.lr, weight_decay=self.weight_decay)


class Selector:
    """`selector(history, last) -> index | None` backed by a `PairScorer`. The best history query and its
    probability are cached per input; the threshold applies at call time, so changing it is always honoured."""

    def __init__(self, scorer: PairScorer, tokenizer: Any, threshold: float = 0.5, max_length: int = 64,
                 text_prefix: str = "", cache_size: int = 100_000) -> None:
        self.scorer, self.tokenizer = scorer.eval(), tokenizer
        self.threshold, self.max_length, self.text_prefix = threshold, max_length, text_prefix
        self._cache: OrderedDict[tuple, tuple[int, float] | None] = OrderedDict()
        self.cache_size = cache_size

    def batch(self, histories: Sequence[str], lasts: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer([self.text_prefix + h for h in histories], list(lasts), padding=True, truncation=True,
                              max_length=self.max_length, return_tensors="pt")

    @torch.no_grad()
    def probabilities(self, history: Sequence[str], last: str) -> list[float]:
        """P(same intent) for every history query."""
        if not history:
            return []
        self.scorer.eval()
        enc = self.batch(history, [last] * len(history))
        return torch.sigmoid(self.scorer(enc["input_ids"], enc["attention_mask"])).tolist()

    def __call__(self, history: Sequence[str], last: str) -> int | None:
        key = (tuple(history), last)
        if key not in self._cache:
            probs = self.probabilities(history, last)
            best = max(reversed(range(len(probs))), key=lambda k: probs[k]) if probs else None  # ties: most recent
            self._cache[key] = None if best is None else (best, probs[best])
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        found = self._cache[key]
        return found[0] if found is not None and found[1] >= self.threshold else None

    def save(self, out_dir: str | Path) -> Path:
        """Encoder + tokenizer (HF folder), head weights (safetensors) and settings (JSON)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.scorer.encoder.save_pretrained(out / ENCODER_DIR, safe_serialization=True)
        self.tokenizer.save_pretrained(out / ENCODER_DIR)
        save_file({k: v.contiguous() for k, v in self.scorer.head.state_dict().items()}, str(out / HEAD_FILE))
        settings = {"threshold": self.threshold, "max_length": self.max_length, "text_prefix": self.text_prefix}
        (out / CONFIG_FILE).write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")
        _LOADED[str(out.resolve())] = self
        return out


def load_selector(path: str | Path, threshold: float | None = None) -> Selector:
    """A saved selector (the same object when it was trained in this process); `threshold` overrides the saved one."""
    key = str(Path(path).expanduser().resolve())
    selector = _LOADED.get(key)
    if selector is None:
        root = Path(key)
        if not (root / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{root}: no trained selector here ({CONFIG_FILE} missing)")
        settings = json.loads((root / CONFIG_FILE).read_text(encoding="utf-8"))
        encoder, tokenizer = load_encoder(str(root / ENCODER_DIR))
        scorer = PairScorer(encoder)
        scorer.head.load_state_dict(load_file(str(root / HEAD_FILE)))
        selector = Selector(scorer, tokenizer, **settings)
        _LOADED[key] = selector
    if threshold is not None:
        selector.threshold = float(threshold)
    return selector


def selection_accuracy(selector: Selector, sessions: Sequence[Session]) -> float | None:
    """Share of fully labelled prefixes with history where the selection is right: a history query with the last
    turn's intent, or None when no history turn has it."""
    hits = total = 0
    for session in sessions:
        for n in range(2, len(session.turns) + 1):
            prefix = session.prefix(n)
            if any(t.intent is None for t in prefix.turns):
                continue
            choice = selector(prefix.queries[:-1], prefix.last.text)
            hits += gold_choice(prefix) is None if choice is None else prefix.turns[choice].intent == prefix.target
            total += 1
    return hits / total if total else None


def train_selector(
    bundle: Bundle | str | Path,
    backbone: str,
    cache_dir: str | None = None,
    sessions: str = "train",
    epochs: int = 3,
    lr: float = 5e-5,
    batch_size: int = 32,
    max_pairs: int | None = 4000,
    holdout: float = 0.1,
    negatives: int = 1,
    threshold: float = 0.5,
    max_length: int = 64,
    text_prefix: str | None = None,
    seed: int = 0,
    weight_decay: float = 0.01,
    trainer: Mapping[str, Any] | None = None,
) -> tuple[Selector, dict[str, Any]]:
    """Train a selector on the bundle's labelled sessions (or the single-turn fallback); returns it + a summary.

    The pairs come from a `PairDataModule`; a `pl.Trainer` fits the `PairScorer` on CPU for `epochs` epochs with
    gradient-norm clipping at 1.0, no logger, checkpoint, progress bar or validation; `trainer` overrides any
    Trainer argument (e.g. a logger). `holdout` of the sessions is kept out of training to report the selection
    accuracy (`holdout_acc`).
    """
    data = PairDataModule(bundle, sessions, holdout, negatives, max_pairs, batch_size, seed)
    if text_prefix is None:
        from mtic.models.htc import default_text_prefix

        text_prefix = default_text_prefix(backbone, cache_dir)
    encoder, tokenizer = load_encoder(backbone, cache_dir)
    torch.manual_seed(seed)
    scorer = PairScorer(encoder, lr=lr, weight_decay=weight_decay)
    selector = Selector(scorer, tokenizer, threshold, max_length, text_prefix)
    data.set_tokenizer(selector.batch)
    settings: dict[str, Any] = {
        "accelerator": "cpu", "devices": 1, "max_epochs": epochs, "logger": False, "enable_checkpointing": False,
        "enable_progress_bar": False, "enable_model_summary": False, "gradient_clip_val": 1.0,
        "gradient_clip_algorithm": "norm", "limit_val_batches": 0, "num_sanity_val_steps": 0,
    }
    settings.update(trainer or {})
    pl.Trainer(**settings).fit(scorer.train(), datamodule=data)
    scorer.eval()
    losses = scorer.losses
    summary = {
        "source": data.source, "pairs": len(data.pairs), "positives": int(sum(p.label for p in data.pairs)),
        "epochs": epochs, "first_loss": losses[0], "last_loss": sum(losses[-5:]) / len(losses[-5:]),
        "holdout_sessions": len(data.held), "holdout_acc": selection_accuracy(selector, data.held),
    }
    return selector, summary
