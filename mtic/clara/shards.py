"""Deterministic shards of a labelling run, each a resumable records file, and their merge (no Ray needed here).

Plan. `n` sessions in input order are cut into shards of `size` sessions, shard i = positions [i*size,
(i+1)*size); `size` is a whole number of labelling batches, so every batch of a shard is a batch of the one-process
run (positions k // batch_size): the LLM is asked the same prompts together, which gives the same answers and the
same answer-cache keys. The plan depends only on (n, size); the shard files live in `<stem>.shards/<size>/`, so
files of another shard size are never mixed in.

Shard file. `label_shard` labels one shard exactly as pseudo_label labels a whole run (pseudo_label.append_pending
under the shard file's lock): one whole line per record, appended and fsynced; after a crash (kill -9, a lost node)
only a torn final line is cut and the sessions already there are skipped. Sessions already in the run's records
file (a one-process run stopped part-way) are skipped too.

Merge. `gather` reads the records of every shard (and of the run's records file) and returns them in input order;
written with pseudo_label.write_outputs they make the file an uninterrupted one-process run writes, byte for byte.
"""
from __future__ import annotations

import shutil
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtic.clara.pseudo_label import LabelBatch, append_pending, records_lock, recover
from mtic.data.schema import Session

SHARDS_SUFFIX = ".shards"


@dataclass(frozen=True)
class Shard:
    """Positions [start, stop) of the input sessions."""

    index: int
    start: int
    stop: int


def shard_size(batch_size: int, shard_batches: int) -> int:
    """Sessions per shard: a whole number of labelling batches."""
    if batch_size < 1 or shard_batches < 1:
        raise ValueError("batch_size and shard_batches must be at least 1")
    return batch_size * shard_batches


def plan_shards(n_sessions: int, size: int) -> list[Shard]:
    """Consecutive shards of `size` sessions (the last one shorter) covering positions 0..n_sessions-1."""
    return [Shard(i, start, min(start + size, n_sessions)) for i, start in enumerate(range(0, n_sessions, size))]


def shards_dir(records: str | Path, size: int) -> Path:
    """`<stem>.shards/<size>/` next to the records file."""
    records = Path(records)
    return records.with_name(f"{records.stem}{SHARDS_SUFFIX}") / str(size)


def shard_path(folder: Path, shard: Shard) -> Path:
    return folder / f"{shard.index:06d}.jsonl"


def label_shard(sessions: Sequence[Session], label_batch: LabelBatch, path: str | Path, batch_size: int,
                skip: Collection[str] = ()) -> dict[str, Any]:
    """Label one shard's sessions (its slice of the input, starting at a multiple of `batch_size`) into `path`,
    resuming: sessions in the file or in `skip` are not labelled again. Returns the run figures (pseudo_label's)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with records_lock(path):
        _, run = append_pending(sessions, label_batch, path, batch_size, skip=skip)
    return run


def gather(sessions: Sequence[Session], shard_files: Sequence[Path],
           done: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every session's record in input order, from `done` (the run's records file) or the shard files.
    A session found nowhere is a RuntimeError naming it (a shard that did not finish)."""
    found = dict(done)
    for path in shard_files:
        for key, record in recover(path).items():
            found.setdefault(key, record)
    missing = [s.id for s in sessions if s.id not in found]
    if missing:
        raise RuntimeError(f"{len(missing)} session(s) have no record after labelling (first: {missing[0]!r}); "
                           "rerun to resume the unfinished shards")
    return [found[s.id] for s in sessions]


def remove_shards(records: str | Path) -> None:
    """Remove every shard folder of a records file (called once the merged file is written)."""
    records = Path(records)
    shutil.rmtree(records.with_name(f"{records.stem}{SHARDS_SUFFIX}"), ignore_errors=True)
