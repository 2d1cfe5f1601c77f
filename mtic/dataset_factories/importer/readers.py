"""A user's rows through a column map: CSV / TSV / JSONL / JSON files, and datasets of `datasets.load_dataset`.

Every row keeps where it came from (the input file, or `<dataset>[<split>]`, and its 1-based line or row), so a
bad value is reported as `file:line: reason`. Values are checked here (a text is a non-empty string without NUL
characters; an intent, session id or split a string or a number; a turn a number); grouping into sessions and
resolving intents happen in `sessions` and `intents`.
"""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtic.data.bundle import iter_jsonl
from mtic.data.errors import BundleError
from mtic.dataset_factories.prepare.common import read_text

COMMAND = "mtic data import"  # where an error of no one input is reported
QUERIES = "queries"
LOGS = "logs"
TABLE_FORMATS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
JSON_FORMATS = (".jsonl", ".ndjson", ".json")
FORMATS = (*TABLE_FORMATS, *JSON_FORMATS)
Record = dict[str, Any]


@dataclass(frozen=True)
class Columns:
    """Which input column holds what. `explicit` names the roles set by a flag (`--turn-col idx`): a turn
    column set so must be in every chat-log input, and a split column set so in at least one input."""

    text: str = "text"
    intent: str = "intent"
    session: str = "session_id"
    turn: str = "turn"
    split: str = "split"
    explicit: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Row:
    """One input row: a single-turn query (`session` None) or a chat-log turn."""

    text: str
    intent: str | None
    session: str | None
    turn: float | None
    split: str | None
    source: str
    line: int

    def error(self, reason: str) -> BundleError:
        """A BundleError naming this row's input file and line."""
        return BundleError(self.source, reason, self.line)


@dataclass(frozen=True)
class Table:
    """The records of one input: its name, its columns (None: JSON rows, each with its own keys), (line,
    record) pairs, and the line of the header naming the columns (None: a dataset, whose rows count from 1)."""

    source: str
    columns: tuple[str, ...] | None
    records: Iterable[tuple[int, Record]]
    header_line: int | None = 1


def known_format(path: Path) -> str | None:
    """The suffix that decides how `path` is read (`.csv`, `.tsv`, `.jsonl`, ...; a `.gz` after it is allowed),
    None for any other."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return suffixes[-1] if suffixes and suffixes[-1] in FORMATS else None


def file_format(path: Path) -> str:
    """`known_format`, or a BundleError naming the formats read."""
    kind = known_format(path)
    if kind is None:
        raise BundleError(path, f"unknown file type; give {', '.join(FORMATS)} (optionally .gz)")
    return kind


def _csv_records(path: Path, text: str, delimiter: str) -> Table:
    reader = csv.reader(text.splitlines(keepends=True), delimiter=delimiter)
    header = next(reader, None)
    if not header or not any(name.strip() for name in header):
        raise BundleError(path, "no header row (the first line names the columns, e.g. text,intent)", 1)
    names = tuple(name.strip() for name in header)

    def records() -> Iterator[tuple[int, Record]]:
        start = reader.line_num + 1
        for cells in reader:
            line, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) != len(names):
                raise BundleError(path, f"{len(cells)} fields where the header has {len(names)}", line)
            yield line, dict(zip(names, cells))

    return Table(str(path), names, records())


def _json_records(path: Path, text: str) -> Table:
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as err:
        raise BundleError(path, f"malformed JSON ({err.msg} at column {err.colno})", err.lineno) from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise BundleError(path, "a .json input must be a list of objects (or use JSON lines, .jsonl)")
    return Table(str(path), None, ((number, row) for number, row in enumerate(rows, start=1)))


def read_table(path: Path) -> Table:
    """The records of an input file (CSV/TSV with a header row, JSON lines, or a JSON list of objects; `.json`
    rows are numbered by position, not line)."""
    if not path.is_file():
        raise BundleError(path, "no such input file" if not path.exists() else "is not a file")
    kind = file_format(path)
    if kind in TABLE_FORMATS:
        text = read_text(path).removeprefix("\ufeff")
        if "\x00" in text:
            raise BundleError(path, "NUL byte (a binary file?)", text[: text.index("\x00")].count("\n") + 1)
        return _csv_records(path, text, TABLE_FORMATS[kind])
    if kind == ".json":
        return _json_records(path, read_text(path).removeprefix("\ufeff"))
    if path.suffix.lower() == ".gz":
        raise BundleError(path, "gzipped JSON lines are not read; unpack the file")
    return Table(str(path), None, iter_jsonl(path))


def _text(value: Any, column: str, where: tuple[str, int]) -> str:
    if not isinstance(value, str):
        raise BundleError(where[0], f"'{column}' must be a text, got {value!r}", where[1])
    if not value.strip():
        raise BundleError(where[0], f"empty text in column '{column}'", where[1])
    if "\x00" in value:
        raise BundleError(where[0], f"NUL character in column '{column}'", where[1])
    return value


def _label(value: Any, column: str, where: tuple[str, int]) -> str | None:
    """A string or integer value as stripped text; None when empty or null."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BundleError(where[0], f"'{column}' must be a text or an integer, got {value!r}", where[1])
    text = str(value).strip()
    if "\x00" in text:
        raise BundleError(where[0], f"NUL character in column '{column}'", where[1])
    return text or None


def _turn(value: Any, column: str, where: tuple[str, int]) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise BundleError(where[0], f"'{column}' must be a number (the turn's position), got {value!r}", where[1])
    return number


def _required(kind: str, columns: Columns) -> list[str]:
    """The columns an input of `kind` must have."""
    needed = [columns.text] + ([columns.intent] if kind == QUERIES else [columns.session])
    if kind == LOGS and "turn" in columns.explicit:
        needed.append(columns.turn)
    return needed


def _check_header(table: Table, needed: list[str]) -> None:
    if table.columns is None:
        return
    for name in needed:
        if name not in table.columns:
            raise BundleError(table.source, f"missing column '{name}' (columns: {', '.join(table.columns)}); "
                                            "map yours with --text-col/--intent-col/--session-col/--turn-col",
                              table.header_line)


def rows_of(table: Table, kind: str, columns: Columns) -> Iterator[Row]:
    """The rows of an input read as `kind` (QUERIES: text and intent; LOGS: text, session, optional intent)."""
    needed = _required(kind, columns)
    _check_header(table, needed)
    for line, record in table.records:
        where = (table.source, line)
        for name in needed:
            if name not in record:
                raise BundleError(table.source, f"missing column '{name}'", line)
        intent = _label(record.get(columns.intent), columns.intent, where)
        if kind == QUERIES and intent is None:
            raise BundleError(table.source, f"empty intent in column '{columns.intent}'", line)
        yield Row(
            text=_text(record[columns.text], columns.text, where),
            intent=intent,
            session=_label(record[columns.session], columns.session, where) if kind == LOGS else None,
            turn=_turn(record.get(columns.turn), columns.turn, where) if kind == LOGS else None,
            split=_label(record.get(columns.split), columns.split, where),
            source=table.source,
            line=line,
        )
