"""(history query, last query) pairs for the selective-concatenation selector, and the LightningDataModule serving them.

Pairs do not go through `MTICDataModule`: that module serves one example per (prefix of a) session - a view's
text with an intent index, encoded by a classifier's `Encoder` - while the selector's examples are several text
*pairs* per prefix (one per labelled history turn) with a binary same-intent label, built with their own holdout
and single-turn fallback, and tokenised as a text pair. `PairDataModule` is the same kind of object for them: it
reads the bundle, builds the pairs up front, and the model installs its tokenisation (`set_tokenizer`).

Training pairs:
- from labelled sessions (`sessions/<split>.jsonl`): for every labelled turn with history, each labelled history
  turn with the same intent is a positive and every other labelled history turn a negative (a turn whose intent
  no history turn shares teaches "none"); unlabelled history turns are skipped. All same-intent turns are
  positives because a pair scorer sees one history query at a time and cannot know whether a more recent one
  exists; recency enters at selection time.
- fallback when no labelled multi-turn session exists: single-turn queries. Each query is paired with another
  query of the same intent (positive) and with `negatives` queries of other intents (negatives).
"""
from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from mtic.data.bundle import Bundle, read_bundle
from mtic.data.schema import Session, SingleTurnQuery

log = logging.getLogger("mtic")
SESSIONS_SOURCE = "sessions"        # summary `source`: pairs from labelled sessions
SINGLE_TURN_SOURCE = "single_turn"  # summary `source`: the single-turn fallback
PairTokenizer = Callable[[Sequence[str], Sequence[str]], Mapping[str, torch.Tensor]]


@dataclass(frozen=True)
class Pair:
    """One training pair: does `history` share the intent of `last`?"""

    history: str
    last: str
    label: float


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


class PairDataModule(pl.LightningDataModule):
    """Selector training pairs from a bundle, built once at construction (errors surface before a model loads).

    `holdout` of the labelled multi-turn sessions (when there are at least 10) is kept out of the pairs
    (`held`: the caller reports the selection accuracy on them); `source` says where the pairs came from
    (`sessions` or the `single_turn` fallback); at most `max_pairs` pairs are kept (seeded shuffle). The model
    installs its tokenisation with `set_tokenizer(batch)`, `batch(histories, lasts) -> {input_ids,
    attention_mask}`; training batches add `labels` (float). Batches are shuffled each epoch from `seed`.
    """

    def __init__(self, bundle: Bundle | str | Path, sessions: str = "train", holdout: float = 0.1, negatives: int = 1,
                 max_pairs: int | None = 4000, batch_size: int = 32, seed: int = 0) -> None:
        super().__init__()
        self.bundle = bundle if isinstance(bundle, Bundle) else read_bundle(bundle)
        self.batch_size, self.seed = batch_size, seed
        rng = random.Random(seed)
        labelled = [s for s in self.bundle.sessions.get(sessions, []) if len(s.turns) > 1]
        rng.shuffle(labelled)
        n_hold = int(len(labelled) * holdout) if len(labelled) >= 10 else 0
        self.held: list[Session] = labelled[:n_hold]
        pairs, self.source = session_pairs(labelled[n_hold:]), SESSIONS_SOURCE
        if not any(p.label for p in pairs):
            pairs = single_turn_pairs(self.bundle.require_single_turn("train"), negatives, seed)
            self.source = SINGLE_TURN_SOURCE
            log.warning("selector: no labelled multi-turn sessions in '%s'; training on single-turn pairs", sessions)
        if not pairs:
            raise ValueError("selector: no training pairs (the bundle needs labelled sessions or single-turn queries)")
        rng.shuffle(pairs)
        self.pairs: list[Pair] = pairs[:max_pairs] if max_pairs else pairs
        self.tokenize: PairTokenizer | None = None

    def set_tokenizer(self, batch: PairTokenizer) -> None:
        """Install the model's pair tokenisation."""
        self.tokenize = batch

    def collate(self, chunk: Sequence[Pair]) -> dict[str, torch.Tensor]:
        if self.tokenize is None:
            raise RuntimeError("call set_tokenizer(model pair tokenisation) before using the datamodule")
        enc = self.tokenize([p.history for p in chunk], [p.last for p in chunk])
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                "labels": torch.tensor([p.label for p in chunk], dtype=torch.float32)}

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.pairs, batch_size=self.batch_size, shuffle=True, collate_fn=self.collate,  # type: ignore[arg-type]
                          generator=torch.Generator().manual_seed(self.seed))
