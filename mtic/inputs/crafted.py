"""`data.train_sessions=crafted`: multi-turn training sessions crafted from the labelled single-turn queries.

A model that must read conversations (the symbol-tuned LM) but may read no gold multi-turn label learns the
format from sessions chained out of the single-turn training queries by the crafting generator
(mtic/dataset_factories/craft.py): a Markov chain over intents that stays on the intent, switches within its
category or away from it, every turn a training query of its intent, every turn labelled.

Guarantee: the sessions are a function of the single-turn training queries the datamodule trains on (held-out
valid queries excluded), the taxonomy, the transition model and the seed only. The transition model is the
generator's default (stay .45 / within .30 / away .25, 1-5 turns, first intent uniform): nothing is estimated
from labelled sessions, so no gold multi-turn label reaches training (supervision source `crafted`).
Single-turn queries have no context-dependent follow-ups ("still nothing"), so crafted sessions teach the
format and topic switches, not follow-ups that only the history explains.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mtic.data.schema import Session, SingleTurnQuery
from mtic.data.taxonomy import Taxonomy
from mtic.dataset_factories.craft import TransitionModel, craft_sessions

ID_PREFIX = "crafted"


@dataclass(frozen=True)
class CraftFromSingleTurn:
    """Crafts `n_sessions` labelled sessions from single-turn queries (deterministic given `seed`)."""

    n_sessions: int = 300
    seed: int = 0
    transitions: TransitionModel = field(default_factory=TransitionModel)

    def __post_init__(self) -> None:
        if self.n_sessions < 1:
            raise ValueError(f"data.crafting.n_sessions must be at least 1, got {self.n_sessions}")

    def __call__(self, queries: Sequence[SingleTurnQuery], taxonomy: Taxonomy) -> list[Session]:
        pool: dict[str, list[str]] = {}
        for query in queries:
            pool.setdefault(query.intent, []).append(query.text)
        return craft_sessions(self.transitions, pool, {}, taxonomy.parent_path, self.n_sessions,
                              f"{self.seed}/{ID_PREFIX}", ID_PREFIX)
