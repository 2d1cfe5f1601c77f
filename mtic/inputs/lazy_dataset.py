"""Examples encoded on access, for data sets too big to hold encoded (issue 23, production scale).

Algorithm. The datamodule's sources (bundle splits - lists or memory-mapped `ArrowRows` -, a sessions file, the
single-turn queries of a split) are chained by index, never copied: a `SessionChain` is a list of `RowPart`s (a
row sequence, optionally the positions of the rows it takes, and for single-turn queries the id prefix that makes
them one-turn sessions) with their cumulative offsets; item k is found by bisection and built alone. An
`ExampleIndex` names every example by two numpy arrays: the chain position of its session (int64) and the number
of turns of the prefix it cuts (int32; 0 = the whole session). It is computed in one pass over turn counts and
label masks (read as Arrow columns from an ArrowRows of sessions, without building a Session) and subsampled by
index (`subsample`: the positions `random.Random(seed).sample` picks, in its order). `LazyEncodedDataset` holds
the chain, the index, the view and the encoder; `__getitem__(i)` builds session -> prefix -> view -> encoder for
example i only.

Guarantee: item i of a `LazyEncodedDataset` equals item i of the `EncodedDataset` the eager path builds from
the same sources and settings (the same sessions in the same order, `labelled_prefixes` expansion, the same
seeded subsample; `EXAMPLE_INDEX` included), so a batch sampler given the same indices yields the same batches.
What it keeps per example is 12 bytes of index (+ 4 bytes of length once `lengths()` is asked), never a Python
object.

Lengths for `LengthGroupedBatchSampler` are a proxy, not token counts: the characters of the view's input (its
`text`, or the queries of its `turns` for a chat view), computed in one pass over the examples in session order
and kept as an int32 array (tokenizing everything once more would cost what eager encoding costs). Token counts
grow with characters, so batches still group similar lengths; they are not the eager path's batches, whose
lengths are exact token counts.
"""
from __future__ import annotations

import bisect
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from mtic.data.arrow_rows import ArrowRows
from mtic.data.schema import Session
from mtic.eval.distributed import EXAMPLE_INDEX
from mtic.inputs.encoding import Encoder
from mtic.inputs.views import View, ViewExample


