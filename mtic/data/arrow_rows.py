"""Bundle rows in a memory-mapped Arrow file, read as a Sequence that builds a row object only when it is used.

Layout of the Arrow file (written by `datasets.arrow_writer.ArrowWriter`, opened with `datasets.Dataset.from_file`,
which memory-maps it):
  sessions             id: string, turns: list<struct<text: string, intent: string>>
  single-turn queries  text: string, intent: string, split: string
`ArrowRows` is a read-only `collections.abc.Sequence` of `Session` / `SingleTurnQuery`: `len` is free; iteration
converts BLOCK rows at a time (Arrow column -> Python lists -> records); an index that follows the previous one
builds the BLOCK around it and keeps it (a loop over indices costs what iteration costs), any other index builds
its row alone; a contiguous slice is another ArrowRows (no copy); `==` compares element-wise with any sequence (a
list of the same records is equal); `+` gives a list; `dataset()` is the rows as a `datasets.Dataset`. Pickling
sends the file's path and the row range, never the data (DataLoader workers, Ray tasks).
Guarantee: row k of an ArrowRows equals the k-th record its file was written from (`table_of` / `records_of` are
inverse on these columns).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Generic, TypeVar

import pyarrow as pa

from mtic.data.schema import Session, SingleTurnQuery, Turn

T = TypeVar("T")
BLOCK = 1024
OPEN_FILES = 64


@dataclass(frozen=True)
class RowKind(Generic[T]):
    """How one kind of record becomes Arrow columns and back."""

    name: str
    schema: pa.Schema
    table_of: Callable[[list[T]], pa.Table]
    records_of: Callable[[pa.Table], list[T]]


def _strings(values: list[str | None]) -> pa.Array:
    return pa.array(values, type=pa.string())


def session_table(sessions: list[Session]) -> pa.Table:
    offsets, texts, intents = [0], [], []
    for session in sessions:
        texts += [turn.text for turn in session.turns]
        intents += [turn.intent for turn in session.turns]
        offsets.append(len(texts))
    turns = pa.StructArray.from_arrays([_strings(texts), _strings(intents)], names=["text", "intent"])
    return pa.Table.from_arrays([_strings([s.id for s in sessions]),
                                 pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), turns)],
                                schema=SESSION_SCHEMA)


def sessions_of(table: pa.Table) -> list[Session]:
    sessions = []
    for batch in table.to_batches():  # the columns of a record batch share its rows
        turns = batch.column("turns")
        flat = turns.flatten()
        texts, intents = flat.field("text").to_pylist(), flat.field("intent").to_pylist()
        start = 0
        for session_id, length in zip(batch.column("id").to_pylist(), turns.value_lengths().to_pylist()):
            sessions.append(Session(session_id, tuple(map(Turn, texts[start : start + length],
                                                          intents[start : start + length]))))
            start += length
    return sessions


def query_table(queries: list[SingleTurnQuery]) -> pa.Table:
    return pa.Table.from_arrays([_strings([q.text for q in queries]), _strings([q.intent for q in queries]),
                                 _strings([q.split for q in queries])], schema=QUERY_SCHEMA)


def queries_of(table: pa.Table) -> list[SingleTurnQuery]:
    columns = [table.column(name).to_pylist() for name in QUERY_SCHEMA.names]
    return list(map(SingleTurnQuery, *columns))


SESSION_SCHEMA = pa.schema([("id", pa.string()),
                            ("turns", pa.list_(pa.struct([("text", pa.string()), ("intent", pa.string())])))])
QUERY_SCHEMA = pa.schema([("text", pa.string()), ("intent", pa.string()), ("split", pa.string())])
SESSIONS = RowKind("sessions", SESSION_SCHEMA, session_table, sessions_of)
QUERIES = RowKind("single_turn", QUERY_SCHEMA, query_table, queries_of)
KINDS = {kind.name: kind for kind in (SESSIONS, QUERIES)}


@lru_cache(maxsize=OPEN_FILES)
def _mapped_table(file: str) -> pa.Table:
    """The whole table of an Arrow file, memory-mapped (one mapping per file and process)."""
    from datasets import Dataset

    return Dataset.from_file(file, in_memory=False).data.table


class ArrowRows(Sequence[T]):
    """Rows `start` to `stop` of the Arrow file `file`, as records of `kind` (see the module docstring)."""

    def __init__(self, file: str | Path, kind: str, start: int = 0, stop: int | None = None) -> None:
        self.file = str(file)
        self.kind: RowKind = KINDS[kind]
        whole = _mapped_table(self.file).num_rows
        self.start, self.stop = start, whole if stop is None else stop
        self._block: tuple[int, list[T]] = (-1, [])  # (first row, records) of the block last built
        self._last = -1  # the row last indexed

    def dataset(self) -> Any:
        """The rows as a `datasets.Dataset` (memory-mapped; for `.map`, `.with_format`, `.iter`)."""
        from datasets import Dataset

        whole = Dataset.from_file(self.file, in_memory=False)
        return whole if (self.start, self.stop) == (0, whole.num_rows) else whole.select(range(self.start, self.stop))

    def table(self) -> pa.Table:
        """The rows as a pyarrow Table (a zero-copy slice of the memory-mapped file; columns as in the docstring)."""
        return _mapped_table(self.file).slice(self.start, len(self))

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step == 1:
                return ArrowRows(self.file, self.kind.name, self.start + start, self.start + max(start, stop))
            return [self[k] for k in range(start, stop, step)]
        if not -len(self) <= index < len(self):
            raise IndexError(f"row {index} of {len(self)}")
        index %= len(self)
        first = index - index % BLOCK
        if self._block[0] != first:
            if index != self._last + 1:  # a random access: this row alone
                self._last = index
                return self._records(index, 1)[0]
            self._block = (first, self._records(first, BLOCK))  # a walk: the block it goes on through
        self._last = index
        return self._block[1][index - first]

    def _records(self, offset: int, count: int) -> list[T]:
        count = min(count, len(self) - offset)
        return self.kind.records_of(self.table().slice(offset, count))

    def __iter__(self) -> Iterator[T]:
        for offset in range(0, len(self), BLOCK):
            yield from self._records(offset, BLOCK)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(mine == theirs for mine, theirs in zip(self, other))

    __hash__ = None  # type: ignore[assignment]  (mutable-free but compared by value, like a list)

    def __add__(self, other: Sequence[T]) -> list[T]:
        return [*self, *other]

    def __radd__(self, other: Sequence[T]) -> list[T]:
        return [*other, *self]

    def __reduce__(self) -> tuple:
        return ArrowRows, (self.file, self.kind.name, self.start, self.stop)

    def __repr__(self) -> str:
        return f"ArrowRows({self.kind.name}, rows {self.start}:{self.stop} of {self.file})"
