"""A dataset through the `datasets` library: a hub name, a builder with local files (`csv` + data files), a
local folder of data files, one local data file (its builder chosen by its suffix: FILE_BUILDERS), or a folder
written by `Dataset.save_to_disk`.

Rows are numbered from 1 and reported as `<dataset>[<split>]:<row>`, where <dataset> is the data file when exactly
one is given (`--dataset json --data-files chats.jsonl` reports `chats.jsonl[train]:<row>`). Class-label columns
(`ClassLabel`, as the hub's intent datasets store their labels) are read as their names, not their integer codes
(-1 = no label).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mtic.data.errors import BundleError
from mtic.dataset_factories.importer.readers import Record, Table

SAVED_MARKERS = ("state.json", "dataset_dict.json")  # what `save_to_disk` writes
FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".jsonl": "json", ".json": "json", ".csv": "csv"}


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _saved_split(path: Path, split: str) -> Any:
    """A split of a `save_to_disk` folder (a plain Dataset folder has one split: the one saved)."""
    from datasets import DatasetDict, load_from_disk

    loaded = load_from_disk(str(path))
    if isinstance(loaded, DatasetDict):
        if split not in loaded:
            raise BundleError(path, f"no split '{split}' (splits: {', '.join(loaded)}); choose one with --split")
        return loaded[split]
    return loaded


def _file_builder(path: Path, data_files: Sequence[str]) -> str:
    """The packaged builder that reads the one data file `path`."""
    builder = FILE_BUILDERS.get(path.suffix.lower())
    if builder is None or data_files:
        raise BundleError(path, f"a data file is read by its suffix ({', '.join(FILE_BUILDERS)}) and without "
                                "--data-files; else give --dataset <builder> --data-files FILE")
    return builder


def load(name: str, split: str, config: str | None = None, data_files: Sequence[str] = (), revision: str | None = None,
         cache_dir: str | None = None) -> Any:
    """The `datasets.Dataset` of `name` and `split` (`revision`: a hub commit or tag; `cache_dir`: where datasets
    keeps its Arrow files, None = its default); a failure is one BundleError line naming the dataset."""
    import datasets

    datasets.disable_progress_bars()
    local = Path(name).expanduser()
    try:
        if local.is_dir() and any((local / marker).is_file() for marker in SAVED_MARKERS):
            return _saved_split(local, split)
        if local.is_file():
            return datasets.load_dataset(_file_builder(local, data_files), split=split, data_files=[str(local)],
                                         cache_dir=cache_dir)
        return datasets.load_dataset(name, config, split=split, data_files=list(data_files) or None,
                                     revision=revision, cache_dir=cache_dir)
    except BundleError:
        raise
    except (OSError, ValueError, ImportError, datasets.exceptions.DatasetsError) as err:
        raise BundleError(name, f"cannot load the dataset (split {split}): {_one_line(err)}") from None


def _decoders(features: Any) -> dict[str, Any]:
    """column -> ClassLabel for the class-label columns."""
    from datasets import ClassLabel

    return {name: feature for name, feature in features.items() if isinstance(feature, ClassLabel)}


def _decoded(record: Record, decoders: dict[str, Any]) -> Record:
    for name, feature in decoders.items():
        value = record.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            record[name] = None if value < 0 else feature.int2str(value)
    return record


def dataset_table(name: str, split: str, config: str | None = None, data_files: Sequence[str] = ()) -> Table:
    """The rows of a dataset as a Table named `<name>[<split>]`."""
    dataset = load(name, split, config, data_files)
    decoders = _decoders(dataset.features)

    def records() -> Iterator[tuple[int, Record]]:
        for number, record in enumerate(dataset, start=1):
            yield number, _decoded(dict(record), decoders)

    return Table(row_source(name, split, data_files), tuple(dataset.column_names), records(), header_line=None)


def row_source(name: str, split: str, data_files: Sequence[str] = ()) -> str:
    """How rows of a loaded dataset are named in errors (`<source>:<row>`): `<data file>[<split>]` when exactly one
    data file is given, else `<name>[<split>]`."""
    return f"{data_files[0] if len(data_files) == 1 else name}[{split}]"