@dataclass(frozen=True)
class RowPart:
    """Rows of one source: all of `rows`, or those at `positions`; single-turn queries (`id_prefix` set) become the
    one-turn session `<id_prefix><k>`, k counted within the part."""

    rows: Sequence[Any]
    positions: np.ndarray | None = None
    id_prefix: str | None = None

    def __len__(self) -> int:
        return len(self.rows) if self.positions is None else len(self.positions)

    def __getitem__(self, k: int) -> Session:
        row = self.rows[k if self.positions is None else int(self.positions[k])]
        return row.as_session(f"{self.id_prefix}{k}") if self.id_prefix is not None else row

    def __iter__(self) -> Iterator[Session]:
        if self.positions is None and self.id_prefix is None:
            yield from self.rows  # ArrowRows: block by block
        else:
            yield from (self[k] for k in range(len(self)))

    def head(self, n: int) -> RowPart:
        if self.positions is not None:
            return RowPart(self.rows, self.positions[:n], self.id_prefix)
        return RowPart(self.rows[:n], None, self.id_prefix)

    def turn_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(turns of each session, labelled flag of every turn, sessions after one another)."""
        if self.id_prefix is not None:  # a labelled query: one labelled turn
            return np.ones(len(self), np.int64), np.ones(len(self), bool)
        if self.positions is None and isinstance(self.rows, ArrowRows):
            chunks = self.rows.table().column("turns").chunks  # memory-mapped: read chunk by chunk, not combined
            counts = [chunk.value_lengths().to_numpy(zero_copy_only=False) for chunk in chunks]
            flags = [chunk.flatten().field("intent").is_valid().to_numpy(zero_copy_only=False) for chunk in chunks]
            return (np.concatenate([np.zeros(0, np.int64), *counts]).astype(np.int64),
                    np.concatenate([np.zeros(0, bool), *flags]))
        counts, labelled = np.zeros(len(self), np.int64), []
        for k, session in enumerate(self):
            counts[k] = len(session.turns)
            labelled += [turn.intent is not None for turn in session.turns]
        return counts, np.asarray(labelled, bool)


class SessionChain(Sequence[Session]):
    """The sessions of several parts, one after the other, by index (no copy)."""

    def __init__(self, parts: Sequence[RowPart]) -> None:
        self.parts = [part for part in parts if len(part)]
        self.offsets = [0]
        for part in self.parts:
            self.offsets.append(self.offsets[-1] + len(part))

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, index: int) -> Session:  # type: ignore[override]  (no slices: see `head`)
        if not 0 <= index < len(self):
            raise IndexError(f"session {index} of {len(self)}")
        part = bisect.bisect_right(self.offsets, index) - 1
        return self.parts[part][index - self.offsets[part]]

    def __iter__(self) -> Iterator[Session]:
        for part in self.parts:
            yield from part

    def head(self, n: int) -> SessionChain:
        """The first `n` sessions."""
        return SessionChain([part.head(max(0, n - start)) for part, start in zip(self.parts, self.offsets)])


@dataclass(frozen=True)
class ExampleIndex:
    """Example i = prefix `prefix[i]` (0: the whole session) of chain session `session[i]`."""

    session: np.ndarray
    prefix: np.ndarray

    @classmethod
    def of(cls, chain: SessionChain, expand_prefixes: bool) -> ExampleIndex:
        """Every labelled prefix of every session (`labelled_prefixes`), or every whole session."""
        if not expand_prefixes:
            return cls(np.arange(len(chain), dtype=np.int64), np.zeros(len(chain), np.int32))
        counts, labelled = zip(*(part.turn_counts() for part in chain.parts)) if chain.parts else ((), ())
        counts = np.concatenate([np.zeros(0, np.int64), *counts])
        labelled = np.concatenate([np.zeros(0, bool), *labelled])
        session = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        number = np.arange(len(session), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts) + 1
        return cls(session[labelled], number[labelled].astype(np.int32))

    def __len__(self) -> int:
        return len(self.session)

    def subsample(self, size: int | None, seed: int) -> ExampleIndex:
        """`size` examples drawn as the eager path draws them (random.Random(seed).sample), when there are more."""
        if not size or len(self) <= size:
            return self
        picked = np.asarray(random.Random(seed).sample(range(len(self)), size), dtype=np.int64)
        return ExampleIndex(self.session[picked], self.prefix[picked])


def text_chars(example: ViewExample) -> int:
    """The length proxy of an example: characters of its queries (chat view) or of its text."""
    return sum(len(query) for query, _ in example.turns) if example.turns else len(example.text)


class LazyEncodedDataset(Dataset):
    """The examples of `index` over `chain`, viewed by `view` and encoded by `encoder` on access (module
    docstring: the algorithm, the guarantee, the length proxy). Items carry `EXAMPLE_INDEX` like EncodedDataset's."""

    def __init__(self, chain: SessionChain, index: ExampleIndex, view: View, encoder: Encoder) -> None:
        self.chain = chain
        self.index = index
        self.view = view
        self.encoder = encoder
        self._lengths: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.index)

    def example(self, i: int, session: Session | None = None) -> ViewExample:
        """The view of example i (`session`: its chain session, when the caller holds it)."""
        session = self.chain[int(self.index.session[i])] if session is None else session
        turns = int(self.index.prefix[i])
        return self.view(session.prefix(turns) if turns else session)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"example {i} of {len(self)}")
        i %= len(self)
        return {**self.encoder(self.example(i)), EXAMPLE_INDEX: i}

    def lengths(self) -> np.ndarray:
        """The `text_chars` of every example (int32; one pass in session order, then kept)."""
        if self._lengths is None:
            lengths = np.zeros(len(self), np.int32)
            order = np.argsort(self.index.session, kind="stable")
            held, session = -1, None
            for i in order:
                position = int(self.index.session[i])
                if position != held:
                    held, session = position, self.chain[position]
                lengths[i] = text_chars(self.example(i, session))
            self._lengths = lengths
        return self._lengths


def query_positions(queries: Sequence[Any], split: str) -> np.ndarray:
    """Positions (ascending, int64) of the single-turn queries of `split` (an ArrowRows: read from its column)."""
    if isinstance(queries, ArrowRows):
        import pyarrow.compute as pc

        same = pc.fill_null(pc.equal(queries.table().column("split"), split), False)
        return np.flatnonzero(same.to_numpy(zero_copy_only=False)).astype(np.int64)
    return np.asarray([k for k, query in enumerate(queries) if query.split == split], np.int64)
