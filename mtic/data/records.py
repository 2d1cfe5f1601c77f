"""Validated records of the bundle's row files: single-turn queries and sessions, one line at a time.

`single_turn_records` and `session_records` stream `(line, record)` pairs out of a JSONL file and raise a
BundleError naming the file and line at the first bad row, with every check in file order: the list reader and
the Arrow reader (mtic/data/arrow_cache.py) both consume these generators, so both accept exactly the same files
and report exactly the same first error. Memory: one line, plus the ids seen so far (for duplicates).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mtic.data.errors import BundleError
from mtic.data.jsonl import iter_jsonl
from mtic.data.schema import SINGLE_TURN_SPLITS, Session, SingleTurnQuery, Turn


def text_field(value: Any, path: Path, line: int, key: str) -> str:
    """`value` when it is a non-blank string; else a BundleError naming `key`."""
    if not isinstance(value, str):
        raise BundleError(path, f"'{key}' must be a string, got {type(value).__name__}", line)
    if not value.strip():
        raise BundleError(path, f"empty text in '{key}'", line)
    return value


def intent_field(value: Any, known: set[str], path: Path, line: int, allow_none: bool) -> str | None:
    """`value` when it is a known intent id (or None where allowed); else a BundleError."""
    if value is None and allow_none:
        return None
    if not isinstance(value, str):
        raise BundleError(path, f"'intent' must be an intent id string, got {value!r}", line)
    if value not in known:
        raise BundleError(path, f"unknown intent id '{value}' (not in intents.jsonl)", line)
    return value


def single_turn_records(path: Path, known: set[str]) -> Iterator[tuple[int, SingleTurnQuery]]:
    """(line, query) of every row of a `single_turn.jsonl`, validated."""
    for line, row in iter_jsonl(path):
        text = text_field(row.get("text"), path, line, "text")
        intent = intent_field(row.get("intent"), known, path, line, allow_none=False)
        split = row.get("split", "train")
        if split not in SINGLE_TURN_SPLITS:
            raise BundleError(path, f"'split' must be one of {list(SINGLE_TURN_SPLITS)}, got {split!r}", line)
        yield line, SingleTurnQuery(text=text, intent=intent, split=split)


def session_records(path: Path, known: set[str], require_target: bool) -> Iterator[tuple[int, Session]]:
    """(line, session) of every row of a sessions file, validated; `require_target` demands a labelled last
    turn. Session ids are unique within the file."""
    seen: dict[str, int] = {}
    for line, row in iter_jsonl(path):
        session_id = row.get("id")
        if not isinstance(session_id, (str, int)) or str(session_id).strip() == "":
            raise BundleError(path, "every session needs a non-empty 'id'", line)
        session_id = str(session_id)
        if session_id in seen:
            raise BundleError(path, f"duplicate session id '{session_id}' (first on line {seen[session_id]})", line)
        seen[session_id] = line
        raw_turns = row.get("turns")
        if not isinstance(raw_turns, list) or not raw_turns:
            raise BundleError(path, "'turns' must be a non-empty list", line)
        turns = []
        for turn in raw_turns:
            if not isinstance(turn, dict):
                raise BundleError(path, "each turn must be an object {\"text\": ..., \"intent\": ...}", line)
            text = text_field(turn.get("text"), path, line, "text")
            turns.append(Turn(text, intent_field(turn.get("intent"), known, path, line, allow_none=True)))
        if require_target and turns[-1].intent is None:
            raise BundleError(path, f"session '{session_id}' has no intent on its last turn (the target)", line)
        yield line, Session(id=session_id, turns=tuple(turns))
