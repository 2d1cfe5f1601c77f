"""xSID -> one data bundle per language: single-turn queries plus crafted multi-turn sessions.

Reads `<src>/{lang}.{valid,test}.conll` (or the repository layout `<src>/data/xSID-*/`): blocks separated by
blank lines, `# text = ...` and `# intent = ...` comment lines, then token lines (not needed here).

- Intents: the same set in every language = every intent of every `*.conll` file in the folder. `alarm/set_alarm`
  -> path `alarm > set_alarm`; the flat SNIPS intents get a parent from `SNIPS_PARENTS` (AddToPlaylist ->
  `music`, ...; an unknown flat intent -> `other`). xSID has no intent descriptions: titles are English (from
  `TITLES`, else made from the name) in every language, `title_en` = title; label = the leaf in words, with the
  parent appended to a one-word leaf (`weather/find` -> "Find Weather").
- Splits: xSID ships no training file for most languages (and en.train is absent here), so the single-turn
  training data is the `valid` file: per intent, `valid_share` of its distinct queries (seeded) is held out and
  split alternately into single-turn valid and the valid-session pool (disjoint; single-turn valid first); the
  rest is single-turn train and feeds train/unlabeled sessions. The `test` file feeds only the test sessions.
  A valid/test text equal to a training-side text (single-turn train or valid, compared after
  `mtic.data.schema.normalise_text`) is dropped from its pool (counted in bundle.yaml: `eval_dropped_texts`), so no
  valid/test turn appears in a training-side file. A few source sentences have an empty text (e.g. one
  in no.valid): they are skipped and counted in bundle.yaml (`skipped_empty_texts`).
- Sessions are crafted (`mtic.dataset_factories.craft`) with the SGD transition model (`transitions=sgd`, or a bundle
  directory to estimate from); each split's first intent follows its pool's intent frequencies. No follow-up
  texts exist, so every turn is a self-contained query of its intent.
"""
from __future__ import annotations

import logging
import re
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

log = logging.getLogger("mtic")
NAME = "xsid"
FOLDER = "xsid"
LICENSE = "CC BY-SA 4.0"
SOURCE = "xSID 0.7 (mainlp/xsid)"
OTHER_PARENT = "other"
SNIPS_PARENTS: dict[str, str] = {
    "AddToPlaylist": "music",
    "PlayMusic": "music",
    "BookRestaurant": "restaurant",
    "GetWeather": "weather",
    "RateBook": "creative_work",
    "SearchCreativeWork": "creative_work",
    "SearchScreeningEvent": "movie",
}
TITLES: dict[str, str] = {
    "alarm/cancel_alarm": "Cancel or delete an alarm",
    "alarm/modify_alarm": "Change the time or settings of an existing alarm",
    "alarm/set_alarm": "Set a new alarm",
    "alarm/show_alarms": "Show the alarms that are set",
    "alarm/snooze_alarm": "Snooze a ringing alarm",
    "alarm/time_left_on_alarm": "Ask how much time is left before an alarm goes off",
    "reminder/cancel_reminder": "Cancel or delete a reminder",
    "reminder/set_reminder": "Set a reminder for a task or an event",
    "reminder/show_reminders": "Show the reminders that are set",
    "weather/find": "Ask about the weather forecast or the current weather",
    "AddToPlaylist": "Add a song or an artist to a playlist",
    "BookRestaurant": "Book a table at a restaurant",
    "GetWeather": "Ask about the weather forecast or the current weather",
    "PlayMusic": "Play music by song, artist, album or genre",
    "RateBook": "Give a rating to a book",
    "SearchCreativeWork": "Find a creative work such as a book, song, film, TV show or game",
    "SearchScreeningEvent": "Find movie showtimes or the films playing at a cinema",
}
_META = re.compile(r"^#\s*([\w-]+)\s*=\s?(.*)$")


@dataclass(frozen=True)
class XSIDOptions:
    """Converter options (all part of the cache key)."""

    lang: str = "en"
    seed: int = 0
    valid_share: float = 0.2  # of each intent's valid-file queries, held out (single-turn valid, valid sessions)
    n_train: int = 300
    n_unlabeled: int = 600
    n_valid: int = 100
    n_test: int | None = None  # None = as many sessions as the test file has queries
    transitions: str = SGD  # "sgd" (SGD_TRANSITIONS) or a bundle directory with labelled train sessions

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z][\w-]*", self.lang or ""):
            raise ValueError(f"lang must be a language code such as en or de, got {self.lang!r}")
        check_craft_options(self)


def data_dir(src: Path) -> Path:
    """`src` when it holds `*.conll` files, else the newest `src/data/xSID-*` folder of the repository layout."""
    for folder in [src, *sorted(src.glob("data/xSID-*"), reverse=True)]:
        if folder.is_dir() and any(folder.glob("*.conll")):
            return folder
    raise MissingBundleFileError(src, "no xSID *.conll files here (nor under data/xSID-*/)")


def source_files(src: Path, options: XSIDOptions) -> list[Path]:
    """Every file the converter reads: all `*.conll` (the intent set) + the transitions bundle, if any."""
    folder = data_dir(src)
    for split in ("valid", "test"):
        if not (folder / f"{options.lang}.{split}.conll").is_file():
            langs = sorted({p.name.split(".")[0] for p in folder.glob("*.test.conll")})
            raise MissingBundleFileError(folder / f"{options.lang}.{split}.conll",
                                         f"no xSID {split} file for '{options.lang}' (languages here: {', '.join(langs)})")
    files = sorted(folder.glob("*.conll"))
    if options.transitions != SGD:
        files += sorted(Path(options.transitions).expanduser().rglob("*.jsonl"))
    return files


