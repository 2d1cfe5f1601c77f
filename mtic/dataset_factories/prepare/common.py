"""Helpers shared by the public-benchmark converters: reading original files, naming, splitting, crafting.

Every converter is deterministic given its options: inputs are put in a canonical (sorted) order before any
seeded choice, and each choice draws from its own `random.Random(f"<source>/<seed>/<purpose>...")` stream, so
reordering files or adding unrelated ones never changes a bundle.
"""
from __future__ import annotations

import gzip
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from mtic.data.errors import BundleError
from mtic.data.schema import Session, normalise_text
from mtic.dataset_factories.craft import (
    SPLIT_PREFIXES,
    CraftedSplits,
    TransitionModel,
    check_disjoint,
    craft_sessions,
    strip_history,
)

ParentOf = Callable[[str], tuple]
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def read_text(path: Path) -> str:
    """UTF-8 text of a plain or gzipped file; bad bytes are a BundleError naming the file and line."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise BundleError(path, f"not a readable gzip file ({err})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BundleError(path, f"invalid UTF-8 byte at offset {err.start}", raw[: err.start].count(b"\n") + 1) from None


def read_json(path: Path) -> tuple[Any, str]:
    """(parsed JSON, its text) of a `.json` or `.json.gz` file; malformed JSON names the line."""
    text = read_text(path)
    try:
        return json.loads(text), text
    except json.JSONDecodeError as err:
        raise BundleError(path, f"malformed JSON ({err.msg} at column {err.colno})", err.lineno) from None


def line_of(text: str, needle: str) -> int | None:
    """1-based line of the first occurrence of `needle` in `text` (None when absent)."""
    pos = text.find(needle)
    return None if pos < 0 else text.count("\n", 0, pos) + 1


def json_file(folder: Path, stem: str) -> Path | None:
    """`<folder>/<stem>.json`, else `<stem>.json.gz`, else None (the original layout and its gzipped copy)."""
    for name in (f"{stem}.json", f"{stem}.json.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def split_words(name: str) -> str:
    """A readable label from an identifier: "ReserveRestaurant" -> "Reserve Restaurant", "set_alarm" -> "Set Alarm"."""
    words = [w for part in re.split(r"[_\-\s/]+", name) for w in _CAMEL.split(part) if w]
    return " ".join(w if w.isupper() and len(w) > 1 else w[:1].upper() + w[1:] for w in words)


def sentence(name: str) -> str:
    """A sentence-case title from an identifier: "card_arrival" -> "Card arrival"."""
    text = split_words(name)
    return text[:1] + text[1:].lower() if text else text


def options_from(cls: type, raw: Mapping[str, Any], where: str) -> Any:
    """An options dataclass from a mapping; unknown keys and wrong types are a BundleError naming `where`."""
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise BundleError(where, f"unknown option(s) {', '.join(unknown)} (known: {', '.join(known)})")
    defaults = cls()
    clean = {}
    for key, value in raw.items():
        default = getattr(defaults, key)
        if isinstance(default, bool) and not isinstance(value, bool):
            raise BundleError(where, f"option {key} must be true or false, got {value!r}")
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            wanted = float if isinstance(default, float) else int
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (wanted is int and value != int(value)):
                raise BundleError(where, f"option {key} must be {'a number' if wanted is float else 'an integer'}, "
                                         f"got {value!r}")
            value = wanted(value)
        if isinstance(default, str) and not isinstance(value, str):
            value = str(value)
        clean[key] = value
    try:
        return cls(**clean)
    except (TypeError, ValueError) as err:
        raise BundleError(where, str(err)) from None


CRAFT_COUNTS = ("n_train", "n_unlabeled", "n_valid", "n_test")


def check_craft_options(options: Any) -> None:
    """`valid_share` in [0, 1) and the session counts non-negative integers (None allowed), else ValueError."""
    if not 0.0 <= options.valid_share < 1.0:
        raise ValueError(f"valid_share must be in [0, 1), got {options.valid_share!r}")
    for name in CRAFT_COUNTS:
        value = getattr(options, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def holdout_split(
    queries: Mapping[str, Sequence[str]], share: float, rng_key: str, min_train: int = 1
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Split each intent's distinct queries into (train, held-out): round(share * n) held out, but never more
    than leaves `min_train` in train (intents with too few queries give none). Seeded per intent."""
    train: dict[str, list[str]] = {}
    held: dict[str, list[str]] = {}
    for intent in sorted(queries):
        pool = sorted({q for q in queries[intent] if q.strip()})
        random.Random(f"{rng_key}/{intent}").shuffle(pool)
        n_held = min(round(share * len(pool)), max(len(pool) - min_train, 0))
        held[intent], train[intent] = sorted(pool[:n_held]), sorted(pool[n_held:])
    return train, held


