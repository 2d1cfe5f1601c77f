"""The reader a row file gets by its size, and the Arrow cache of the big ones.

A row file (`single_turn.jsonl`, `sessions/<split>.jsonl`, or a sessions file a pipeline reads) of at most
`arrow_above()` bytes is read into a list, as it always was. A bigger one is validated by the same record
generators (mtic/data/records.py) while its records are written, BATCH rows at a time, through
`datasets.arrow_writer.ArrowWriter` to an Arrow file under `<cache root>/bundle_arrow/`, and handed back as an
`ArrowRows` (memory-mapped, a record built on access): no Python object per row is kept.

`arrow_above()`: `$MTIC_BUNDLE_ARROW_ABOVE` (bytes; 0 sends every file through Arrow), default ARROW_ABOVE_BYTES =
16 MiB (about 100 k sessions of short turns), so the bundles of the paper keep the list reader and its cost.

Fingerprint of a cached file: the row file's resolved path, size, modification and change times (ns) and inode,
the kind of rows, the validation context (the known intent ids; whether a session needs a labelled last turn) and
CACHE_VERSION. A read with the same fingerprint maps the cached file without parsing or validating again: the
cache holds only files whose every row passed. Guarantee: the same rows in the same order as the list reader,
and the same first error (same records generator) for a file that fails; a file that fails leaves no cache. When
a file changes, its new cache replaces the old one (same path and context); concurrent builders each write a
private temporary file and rename it into place, so a reader sees a whole file or none.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from mtic.data.errors import BundleError

if TYPE_CHECKING:  # pyarrow and datasets are imported only when a big file is read
    from mtic.data.arrow_rows import ArrowRows, RowKind

T = TypeVar("T")
ARROW_ABOVE_BYTES = 16 * 2**20
ARROW_ABOVE_ENV = "MTIC_BUNDLE_ARROW_ABOVE"
CACHE_DIR = "bundle_arrow"
CACHE_VERSION = 1
BATCH = 20_000


def arrow_above() -> int:
    """Row files bigger than this many bytes are read through the Arrow cache."""
    value = os.environ.get(ARROW_ABOVE_ENV)
    if value is None or not value.strip():
        return ARROW_ABOVE_BYTES
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{ARROW_ABOVE_ENV} must be a number of bytes, got {value!r}") from None


def load_rows(path: Path, kind: str, records: Callable[[], Iterator[tuple[int, T]]],
              context: Iterable[str]) -> Sequence[T]:
    """The validated records of the row file `path`: a list for a small file, an ArrowRows of `kind` (a name in
    mtic.data.arrow_rows.KINDS) for a big one. `records()` streams (line, record) pairs and raises at the first bad
    row; `context` names everything besides the file that decides what `records` accepts (it enters the
    fingerprint)."""
    if path.stat().st_size <= arrow_above():
        return [record for _, record in records()]
    return cached_rows(path, kind, records, context)


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:20]


def cache_file(path: Path, kind: str, context: Iterable[str]) -> Path:
    """`<cache>/bundle_arrow/<path and context digest>-<file version digest>.arrow`."""
    from mtic.hub.constants import cache_root

    resolved = path.resolve()
    stat = resolved.stat()
    owner = _digest(CACHE_VERSION, str(resolved), kind, sorted(context))
    version = _digest(stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev)
    return cache_root() / CACHE_DIR / f"{owner}-{version}.arrow"


def cached_rows(path: Path, kind: str, records: Callable[[], Iterator[tuple[int, T]]],
                context: Iterable[str]) -> ArrowRows:
    """The rows of `path` from the Arrow cache, written first (and validated) when the cache lacks them."""
    from mtic.data.arrow_rows import KINDS, ArrowRows

    target = cache_file(path, kind, context)
    if not target.is_file():
        try:
            write_arrow(target, KINDS[kind], (record for _, record in records()))
        except OSError as err:  # the cache, not the row file (whose read errors are BundleErrors)
            raise BundleError(path, f"cannot write its Arrow cache in {target.parent} ({err.strerror or err}): set "
                                    f"MTIC_CACHE to a writable directory, or {ARROW_ABOVE_ENV} above this file's "
                                    "size to read it into memory") from None
        owner = target.name.split("-")[0]
        for stale in target.parent.glob(f"{owner}-*.arrow"):
            if stale != target:
                stale.unlink(missing_ok=True)
    return ArrowRows(target, kind)


def _batches(records: Iterator[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for record in records:
        batch.append(record)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_arrow(target: Path, kind: RowKind[T], records: Iterator[T]) -> Path:
    """Write `records` to the Arrow file `target` (via a temporary file renamed into place; nothing is left
    behind when `records` raises)."""
    from datasets import Features
    from datasets.arrow_writer import ArrowWriter

    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    try:
        writer = ArrowWriter(features=Features.from_arrow_schema(kind.schema), path=temporary)
        try:
            for batch in _batches(records, BATCH):
                writer.write_table(kind.table_of(batch))
            writer.finalize()
        finally:
            writer.close()
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target

