"""Rows -> single-turn queries and chat sessions, and the split each session goes to.

- A query row is a single-turn query of its split column's split (train when none; `valid`, `validation`,
  `dev` and `val` name the valid split; a test query is refused: the bundle's test split is sessions).
- Chat-log rows are grouped by session id (sessions in order of first appearance). A session's rows come from
  one input; they are ordered by their turn numbers when they have them (all rows or none), else kept in input
  order; a repeated turn number is an error.
- A session whose last turn has an intent is labelled: it goes to the split its rows name, else to test / valid /
  train by seeded shares (`Shares`: sessions sorted by id, shuffled with `random.Random("mtic-import/<seed>")`,
  round(share * n) each, at least one for a positive share of two or more sessions). Any other session goes to
  `unlabeled` (a row naming valid or test for it is an error: those splits are scored on the last turn).
"""
from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

from mtic.data.schema import SESSION_SPLITS, Session, SingleTurnQuery, Turn
from mtic.dataset_factories.importer.intents import Catalogue
from mtic.dataset_factories.importer.readers import Row

SPLIT_NAMES = {"train": "train", "valid": "valid", "validation": "valid", "dev": "valid", "val": "valid",
               "test": "test"}
UNLABELED = "unlabeled"


@dataclass(frozen=True)
class Shares:
    """Shares of the labelled sessions without a split value that go to test and valid; the seed of the draw."""

    test: float = 0.0
    valid: float = 0.0
    seed: int = 0

    def counts(self, n: int) -> tuple[int, int]:
        """(test, valid) session counts out of `n`."""
        def count(share: float, left: int) -> int:
            k = round(share * n)
            return min(left, max(k, 1 if share > 0 and n >= 2 else 0))

        n_test = count(self.test, n)
        return n_test, count(self.valid, n - n_test)


def split_name(row: Row) -> str | None:
    """The split a row's split value names (None when it has none)."""
    if row.split is None:
        return None
    name = SPLIT_NAMES.get(row.split.casefold())
    if name is None:
        raise row.error(f"unknown split {row.split!r} (train, valid or test)")
    return name


def single_turn(rows: Iterable[Row], catalogue: Catalogue) -> list[SingleTurnQuery]:
    """The labelled single-turn queries of query rows."""
    queries = []
    for row in rows:
        split = split_name(row) or "train"
        if split == "test":
            raise row.error("a single-turn query cannot be a test query (the bundle's test split is sessions/"
                            "test.jsonl: give test queries as one-turn chat logs with --logs)")
        queries.append(SingleTurnQuery(row.text, catalogue.resolve(str(row.intent), row), split))
    return queries


def _ordered(rows: list[Row]) -> list[Row]:
    numbered = [row for row in rows if row.turn is not None]
    if not numbered:
        return rows
    if len(numbered) != len(rows):
        row = next(r for r in rows if r.turn is None)
        raise row.error(f"no turn number, while other rows of session '{row.session}' have one")
    first: dict[float, int] = {}
    for row in rows:
        if row.turn in first:
            raise row.error(f"duplicate turn {row.turn:g} of session '{row.session}' (first on line {first[row.turn]})")
        first[row.turn] = row.line
    return sorted(rows, key=lambda r: r.turn)


def group_sessions(rows: Iterable[Row]) -> list[list[Row]]:
    """Log rows grouped into sessions (first-appearance order), each in turn order."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        group = groups.setdefault(str(row.session), [])
        if group and group[0].source != row.source:
            raise row.error(f"session '{row.session}' is also in {group[0].source} (line {group[0].line}); "
                            "a session's turns come from one input")
        group.append(row)
    return [_ordered(group) for group in groups.values()]


def _session_split(rows: list[Row]) -> str | None:
    """The split a session's rows name; rows naming two different splits are an error at the second."""
    first: tuple[str, Row] | None = None
    for row in rows:
        split = split_name(row)
        if split is None:
            continue
        if first is None:
            first = (split, row)
        elif split != first[0]:
            raise row.error(f"session '{row.session}' is in the {split} split here but in the {first[0]} split on "
                            f"line {first[1].line}")
    return first[0] if first else None


def build_session(rows: list[Row], catalogue: Catalogue) -> tuple[Session, str | None]:
    """(the session of one group of rows, the split its rows name)."""
    turns = tuple(Turn(row.text, catalogue.resolve(row.intent, row) if row.intent else None) for row in rows)
    session = Session(id=str(rows[0].session), turns=turns)
    split = _session_split(rows)
    if session.target is None and split in ("valid", "test"):
        last = rows[-1]
        raise last.error(f"session '{session.id}' is in the {split} split but its last turn has no intent (the target)")
    return session, split


def assign_splits(built: list[tuple[Session, str | None]], shares: Shares) -> dict[str, list[Session]]:
    """Sessions per bundle split (non-empty splits only, in SESSION_SPLITS order, input order within a split)."""
    chosen: dict[str, str] = {}
    free = []
    for session, split in built:
        if session.target is None:
            chosen[session.id] = UNLABELED
        elif split is not None:
            chosen[session.id] = split
        else:
            free.append(session.id)
    free.sort()
    random.Random(f"mtic-import/{shares.seed}").shuffle(free)
    n_test, n_valid = shares.counts(len(free))
    for k, session_id in enumerate(free):
        chosen[session_id] = "test" if k < n_test else "valid" if k < n_test + n_valid else "train"
    out: dict[str, list[Session]] = {split: [] for split in SESSION_SPLITS}
    for session, _ in built:
        out[chosen[session.id]].append(session)
    return {split: sessions for split, sessions in out.items() if sessions}