def split_held_out(held: Mapping[str, Sequence[str]], rng_key: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Split each intent's held-out queries into (single-turn valid, valid-session pool), disjoint: a seeded
    shuffle, then alternately one to each side, single-turn valid first (so an intent with one held-out query
    keeps it as single-turn valid and has none in the valid sessions)."""
    single: dict[str, list[str]] = {}
    sessions: dict[str, list[str]] = {}
    for intent in sorted(held):
        pool = sorted(set(held[intent]))
        random.Random(f"{rng_key}/{intent}").shuffle(pool)
        single[intent], sessions[intent] = sorted(pool[0::2]), sorted(pool[1::2])
    return single, sessions


def frequencies(pool: Mapping[str, Sequence[str]]) -> dict[str, float] | None:
    """Share of each intent's queries in a pool (the first-intent distribution of sessions crafted from it)."""
    counts = Counter({i: len(q) for i, q in pool.items() if q})
    total = sum(counts.values())
    return {i: c / total for i, c in sorted(counts.items())} if total else None


def with_first_intent(model: TransitionModel, pool: Mapping[str, Sequence[str]]) -> TransitionModel:
    """`model` whose first intent follows the intent frequencies of `pool` (transitions and lengths kept)."""
    return TransitionModel(model.p_stay, model.p_switch_within, model.p_switch_away, dict(model.length_dist),
                           frequencies(pool), model.p_followup)


def craft_from_pools(
    model: TransitionModel,
    train_pool: Mapping[str, Sequence[str]],
    valid_pool: Mapping[str, Sequence[str]],
    test_pool: Mapping[str, Sequence[str]],
    parent_of: ParentOf,
    *,
    n_train: int,
    n_unlabeled: int,
    n_valid: int,
    n_test: int,
    seed: str,
    single_turn_texts: Sequence[str] = (),
) -> CraftedSplits:
    """Sessions of a single-turn benchmark (no follow-up texts): train/unlabeled from `train_pool`, valid from
    `valid_pool`, test from `test_pool`. Valid and test texts (every turn, history included) that equal a
    training-side text (`train_pool` or `single_turn_texts`, any split; compared after `normalise_text`) are
    dropped from their pools (counted in `eval_dropped_texts`; an intent left with none is not in that split's
    sessions and is listed in `eval_excluded_intents`), so no valid/test turn appears in a training-side file.
    Each split's first intent follows its own pool's intent frequencies; valid/test keep only the last label."""
    training = {normalise_text(t) for pool in train_pool.values() for t in pool}
    training |= {normalise_text(t) for t in single_turn_texts}
    dropped = 0
    excluded: set[str] = set()

    def fresh(pool: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
        nonlocal dropped
        kept = {}
        for intent in sorted(pool):
            texts = sorted({t for t in pool[intent] if t.strip()})
            kept[intent] = [t for t in texts if normalise_text(t) not in training]
            dropped += len(texts) - len(kept[intent])
            if texts and not kept[intent]:
                excluded.add(intent)
        return kept

    def run(split: str, pool: Mapping[str, Sequence[str]], n: int) -> list[Session]:
        if n == 0 or not any(pool.values()):
            return []
        return craft_sessions(with_first_intent(model, pool), pool, {}, parent_of, n, f"{seed}/{split}",
                              SPLIT_PREFIXES[split])

    valid_pool, test_pool = fresh(valid_pool), fresh(test_pool)
    gold = run("unlabeled", train_pool, n_unlabeled)
    train = run("train", train_pool, n_train)
    valid = [strip_history(s) for s in run("valid", valid_pool, n_valid)]
    test = [strip_history(s) for s in run("test", test_pool, n_test)]
    every_training = [t for pool in train_pool.values() for t in pool] + list(single_turn_texts)
    check_disjoint([*train, *gold], [*valid, *test], extra_training=every_training)
    return CraftedSplits(
        train=train,
        unlabeled=[s.unlabeled() for s in gold],
        unlabeled_gold=gold,
        valid=valid,
        test=test,
        eval_excluded_intents=sorted(excluded),
        eval_dropped_texts=dropped,
    )


def nonfirst_share(sessions: Sequence[Session]) -> float | None:
    """Share of sessions whose target is not their first turn (None when there are none)."""
    return sum(len(s.turns) > 1 for s in sessions) / len(sessions) if sessions else None
