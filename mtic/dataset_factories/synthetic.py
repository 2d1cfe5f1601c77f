"""Synthetic bundles of any size, for scale tests and cost curves (issue 23): valid by construction and seeded.

`write_synthetic_bundle(out_dir, n_sessions, n_queries, n_intents=100, seed=0)` writes:
- `n_intents` intents on 3-level paths (`Domain d > Topic t > Intent i`, 25 intents a domain, 5 a topic);
- `n_queries` single-turn queries, about 90 % train and 10 % valid;
- `n_sessions` sessions of 1-4 turns drawn for the splits train / unlabeled / valid / test with probabilities
  0.60 / 0.30 / 0.05 / 0.05 (a split that draws no session has no file). A labelled session carries an intent on
  every turn; a follow-up turn keeps the previous turn's intent with probability 0.8. Unlabelled sessions carry
  none. Session ids are unique across the bundle (`<split>-<k>`).
A text is 2-3 of its intent's 8 keywords followed by 3-6 words of a shared 2000-word vocabulary.

Guarantee: the same arguments write the same bytes; rows are drawn and written CHUNK at a time, so memory stays
bounded at any size (a 1 M-session bundle is about 150 MB on disk).
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import yaml

from mtic.data.bundle import BUNDLE_FILE, INTENTS_FILE, SESSIONS_DIR, SINGLE_TURN_FILE, write_jsonl
from mtic.data.schema import SESSION_SPLITS

CHUNK = 50_000
KEYWORDS = 8
VOCABULARY = 2000
MAX_TURNS = 4
STAY_PROBABILITY = 0.8
VALID_QUERY_SHARE = 0.1
SESSION_SPLIT_SHARES = {"train": 0.60, "unlabeled": 0.30, "valid": 0.05, "test": 0.05}


def intent_ids(n_intents: int) -> list[str]:
    return [f"intent{i:04d}" for i in range(n_intents)]


def intent_rows(n_intents: int) -> Iterator[dict]:
    for i, intent_id in enumerate(intent_ids(n_intents)):
        path = [f"Domain {i // 25}", f"Topic {i // 5}", f"Intent {i}"]
        yield {"id": intent_id, "title": f"Ask about intent {i}", "path": path, "label": path[-1]}


class TextDrawer:
    """Texts of given intents: keywords of the intent, then common words."""

    def __init__(self, n_intents: int, rng: np.random.Generator) -> None:
        self.rng = rng
        self.keywords = np.array([[f"k{i}x{j}" for j in range(KEYWORDS)] for i in range(n_intents)])
        self.vocabulary = np.array([f"w{j}" for j in range(VOCABULARY)])

    def __call__(self, intents: np.ndarray) -> list[str]:
        n = len(intents)
        own = self.keywords[intents[:, None], self.rng.integers(0, KEYWORDS, size=(n, 3))]
        common = self.vocabulary[self.rng.integers(0, VOCABULARY, size=(n, 6))]
        n_own, n_common = self.rng.integers(2, 4, size=n), self.rng.integers(3, 7, size=n)
        return [" ".join([*o[:a], *c[:b]]) for o, c, a, b in zip(own, common, n_own, n_common)]


def query_rows(n_queries: int, n_intents: int, rng: np.random.Generator) -> Iterator[dict]:
    ids, draw = intent_ids(n_intents), TextDrawer(n_intents, rng)
    for start in range(0, n_queries, CHUNK):
        n = min(CHUNK, n_queries - start)
        intents = rng.integers(0, n_intents, size=n)
        valid = rng.random(n) < VALID_QUERY_SHARE
        for text, intent, is_valid in zip(draw(intents), intents.tolist(), valid.tolist()):
            yield {"text": text, "intent": ids[intent], "split": "valid" if is_valid else "train"}


def session_intents(lengths: np.ndarray, n_intents: int, rng: np.random.Generator) -> np.ndarray:
    """One intent per turn: a session's first turn draws uniformly, a later one stays with STAY_PROBABILITY."""
    intents = rng.integers(0, n_intents, size=int(lengths.sum()))
    stays = rng.random(len(intents)) < STAY_PROBABILITY
    stays[np.concatenate([[0], np.cumsum(lengths)[:-1]])] = False
    for k in np.flatnonzero(stays).tolist():  # in order: a run of stays carries the intent it started from
        intents[k] = intents[k - 1]
    return intents


def session_rows(split: str, n_sessions: int, n_intents: int, rng: np.random.Generator) -> Iterator[dict]:
    ids, draw, labelled = intent_ids(n_intents), TextDrawer(n_intents, rng), split != "unlabeled"
    for start in range(0, n_sessions, CHUNK):
        lengths = rng.integers(1, MAX_TURNS + 1, size=min(CHUNK, n_sessions - start))
        intents = session_intents(lengths, n_intents, rng)
        texts, first = draw(intents), 0
        for k, length in enumerate(lengths.tolist(), start=start):
            turns = [{"text": texts[t], "intent": ids[intents[t]] if labelled else None}
                     for t in range(first, first + length)]
            first += length
            yield {"id": f"{split}-{k}", "turns": turns}


def write_synthetic_bundle(out_dir: str | Path, n_sessions: int, n_queries: int, n_intents: int = 100,
                           seed: int = 0) -> Path:
    """Write the synthetic bundle (see the module docstring) to `out_dir` (created; files replaced); its path."""
    if n_intents < 1 or n_sessions < 0 or n_queries < 0:
        raise ValueError(f"need n_intents >= 1 and non-negative counts, got {n_intents}, {n_sessions}, {n_queries}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"name": f"synthetic-{n_sessions}", "market": "synthetic", "languages": ["en"], "source": "synthetic",
            "description": f"write_synthetic_bundle(n_sessions={n_sessions}, n_queries={n_queries}, "
                           f"n_intents={n_intents}, seed={seed})"}
    (out / BUNDLE_FILE).write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
    write_jsonl(out / INTENTS_FILE, intent_rows(n_intents))
    rng = np.random.default_rng(seed)
    if n_queries:
        write_jsonl(out / SINGLE_TURN_FILE, query_rows(n_queries, n_intents, rng))
    counts = rng.multinomial(n_sessions, [SESSION_SPLIT_SHARES[split] for split in SESSION_SPLITS])
    for split, count in zip(SESSION_SPLITS, counts.tolist()):
        if count:
            write_jsonl(out / SESSIONS_DIR / f"{split}.jsonl", session_rows(split, count, n_intents, rng))
    return out


def main(argv: list[str] | None = None) -> None:
    """`python -m mtic.dataset_factories.synthetic OUT N_SESSIONS N_QUERIES [N_INTENTS [SEED]]`."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if not 3 <= len(args) <= 5:
        raise SystemExit(main.__doc__)
    out, *numbers = args
    print(json.dumps({"bundle": str(write_synthetic_bundle(out, *map(int, numbers)))}))


if __name__ == "__main__":
    main()
