"""The selective-concatenation baseline's selector: which history query, if any, helps classify the last one.

A cross-encoder of the same encoder family scores a (history query, last query) pair: encoder over the text pair
-> mean pooling -> linear -> logit of "this history query is about the same intent". `Selector(history, last)`
returns the index of the best-scoring history query when its probability reaches `threshold`, else None ("no
useful context"); it plugs into `SelectedConcatView(selector=...)`.

Training pairs:
- from labelled sessions (`sessions/train.jsonl`): for every labelled turn with history, each labelled history
  turn with the same intent is a positive and every other labelled history turn a negative (a turn whose intent
  no history turn shares teaches "none"); unlabelled history turns are skipped. All same-intent turns are
  positives because a pair scorer sees one history query at a time and cannot know whether a more recent one
  exists; recency enters at selection time (ties go to the most recent query), and `gold_choice` - the most
  recent same-intent turn - is what the view would ideally receive.
- fallback when no labelled multi-turn session exists: single-turn queries. Each query is paired with another
  query of the same intent (positive) and with `negatives` queries of other intents (negatives). This teaches
  intent similarity, not dialogue context, so it is weaker; results.json records which source was used.
"""
from __future__ import annotations

import json
import logging
import random
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from mtic.data.bundle import Bundle, read_bundle
from mtic.data.schema import Session, SingleTurnQuery
from mtic.hub.registry import load_encoder

log = logging.getLogger("mtic")
SELECTOR_DIR = "selector"  # where a run keeps its trained selector (<run dir>/selector), read by export and serving
CONFIG_FILE = "selector.json"
HEAD_FILE = "head.safetensors"
ENCODER_DIR = "encoder"
_LOADED: dict[str, Selector] = {}  # selectors trained in this process, by the path they were saved to


@dataclass(frozen=True)
class Pair:
    """One training pair: does `history` share the intent of `last`?"""

    history: str
    last: str
    label: float


def gold_choice(session: Session) -> int | None:
    """Index of the most recent history turn with the last turn's intent (None: no such turn)."""
    target = session.target
    for k in range(len(session.turns) - 2, -1, -1):
        if target is not None and session.turns[k].intent == target:
            return k
    return None


def session_pairs(sessions: Sequence[Session]) -> list[Pair]:
    """Pairs from every labelled turn with history (see module doc)."""
    pairs = []
    for session in sessions:
        for n in range(2, len(session.turns) + 1):
            prefix = session.prefix(n)
            if prefix.target is None:
                continue
            for turn in prefix.turns[:-1]:
                if turn.intent is not None:
                    pairs.append(Pair(turn.text, prefix.last.text, 1.0 if turn.intent == prefix.target else 0.0))
    return pairs


def single_turn_pairs(queries: Sequence[SingleTurnQuery], negatives: int = 1, seed: int = 0) -> list[Pair]:
    """Fallback pairs from single-turn queries: same intent = positive, other intents = negatives."""
    rng = random.Random(seed)
    by_intent: dict[str, list[str]] = defaultdict(list)
    for q in queries:
        by_intent[q.intent].append(q.text)
    intents = sorted(by_intent)
    pairs = []
    for q in queries:
        same = [t for t in by_intent[q.intent] if t != q.text]
        if same:
            pairs.append(Pair(rng.choice(same), q.text, 1.0))
        others = [i for i in intents if i != q.intent]
        for intent in rng.sample(others, min(negatives, len(others))):
            pairs.append(Pair(rng.choice(by_intent[intent]), q.text, 0.0))
    return pairs


class PairScorer(nn.Module):
    """Cross-encoder: (history, last) token ids -> one logit."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(int(encoder.config.hidden_size), 1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(pooled).squeeze(-1)


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
) -> tuple[Selector, dict[str, Any]]:
    """Train a selector on the bundle's labelled sessions (or the single-turn fallback); returns it + a summary.

    `holdout` of the sessions is kept out of training to report the selection accuracy (`holdout_acc`).
    """
    bundle = bundle if isinstance(bundle, Bundle) else read_bundle(bundle)
    rng = random.Random(seed)
    labelled = [s for s in bundle.sessions.get(sessions, []) if len(s.turns) > 1]
    rng.shuffle(labelled)
    n_hold = int(len(labelled) * holdout) if len(labelled) >= 10 else 0
    held, train_sessions = labelled[:n_hold], labelled[n_hold:]
    pairs, source = session_pairs(train_sessions), "sessions"
    if not any(p.label for p in pairs):
        pairs, source = single_turn_pairs(bundle.require_single_turn("train"), negatives, seed), "single_turn"
        log.warning("selector: no labelled multi-turn sessions in '%s'; training on single-turn pairs", sessions)
    if not pairs:
        raise ValueError("selector: no training pairs (the bundle needs labelled sessions or single-turn queries)")
    rng.shuffle(pairs)
    pairs = pairs[:max_pairs] if max_pairs else pairs
    if text_prefix is None:
        from mtic.models.htc import default_text_prefix

        text_prefix = default_text_prefix(backbone, cache_dir)
    encoder, tokenizer = load_encoder(backbone, cache_dir)
    torch.manual_seed(seed)
    scorer = PairScorer(encoder).train()
    selector = Selector(scorer, tokenizer, threshold, max_length, text_prefix)
    optimizer = torch.optim.AdamW([
        {"params": scorer.encoder.parameters(), "lr": lr},
        {"params": scorer.head.parameters(), "lr": max(lr, 1e-3)},
    ])
    losses = []
    for _ in range(epochs):
        rng.shuffle(pairs)
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            enc = selector.batch([p.history for p in chunk], [p.last for p in chunk])
            logits = scorer(enc["input_ids"], enc["attention_mask"])
            loss = F.binary_cross_entropy_with_logits(logits, torch.tensor([p.label for p in chunk]))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(scorer.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
    scorer.eval()
    summary = {
        "source": source, "pairs": len(pairs), "positives": int(sum(p.label for p in pairs)), "epochs": epochs,
        "first_loss": losses[0], "last_loss": sum(losses[-5:]) / len(losses[-5:]),
        "holdout_sessions": len(held), "holdout_acc": selection_accuracy(selector, held),
    }
    return selector, summary
