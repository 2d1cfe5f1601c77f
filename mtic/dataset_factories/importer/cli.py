"""`mtic data import` (wired into mtic/cli.py by `add_import_command`)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mtic.data.errors import BundleError

COLUMN_FLAGS = (("text", "text"), ("intent", "intent"), ("session", "session_id"), ("turn", "turn"),
                ("split", "split"))
EPILOG = """example:
  mtic data import my_bundle --queries queries.csv --logs chats.jsonl --intents intents.txt \\
      --session-col conv_id --turn-col idx --test-share 0.2 --languages en
  mtic data import my_bundle --dataset csv --data-files labelled.csv --text-col utterance --intent-col label"""


def _languages(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    codes = tuple(code.strip() for code in text.split(",") if code.strip())
    if not codes:
        raise BundleError("--languages", "give language codes separated by commas, e.g. --languages en,zh")
    return codes


def options_from_args(args: argparse.Namespace) -> Any:
    """The ImportOptions of the parsed command line."""
    from mtic.dataset_factories.importer import ImportOptions
    from mtic.dataset_factories.importer.readers import Columns
    from mtic.dataset_factories.importer.sessions import Shares

    chosen = {role: getattr(args, f"{role}_col") for role, _ in COLUMN_FLAGS}
    columns = Columns(**{role: chosen[role] or default for role, default in COLUMN_FLAGS},
                      explicit=frozenset(role for role, name in chosen.items() if name))
    return ImportOptions(
        out=Path(args.out), queries=tuple(map(Path, args.queries or ())), logs=tuple(map(Path, args.logs or ())),
        dataset=args.dataset, split=args.split, dataset_config=args.dataset_config,
        data_files=tuple(args.data_files or ()), intents=Path(args.intents) if args.intents else None,
        columns=columns, shares=Shares(test=args.test_share, valid=args.valid_share, seed=args.seed),
        name=args.name, market=args.market, languages=_languages(args.languages), license=args.license,
        overwrite=args.overwrite,
    )


def _cmd_import(args: argparse.Namespace) -> int:
    from mtic.data.stats import bundle_dir_stats, stats_table
    from mtic.dataset_factories.importer import import_bundle

    report = import_bundle(options_from_args(args))
    print(stats_table([bundle_dir_stats(report.root)]))
    for note in report.notes:
        print(note)
    print(f"wrote the bundle to {report.root}; train on it with: python run.py +experiment=<name> "
          f"market.bundle={report.root.resolve()}")
    return 0


def add_import_command(data: Any) -> None:
    """Add `import` to the `mtic data` sub-parsers."""
    parser = data.add_parser(
        "import", help="build a bundle from your own data (CSV/TSV/JSONL files, a datasets dataset, an intent list)",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="bundle directory to write (new, empty, or a bundle with --overwrite)")
    given = parser.add_argument_group("inputs (at least one of --queries, --logs, --dataset)")
    given.add_argument("--queries", action="append", metavar="FILE",
                       help="labelled single-turn queries: .csv .tsv .jsonl .json (repeatable)")
    given.add_argument("--logs", action="append", metavar="FILE",
                       help="chat logs, one row per user turn with a session column (repeatable)")
    given.add_argument("--dataset", metavar="NAME_OR_PATH",
                       help="a dataset for datasets.load_dataset (hub name, builder such as csv, local folder, "
                            "data file .parquet/.arrow/.jsonl/.json/.csv); chat logs when it has the session column, "
                            "else queries")
    given.add_argument("--split", default="train", help="--dataset: the split to load (default train)")
    given.add_argument("--dataset-config", default=None, help="--dataset: its configuration name")
    given.add_argument("--data-files", action="append", metavar="FILE", help="--dataset: data files (repeatable)")
    given.add_argument("--intents", metavar="FILE", help="intent list, one `Root > ... > Leaf` path per line "
                                                         "(.txt: path[TAB id[TAB title]]; .csv/.tsv/.jsonl: path, id, title ...)")
    cols = parser.add_argument_group("columns (defaults: text, intent, session_id, turn, split)")
    for role, default in COLUMN_FLAGS:
        cols.add_argument(f"--{role}-col", default=None, metavar="NAME", help=f"the {role} column (default {default})")
    splits = parser.add_argument_group("splits of the labelled sessions without a split value")
    splits.add_argument("--test-share", type=float, default=0.0, help="share to sessions/test.jsonl (default 0)")
    splits.add_argument("--valid-share", type=float, default=0.0, help="share to sessions/valid.jsonl (default 0)")
    splits.add_argument("--seed", type=int, default=0, help="seed of that draw (default 0)")
    meta = parser.add_argument_group("bundle.yaml")
    meta.add_argument("--name", default=None, help="bundle name (default: the output directory's name)")
    meta.add_argument("--market", default=None, help="market name (default: the output directory's name)")
    meta.add_argument("--languages", default=None, help="language codes, e.g. en,zh (default: guessed from the texts)")
    meta.add_argument("--license", default="unknown", help="licence of the data (default unknown)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle in OUT")
    parser.set_defaults(func=_cmd_import)
