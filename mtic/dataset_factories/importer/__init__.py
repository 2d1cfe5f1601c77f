"""`mtic data import`: a data bundle from a user's own data (README, "Bring your own data").

Inputs (any mix, at least one):
- `queries`: CSV / TSV / JSONL / JSON files of labelled single-turn queries (`text`, `intent`, optional `split`)
  -> single_turn.jsonl;
- `logs`: chat-log files, one row per user turn (`session_id`, `text`, optional `turn`, `intent`, `split`) ->
  sessions: labelled ones (the last turn has an intent) to train / valid / test, the others to unlabeled;
- `dataset`: a dataset through `datasets.load_dataset` (hub name, builder + data files, local folder, one local
  data file such as a .parquet, or a `save_to_disk` folder), read as chat logs when it has the session column,
  else as queries;
- `intents`: an intent list with `>` category paths (else the distinct intent values are the intents).
Parts: `readers` (files and column map), `hf` (datasets), `intents`, `sessions` (grouping and splits),
`languages` (the guess without --languages), `cli` (the command). Every bad input row is one BundleError naming
the input file and line; the written bundle is then read back with `read_bundle`, so whatever it holds is valid.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mtic.data.bundle import BUNDLE_FILE, Bundle, read_bundle, write_bundle
from mtic.data.errors import BundleError
from mtic.data.schema import BundleMeta
from mtic.dataset_factories.importer.hf import dataset_table
from mtic.dataset_factories.importer.intents import Catalogue, catalogue_from_values, read_intent_list
from mtic.dataset_factories.importer.languages import guess_languages
from mtic.dataset_factories.importer.readers import COMMAND, LOGS, QUERIES, Columns, Row, read_table, rows_of
from mtic.dataset_factories.importer.sessions import Shares, assign_splits, build_session, group_sessions, single_turn


@dataclass(frozen=True)
class ImportOptions:
    """Everything `import_bundle` needs; the fields mirror the command's flags."""

    out: Path
    queries: tuple[Path, ...] = ()
    logs: tuple[Path, ...] = ()
    dataset: str | None = None
    split: str = "train"
    dataset_config: str | None = None
    data_files: tuple[str, ...] = ()
    intents: Path | None = None
    columns: Columns = field(default_factory=Columns)
    shares: Shares = field(default_factory=Shares)
    name: str | None = None
    market: str | None = None
    languages: tuple[str, ...] = ()
    license: str = "unknown"
    overwrite: bool = False

    def __post_init__(self) -> None:
        if not (self.queries or self.logs or self.dataset):
            raise BundleError(COMMAND, "no input: give --queries, --logs and/or --dataset")
        for flag, share in (("--test-share", self.shares.test), ("--valid-share", self.shares.valid)):
            if not 0.0 <= share <= 1.0:
                raise BundleError(COMMAND, f"{flag} must be in [0, 1], got {share}")
        if self.shares.test + self.shares.valid > 1.0:
            raise BundleError(COMMAND, "--test-share + --valid-share must be at most 1 (the rest is train)")


@dataclass(frozen=True)
class ImportReport:
    """Where the bundle went and what the import decided on the user's behalf (market, languages, intents)."""

    root: Path
    notes: tuple[str, ...]


@dataclass
class Inputs:
    """The rows read, and the names of the inputs (for bundle.yaml)."""

    queries: list[Row] = field(default_factory=list)
    logs: list[Row] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    @property
    def rows(self) -> list[Row]:
        return self.queries + self.logs


def replaceable(out: Path, overwrite: bool) -> bool:
    """Whether the bundle may be written over `out`: an empty directory may; an existing bundle (bundle.yaml)
    only with `overwrite`; a file or a directory holding anything else never."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise BundleError(out, "is a file; give a new directory for the bundle")
    if not any(out.iterdir()):
        return True
    if not (out / BUNDLE_FILE).is_file():
        raise BundleError(out, f"is a non-empty directory without {BUNDLE_FILE}; give a new directory (--overwrite "
                               "replaces bundles only)")
    if not overwrite:
        raise BundleError(out, "already holds a bundle; pass --overwrite to replace it")
    return True


def read_inputs(options: ImportOptions) -> Inputs:
    """Rows of every input, query files first, then chat logs, then the dataset."""
    inputs = Inputs()
    columns = options.columns
    for kind, paths, into in ((QUERIES, options.queries, inputs.queries), (LOGS, options.logs, inputs.logs)):
        for path in paths:
            into.extend(rows_of(read_table(Path(path).expanduser()), kind, columns))
            inputs.sources.append(str(path))
    if options.dataset:
        table = dataset_table(options.dataset, options.split, options.dataset_config, options.data_files)
        present = table.columns or ()
        if "session" in columns.explicit and columns.session not in present:
            raise BundleError(table.source, f"missing column '{columns.session}' (columns: {', '.join(present)})")
        logs = columns.session in present
        (inputs.logs if logs else inputs.queries).extend(rows_of(table, LOGS if logs else QUERIES, columns))
        inputs.sources.append(table.source)
    if "split" in columns.explicit and not any(row.split for row in inputs.rows):
        raise BundleError(COMMAND, f"no input has a value in the split column '{columns.split}' (--split-col)")
    return inputs


def _meta(options: ImportOptions, inputs: Inputs, catalogue: Catalogue) -> tuple[BundleMeta, list[str]]:
    out = options.out.expanduser().resolve()
    market = options.market or out.name
    notes = [f"market: {market} ({'--market' if options.market else 'the output directory name; set with --market'})"]
    if options.languages:
        languages, how = options.languages, "--languages"
    else:
        guess = guess_languages(row.text for row in inputs.rows)
        languages, how = guess.languages, f"{guess.reason}; set with --languages"
    notes.append(f"languages: {', '.join(languages)} ({how})")
    notes.append(f"intents: {len(catalogue.intents)} from {catalogue.origin}")
    settings = {"inputs": inputs.sources, "intents": str(options.intents) if options.intents else None,
                "test_share": options.shares.test, "valid_share": options.shares.valid, "seed": options.shares.seed}
    meta = BundleMeta(name=options.name or out.name, market=market, languages=tuple(languages), source="user",
                      license=options.license, description=f"imported by `{COMMAND}` from {', '.join(inputs.sources)}",
                      extra={"import": settings})
    return meta, notes


def build(options: ImportOptions) -> tuple[Bundle, list[str]]:
    """The bundle of the inputs (not written) and the notes on what was chosen for the user."""
    inputs = read_inputs(options)
    if not inputs.rows:
        raise BundleError(COMMAND, f"the inputs hold no rows ({', '.join(inputs.sources)})")
    groups = group_sessions(inputs.logs)
    catalogue = read_intent_list(Path(options.intents).expanduser()) if options.intents else \
        catalogue_from_values(inputs.rows)
    queries = single_turn(inputs.queries, catalogue)
    sessions = assign_splits([build_session(group, catalogue) for group in groups], options.shares)
    meta, notes = _meta(options, inputs, catalogue)
    return Bundle(meta=meta, intents=catalogue.intents, single_turn=queries, sessions=sessions), notes


def import_bundle(options: ImportOptions) -> ImportReport:
    """Build the bundle, write it to `options.out` (atomically) and validate it with `read_bundle`."""
    out = Path(options.out).expanduser()
    replace = replaceable(out, options.overwrite)
    bundle, notes = build(options)
    root = write_bundle(bundle, out, overwrite=replace)
    read_bundle(root)
    return ImportReport(root, tuple(notes))
