"""Banking77 -> a single-turn data bundle plus crafted multi-turn sessions.

Reads `<src>/{train.csv,test.csv,categories.json}` (or the repository layout `<src>/banking_data/`); the CSV files
have a `text,category` header. `categories.json` (a JSON list) is optional: without it the intents are the
categories of the CSV files.

- Intents: the 77 categories, flat (path = [category]: their names share prefixes such as `card_` or `top_up_`
  but no documented grouping exists, so none is invented). Title = the name as a sentence ("Card arrival"),
  label = the name in words ("Card Arrival"). Ids are the category names.
- Splits: per intent, `valid_share` of the distinct train.csv texts (seeded) is held out and split alternately
  into single-turn valid and the valid-session pool (disjoint; the latter's rows are in no single-turn split);
  the rest is single-turn train (every row kept, duplicates included) and feeds train/unlabeled sessions;
  test.csv feeds only the test sessions. A valid/test text equal to a training-side text (compared after
  `mtic.data.schema.normalise_text`) is dropped from its pool (bundle.yaml: `eval_dropped_texts`).
- Sessions are crafted with the SGD transition model; with a flat hierarchy every switch is a switch within
  the one category (the crafting fallback). Each split's first intent follows its pool's intent frequencies.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from mtic.data.bundle import Bundle
from mtic.data.errors import BundleError, MissingBundleFileError
from mtic.data.schema import BundleMeta, Intent, Session, SingleTurnQuery
from mtic.dataset_factories.prepare.common import (
    check_craft_options,
    craft_from_pools,
    holdout_split,
    nonfirst_share,
    read_text,
    sentence,
    split_held_out,
    split_words,
)
from mtic.dataset_factories.prepare.transitions import SGD, load_transitions

NAME = "banking77"
FOLDER = "banking77"
LICENSE = "CC BY 4.0"
SOURCE = "Banking77 (PolyAI-LDN/task-specific-datasets)"
FILES = ("train.csv", "test.csv")
CATEGORIES = "categories.json"
HEADER = ["text", "category"]


@dataclass(frozen=True)
class Banking77Options:
    """Converter options (all part of the cache key)."""

    seed: int = 0
    valid_share: float = 0.1
    n_train: int = 1000
    n_unlabeled: int = 2000
    n_valid: int = 300
    n_test: int | None = None  # None = as many sessions as test.csv has rows
    transitions: str = SGD

    def __post_init__(self) -> None:
        check_craft_options(self)


def data_dir(src: Path) -> Path:
    """`src` when it holds train.csv, else `src/banking_data` (the repository layout)."""
    for folder in (src, src / "banking_data"):
        if (folder / FILES[0]).is_file():
            return folder
    raise MissingBundleFileError(src / FILES[0], "Banking77 train.csv not found (nor under banking_data/)")


def source_files(src: Path, options: Banking77Options) -> list[Path]:
    folder = data_dir(src)
    files = []
    for name in FILES:
        if not (folder / name).is_file():
            raise MissingBundleFileError(folder / name, "Banking77 file missing")
        files.append(folder / name)
    if (folder / CATEGORIES).is_file():
        files.append(folder / CATEGORIES)
    if options.transitions != SGD:
        files += sorted(Path(options.transitions).expanduser().rglob("*.jsonl"))
    return files


def read_csv(path: Path) -> list[tuple[str, str, int]]:
    """(text, category, line) per row; a wrong header, a short row or an empty cell names the line."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    rows = []
    header = next(reader, None)
    if header is None or [h.strip() for h in header] != HEADER:
        raise BundleError(path, f"expected the header {','.join(HEADER)}, got {header!r}", 1)
    for row in reader:
        line = reader.line_num
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) != 2:
            raise BundleError(path, f"expected 2 columns (text, category), got {len(row)}", line)
        text, category = row[0].strip(), row[1].strip()
        if not text or not category:
            raise BundleError(path, "empty text or category", line)
        rows.append((text, category, line))
    return rows


def read_categories(path: Path) -> list[str]:
    try:
        names = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise BundleError(path, f"malformed JSON ({err.msg} at column {err.colno})", err.lineno) from None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise BundleError(path, "expected a JSON list of category names")
    if len(set(names)) != len(names):
        raise BundleError(path, "duplicate category names")
    return names


def build(src: Path, opts: Banking77Options) -> tuple[Bundle, list[Session]]:
    """The Banking77 bundle and the gold labels of its unlabelled sessions (see the module docstring)."""
    folder = data_dir(src)
    source_files(src, opts)
    train_rows, test_rows = (read_csv(folder / name) for name in FILES)
    has_list = (folder / CATEGORIES).is_file()
    names = read_categories(folder / CATEGORIES) if has_list else sorted({c for _, c, _ in train_rows + test_rows})
    known = set(names)
    for name, rows in zip(FILES, (train_rows, test_rows)):
        for _, category, line in rows:
            if category not in known:
                raise BundleError(folder / name, f"category {category!r} is not in {CATEGORIES}", line)
    intents = [Intent(id=n, title=sentence(n), path=(n,), label=split_words(n)) for n in names]
    by_intent: dict[str, list[str]] = {}
    for text, category, _ in train_rows:
        by_intent.setdefault(category, []).append(text)
    train_pool, held = holdout_split(by_intent, opts.valid_share, f"banking77/{opts.seed}/holdout")
    single_valid, session_valid = split_held_out(held, f"banking77/{opts.seed}/valid")
    valid_texts = {(t, i) for i, texts in single_valid.items() for t in texts}
    session_texts = {(t, i) for i, texts in session_valid.items() for t in texts}
    single = [SingleTurnQuery(t, c, "valid" if (t, c) in valid_texts else "train")
              for t, c, _ in train_rows if (t, c) not in session_texts]
    test_pool: dict[str, list[str]] = {}
    for text, category, _ in test_rows:
        test_pool.setdefault(category, []).append(text)
    n_test = len(test_rows) if opts.n_test is None else opts.n_test
    crafted = craft_from_pools(load_transitions(opts.transitions), train_pool, session_valid, test_pool,
                               lambda _: (), n_train=opts.n_train, n_unlabeled=opts.n_unlabeled,
                               n_valid=opts.n_valid, n_test=n_test, seed=f"banking77/{opts.seed}",
                               single_turn_texts=[q.text for q in single])
    extra = {
        "seed": opts.seed,
        "prepare": {"converter": NAME, **asdict(opts)},
        "source_rows": {"train": len(train_rows), "test": len(test_rows)},
        "valid_session_rows": len(train_rows) - len(single),  # train.csv rows kept for the valid sessions only
        "test_nonfirst_share": nonfirst_share(crafted.test),
        "test_followup_share": 0.0,
        "eval_dropped_texts": crafted.eval_dropped_texts,
        "eval_excluded_intents": crafted.eval_excluded_intents,
    }
    description = (
        "Banking77: single-turn train/valid from train.csv, test sessions from test.csv; multi-turn sessions "
        f"crafted with the SGD transition model (seed {opts.seed}); flat hierarchy."
    )
    meta = BundleMeta(name="banking77", market="banking77", languages=("en",), source=SOURCE, license=LICENSE,
                      description=description, extra=extra)
    return Bundle(meta=meta, intents=intents, single_turn=single, sessions=crafted.bundle_sessions()), crafted.unlabeled_gold


def cache_name(opts: Banking77Options) -> str:
    return "banking77"
