"""Self-consistency: label a session several times with its demos in different orders; keep agreed answers.

Ordering i of n: 0 = ascending similarity (the closest demo last, next to the question), 1 = descending,
2.. = random permutations seeded by (seed, session id, i), so a run is reproducible and independent of the
order in which sessions are processed. `agree` applies the rule: 'unanimous' keeps an answer only when all n
orderings name the same intent; 'majority' when more than half do. An ordering whose answer is no intent
(failed, empty, garbage, unmatched) votes for nothing.
"""
from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from mtic.clara.retrieval import Demo

ASCENDING, DESCENDING, RANDOM = "ascending", "descending", "random"
ORDERS = (ASCENDING, DESCENDING, RANDOM)
UNANIMOUS, MAJORITY = "unanimous", "majority"
RULES = (UNANIMOUS, MAJORITY)

T = TypeVar("T")


def order_names(n: int) -> list[str]:
    """Names of the first n orderings: ascending, descending, random, random, ..."""
    if n < 1:
        raise ValueError("self-consistency needs at least one ordering")
    return [ORDERS[min(k, 2)] for k in range(n)]


def _seeded_rng(seed: int, session_id: str, k: int) -> random.Random:
    digest = hashlib.sha256(f"{seed}/{session_id}/{k}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def order_demos(demos: Sequence[Demo], order: str, seed: int = 0, session_id: str = "", k: int = 0) -> list[Demo]:
    """The demos in one ordering; ties keep their retrieval rank."""
    ranked = list(demos)  # retrieval order: best first
    if order == DESCENDING:
        return sorted(ranked, key=lambda d: -d.score)
    if order == ASCENDING:
        return sorted(ranked, key=lambda d: -d.score)[::-1]
    if order == RANDOM:
        _seeded_rng(seed, session_id, k).shuffle(ranked)
        return ranked
    raise ValueError(f"order must be one of {ORDERS}, got {order!r}")


def orderings(demos: Sequence[Demo], n: int, seed: int = 0, session_id: str = "") -> list[list[Demo]]:
    """The n demo orderings of one session (see the module docstring)."""
    return [order_demos(demos, name, seed, session_id, k) for k, name in enumerate(order_names(n))]


@dataclass(frozen=True)
class Agreement:
    """The outcome of the vote: `answer` is kept (None when the rule is not met), `votes` its vote count."""

    answer: str | None
    votes: int
    n: int
    kept: bool


def agree(answers: Sequence[T | None], rule: str = UNANIMOUS) -> Agreement:
    """Apply the agreement rule to the answers of the n orderings (None = no intent)."""
    if rule not in RULES:
        raise ValueError(f"agreement rule must be one of {RULES}, got {rule!r}")
    n = len(answers)
    if n == 0:
        return Agreement(None, 0, 0, False)
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return Agreement(None, 0, n, False)
    top = max(counts.values())
    winners = [a for a in answers if a is not None and counts[a] == top]
    best = winners[0]  # the earliest ordering breaks ties
    kept = top == n if rule == UNANIMOUS else top * 2 > n
    return Agreement(best if kept else None, top, n, kept)