def read_conll(path: Path) -> tuple[list[tuple[str, str]], int]:
    """((text, intent) per sentence, number of sentences skipped for an empty text)."""
    rows: list[tuple[str, str]] = []
    skipped = 0
    block: list[tuple[int, str]] = []
    for number, line in enumerate([*read_text(path).splitlines(), ""], start=1):
        if line.strip():
            block.append((number, line))
            continue
        if not block:
            continue
        meta: dict[str, str] = {}
        for at, raw in block:
            match = _META.match(raw)
            if match:
                meta.setdefault(match.group(1), match.group(2))
            elif not raw.startswith("#") and len(raw.split("\t")) < 3:
                raise BundleError(path, "token line needs tab-separated columns: index, token, intent, slot", at)
        for key in ("text", "intent"):
            if key not in meta:
                raise BundleError(path, f"sentence without a '# {key} = ...' line", block[0][0])
        if not meta["intent"].strip():
            raise BundleError(path, "empty '# intent = ...'", block[0][0])
        if meta["text"].strip():
            rows.append((meta["text"].strip(), meta["intent"].strip()))
        else:
            skipped += 1
        block = []
    return rows, skipped


def intent_of(intent_id: str, leaves: dict[str, int]) -> Intent:
    """The Intent of an xSID intent name (`leaves` counts leaf names: a shared leaf becomes the full id)."""
    parent, _, leaf = intent_id.rpartition("/")
    parent = parent or SNIPS_PARENTS.get(intent_id, OTHER_PARENT)
    leaf_name = leaf if leaves[leaf] == 1 else intent_id
    label = split_words(leaf)
    if len(label.split()) == 1:
        label = f"{label} {split_words(parent)}"
    title = TITLES.get(intent_id) or f"{sentence(leaf)} ({parent.replace('_', ' ')})"
    return Intent(id=intent_id, title=title, path=(parent, leaf_name), title_en=title, label=label)


def build(src: Path, opts: XSIDOptions) -> tuple[Bundle, list[Session]]:
    """The xSID bundle of `opts.lang` and the gold labels of its unlabelled sessions (see the module docstring)."""
    files = source_files(src, opts)
    folder = data_dir(src)
    every = {intent for p in files if p.suffix == ".conll" for _, intent in read_conll(p)[0]}
    leaves: dict[str, int] = {}
    for intent_id in every:
        leaf = intent_id.rpartition("/")[2]
        leaves[leaf] = leaves.get(leaf, 0) + 1
    intents = [intent_of(i, leaves) for i in sorted(every)]
    parents = {i.id: i.path[:-1] for i in intents}
    valid_rows, skipped_valid = read_conll(folder / f"{opts.lang}.valid.conll")
    test_rows, skipped_test = read_conll(folder / f"{opts.lang}.test.conll")
    by_intent: dict[str, list[str]] = {}
    for text, intent in valid_rows:
        by_intent.setdefault(intent, []).append(text)
    test_pool: dict[str, list[str]] = {}
    for text, intent in test_rows:
        test_pool.setdefault(intent, []).append(text)
    train_pool, held = holdout_split(by_intent, opts.valid_share, f"xsid/{opts.lang}/{opts.seed}/holdout")
    single_valid, session_valid = split_held_out(held, f"xsid/{opts.lang}/{opts.seed}/valid")
    single = [SingleTurnQuery(t, i, "train") for i in sorted(train_pool) for t in train_pool[i]]
    single += [SingleTurnQuery(t, i, "valid") for i in sorted(single_valid) for t in single_valid[i]]
    n_test = len(test_rows) if opts.n_test is None else opts.n_test
    crafted = craft_from_pools(load_transitions(opts.transitions), train_pool, session_valid, test_pool,
                               parents.__getitem__, n_train=opts.n_train, n_unlabeled=opts.n_unlabeled,
                               n_valid=opts.n_valid, n_test=n_test, seed=f"xsid/{opts.lang}/{opts.seed}",
                               single_turn_texts=[q.text for q in single])
    if skipped_valid + skipped_test:
        log.warning("xsid %s: skipped %d sentences with an empty text", opts.lang, skipped_valid + skipped_test)
    extra = {
        "seed": opts.seed,
        "prepare": {"converter": NAME, **asdict(opts)},
        "source_sentences": {"valid": len(valid_rows), "test": len(test_rows)},
        "skipped_empty_texts": skipped_valid + skipped_test,
        "valid_session_queries": sum(len(v) for v in session_valid.values()),
        "test_nonfirst_share": nonfirst_share(crafted.test),
        "test_followup_share": 0.0,
        "eval_dropped_texts": crafted.eval_dropped_texts,
        "eval_excluded_intents": crafted.eval_excluded_intents,
    }
    description = (
        f"xSID ({opts.lang}): single-turn train/valid from {opts.lang}.valid.conll, test sessions from "
        f"{opts.lang}.test.conll; multi-turn sessions crafted with the SGD transition model (seed {opts.seed})."
    )
    meta = BundleMeta(name=f"xsid-{opts.lang}", market=f"xsid_{opts.lang}", languages=(opts.lang,), source=SOURCE,
                      license=LICENSE, description=description, extra=extra)
    return Bundle(meta=meta, intents=intents, single_turn=single, sessions=crafted.bundle_sessions()), crafted.unlabeled_gold


def cache_name(opts: XSIDOptions) -> str:
    return f"xsid-{opts.lang}"
