"""The intents of an import: an intent-list file, or the distinct intent values of the data.

An intent list holds one intent per line or record, its category path written root first with `>`
(`Logistics > Order > Cancellation`):
- `.txt` (any other suffix too): `path[<TAB>id[<TAB>title]]` per line; blank lines and `#` comments skipped;
- `.csv` / `.tsv` with a header, or `.jsonl` / `.json` records: a `path` column (JSONL: a string or a list of
  names) and optional `id`, `title`, `title_en`, `label`, `label_en`.
Without an id, an intent's id is its path slugged (`logistics.order.cancellation`); without a title, the title is
the path's leaf. Without an intent list, each distinct intent value of the data is an intent: a value with `>` is
a path, any other a one-level path; ids are slugged the same way, titles are the leaf.

A data value names an intent of the list by its id or its path (spaces around `>` do not matter), else by its
path, title or leaf name compared after `normalise_text` (case, width and spacing ignored) where no other intent
has the same one.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtic.data.errors import BundleError
from mtic.data.schema import Intent, normalise_text
from mtic.data.taxonomy import padded_path
from mtic.dataset_factories.importer.readers import COMMAND, Row, known_format, read_table

SEPARATOR = ">"
OPTIONAL_FIELDS = ("id", "title", "title_en", "label", "label_en")
Path_ = tuple[str, ...]
AMBIGUOUS = ""  # a lookup key that more than one intent has


def split_path(value: str, where: tuple[str, int]) -> Path_:
    """`"A > B > C"` -> ("A", "B", "C"); an empty category is a BundleError at `where` (source, line)."""
    parts = tuple(part.strip() for part in value.split(SEPARATOR))
    if not all(parts):
        raise BundleError(where[0], f"empty category name in the path {value!r}", where[1])
    return parts


def path_text(path: Path_) -> str:
    return f" {SEPARATOR} ".join(path)


def slug(text: str) -> str:
    """Lower-case word characters (any script) joined by `_`: "Card Arrival" -> "card_arrival"."""
    return re.sub(r"\W+", "_", unicodedata.normalize("NFKC", text).casefold()).strip("_")


def _digest(path: Path_) -> str:
    return hashlib.sha1(path_text(path).encode("utf-8")).hexdigest()[:6]


def assign_ids(paths: Iterable[Path_], given: dict[Path_, str] | None = None) -> dict[Path_, str]:
    """A stable id per path: the given one, else the slugs of its names joined by `.`; a slug that is empty,
    or that another path's slug or a given id also is, gets `-<6 hex digits of the path's SHA-1>` appended."""
    given = given or {}
    paths = list(dict.fromkeys(paths))
    slugs = {path: ".".join(slug(name) for name in path) for path in paths if path not in given}
    counts: dict[str, int] = {}
    for value in [*slugs.values(), *given.values()]:
        counts[value] = counts.get(value, 0) + 1
    ids = dict(given)
    for path, value in slugs.items():
        clean = value and all(value.split("."))
        ids[path] = value if clean and counts[value] == 1 else f"{value or 'intent'}-{_digest(path)}"
    return {path: ids[path] for path in paths}


def _check_padded(paths: dict[Path_, tuple[str, int]]) -> None:
    """Two paths that become one class once padded to the same depth ("Order" and "Order > Order") are an error
    at the second one's origin."""
    depth = max(len(p) for p in paths)
    seen: dict[Path_, Path_] = {}
    for path, where in paths.items():
        key = padded_path(path, depth)
        if key in seen:
            raise BundleError(where[0], f"the path {path_text(path)} is the class of {path_text(seen[key])} once "
                                        f"padded to depth {depth} (a shorter path repeats its leaf); rename one", where[1])
        seen[key] = path


@dataclass
class Catalogue:
    """The intents of an import and how data values name them."""

    intents: list[Intent]
    origin: str
    keys: dict[str, str] = field(default_factory=dict, init=False)
    loose: dict[str, str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        paths = {path_text(intent.path): intent.id for intent in self.intents}
        self.keys = {**paths, **{intent.id: intent.id for intent in self.intents}}
        for intent in self.intents:
            for name in {intent.title, intent.path[-1], path_text(intent.path)}:
                key = normalise_text(name)
                self.loose[key] = intent.id if self.loose.get(key, intent.id) == intent.id else AMBIGUOUS

    def resolve(self, value: str, row: Row) -> str:
        """The intent id a data value names; a value no intent (or several) has is an error at `row`."""
        key = path_text(split_path(value, (row.source, row.line))) if SEPARATOR in value else value.strip()
        found = self.keys.get(key, self.loose.get(normalise_text(key)))
        if found is None:
            raise row.error(f"intent {value!r} is not in {self.origin} (give an id, a path, or a unique title)")
        if found == AMBIGUOUS:
            raise row.error(f"intent {value!r} is the title or leaf of several intents of {self.origin}; "
                            "give its id or whole path")
        return found


def catalogue_from_values(rows: Iterable[Row]) -> Catalogue:
    """One intent per distinct intent value of `rows` (sorted by path)."""
    paths: dict[Path_, tuple[str, int]] = {}
    for row in rows:
        if row.intent is not None:
            where = (row.source, row.line)
            path = split_path(row.intent, where) if SEPARATOR in row.intent else (row.intent,)
            paths.setdefault(path, where)
    if not paths:
        raise BundleError(COMMAND, "no intent values in the data and no --intents list: nothing to classify")
    _check_padded(paths)
    ids = assign_ids(sorted(paths))
    intents = [Intent(id=ids[path], title=path[-1], path=path) for path in sorted(paths)]
    return Catalogue(intents, "the data's intent values")


def _text_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    from mtic.dataset_factories.prepare.common import read_text

    for number, raw in enumerate(read_text(path).removeprefix("\ufeff").split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cells = line.split("\t")
        if len(cells) > 3:
            raise BundleError(path, f"{len(cells)} tab-separated fields; a line is path[<TAB>id[<TAB>title]]", number)
        yield number, dict(zip(("path", "id", "title"), cells))


def _list_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise BundleError(path, "no such intent list file" if not path.exists() else "is not a file")
    if known_format(path) is None:
        return _text_records(path)
    table = read_table(path)
    if table.columns is not None and "path" not in table.columns:
        raise BundleError(path, f"missing column 'path' (columns: {', '.join(table.columns)})", 1)
    return iter(table.records)


def _record_path(value: Any, where: tuple[str, int]) -> Path_:
    if isinstance(value, str) and value.strip():
        return split_path(value, where)
    if isinstance(value, list) and value and all(isinstance(name, str) and name.strip() for name in value):
        return tuple(name.strip() for name in value)
    raise BundleError(where[0], "'path' must be a category path such as \"Logistics > Order > Cancellation\"", where[1])


def _optional(record: dict[str, Any], key: str, where: tuple[str, int]) -> str | None:
    value = record.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise BundleError(where[0], f"'{key}' must be a text, got {value!r}", where[1])
    return value.strip()


def read_intent_list(path: Path) -> Catalogue:
    """The intents of an intent-list file (format in the module docstring); duplicate ids or paths are errors
    naming the file and line."""
    entries: dict[Path_, tuple[dict[str, str | None], tuple[str, int]]] = {}
    given: dict[Path_, str] = {}
    id_lines: dict[str, int] = {}
    for line, record in _list_records(path):
        where = (str(path), line)
        intent_path = _record_path(record.get("path"), where)
        if intent_path in entries:
            raise BundleError(path, f"duplicate path {path_text(intent_path)} (first on line {entries[intent_path][1][1]})",
                              line)
        fields = {key: _optional(record, key, where) for key in OPTIONAL_FIELDS}
        if fields["id"] is not None:
            if fields["id"] in id_lines:
                raise BundleError(path, f"duplicate intent id '{fields['id']}' (first on line {id_lines[fields['id']]})",
                                  line)
            id_lines[fields["id"]] = line
            given[intent_path] = fields["id"]
        entries[intent_path] = (fields, where)
    if not entries:
        raise BundleError(path, "no intents in the intent list")
    _check_padded({p: where for p, (_, where) in entries.items()})
    ids = assign_ids(entries, given)
    intents = [Intent(id=ids[p], title=f["title"] or p[-1], path=p, title_en=f["title_en"], label=f["label"],
                      label_en=f["label_en"]) for p, (f, _) in entries.items()]
    return Catalogue(intents, f"the intent list {path}")
