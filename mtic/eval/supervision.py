"""Which gold labels a run read: the `supervision` record of results.json, and its enforcement.

The vocabulary of label sources (owned here, used by the datamodule, the pipelines and compare.py):

  single_turn         labelled single-turn queries (`single_turn.jsonl`, train split): the production labels
  single_turn.valid   labelled single-turn queries of the valid split, used for model selection
  sessions.<split>    gold multi-turn labels of `sessions/<split>.jsonl` (train, valid, ...)
  selector:gold       the selective-concatenation selector learned from gold multi-turn sessions
  pseudo_labels       sessions labelled by a model (an LLM in LARA-PL / CLARA, a label-free teacher in st_distill);
                      no gold label involved
  crafted             sessions crafted from the labelled single-turn training queries (`data.train_sessions=
                      crafted`, mtic/inputs/crafted.py): single-turn labels only, no gold multi-turn label
  file:<name>         a user-supplied sessions file (its labels are the user's; treated as gold)

`Supervision` keeps two lists per run: `train` (what the model learned from, including selectors and candidate
proposers) and `selection` (what early stopping and checkpoint choice read). Evaluation labels (the test
sessions' gold, the unlabelled sessions' gold side file for pseudo-label precision) are scoring, not
supervision, and are listed apart under `evaluation`.

Guarantee: a run configured `label_free: true` never reads a multi-turn gold label for training or selection;
`Supervision.enforce` raises `LabelFreeViolation` before any compute that would.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

SINGLE_TURN = "single_turn"
SINGLE_TURN_VALID = "single_turn.valid"
SELECTOR_GOLD = "selector:gold"
PSEUDO_LABELS = "pseudo_labels"
CRAFTED = "crafted"
SESSIONS_PREFIX = "sessions."
FILE_PREFIX = "file:"
GOLD_UNLABELED = "sessions.unlabeled.gold"


def sessions_source(split: str) -> str:
    """The source name of a bundle sessions split (`sessions.train`, ...)."""
    return f"{SESSIONS_PREFIX}{split}"


def is_multi_turn_gold(source: str) -> bool:
    """True for every source carrying human multi-turn labels (bundle sessions, gold selector, user files)."""
    return source.startswith((SESSIONS_PREFIX, FILE_PREFIX)) or source == SELECTOR_GOLD


class LabelFreeViolation(ValueError):
    """A run declared label-free would read gold multi-turn labels."""


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


@dataclass
class Supervision:
    """Label sources read by one run (see the module doc for the vocabulary)."""

    train: list[str] = field(default_factory=list)
    selection: list[str] = field(default_factory=list)
    evaluation: list[str] = field(default_factory=list)

    def add(self, train: Iterable[str] = (), selection: Iterable[str] = (), evaluation: Iterable[str] = ()) -> None:
        self.train = _unique([*self.train, *train])
        self.selection = _unique([*self.selection, *selection])
        self.evaluation = _unique([*self.evaluation, *evaluation])

    def merged(self, other: Supervision) -> Supervision:
        out = Supervision(list(self.train), list(self.selection), list(self.evaluation))
        out.add(other.train, other.selection, other.evaluation)
        return out

    @property
    def sources(self) -> list[str]:
        """Every gold-label source used for training or selection."""
        return _unique([*self.train, *self.selection])

    @property
    def multi_turn_gold(self) -> list[str]:
        return [s for s in self.sources if is_multi_turn_gold(s)]

    def enforce(self, label_free: bool, where: str = "this run") -> None:
        """Raise when a label-free run would read gold multi-turn labels (names the sources and the keys)."""
        gold = self.multi_turn_gold
        if label_free and gold:
            raise LabelFreeViolation(
                f"{where} is label-free (label_free=true) but would read gold multi-turn labels: {', '.join(gold)}; "
                "use data.train_sessions=none, data.valid_sessions=single_turn, pipeline.selector.sessions=none, "
                "or set label_free=false for a supervised row")

    def as_record(self) -> dict[str, Any]:
        return {"train": self.train, "selection": self.selection, "evaluation": self.evaluation,
                "label_free": not self.multi_turn_gold}

    @staticmethod
    def column(record: dict[str, Any] | None) -> str:
        """A short table cell: the training + selection sources, or '–' for runs recorded before this field."""
        if not record:
            return "–"
        sources = _unique([*record.get("train", []), *record.get("selection", [])])
        return "+".join(sources) if sources else "none"
