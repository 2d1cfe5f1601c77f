"""Read, validate and write data bundles: the one on-disk interface (layout in the README, "Your data: the bundle format")."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mtic.data.arrow_cache import load_rows
from mtic.data.errors import BundleError, MissingBundleFileError
from mtic.data.jsonl import MAX_JSON_DEPTH, MAX_LINE_CHARS, check_values, iter_jsonl, read_text, write_jsonl  # noqa: F401
from mtic.data.records import session_records, single_turn_records, text_field
from mtic.data.schema import SESSION_SPLITS, BundleMeta, Intent, Session, SingleTurnQuery
from mtic.data.taxonomy import SharedPathError, class_paths

BUNDLE_FILE = "bundle.yaml"
INTENTS_FILE = "intents.jsonl"
SINGLE_TURN_FILE = "single_turn.jsonl"
SESSIONS_DIR = "sessions"
UNLABELED_GOLD_FILE = "unlabeled.gold.jsonl"  # sessions/: the gold targets of a crafted bundle's unlabeled split
EVALUATION_SPLITS = ("valid", "test")
"""Session splits whose last turn must be labelled (the target) and which may not be empty when present."""


@dataclass
class Bundle:
    """A data bundle. `sessions` maps a split name to its sessions (absent file = absent key). The row sequences
    are lists, or for a big file `ArrowRows` (memory-mapped, a record built on access: mtic/data/arrow_cache.py);
    code that only iterates, indexes, slices or takes `len` cannot tell them apart."""

    meta: BundleMeta
    intents: list[Intent]
    single_turn: Sequence[SingleTurnQuery] = field(default_factory=list)
    sessions: dict[str, Sequence[Session]] = field(default_factory=dict)
    root: Path | None = None

    def require_sessions(self, split: str) -> Sequence[Session]:
        """Sessions of `split`, or a clear error naming the missing file."""
        if split not in self.sessions:
            where = self.root / SESSIONS_DIR / f"{split}.jsonl" if self.root else f"{SESSIONS_DIR}/{split}.jsonl"
            raise MissingBundleFileError(where, f"this pipeline needs {split} sessions but the file is missing")
        return self.sessions[split]

    def require_single_turn(self, split: str | None = None) -> list[SingleTurnQuery]:
        """Single-turn queries (optionally of one split), or a clear error when the file is missing."""
        if not self.single_turn:
            where = self.root / SINGLE_TURN_FILE if self.root else SINGLE_TURN_FILE
            raise MissingBundleFileError(where, "this pipeline needs single-turn queries but the file is missing or empty")
        return [q for q in self.single_turn if split is None or q.split == split]


def _require_file(path: Path) -> bool:
    """True when `path` is a regular file, False when nothing is there; BundleError when something else is."""
    if path.is_file():
        return True
    if path.exists():
        kind = "a directory" if path.is_dir() else "not a regular file"
        raise BundleError(path, f"is {kind}; expected a file")
    return False


def _yaml_error_line(err: yaml.YAMLError, path: Path) -> int | None:
    """1-based line of a PyYAML error: its problem mark, or (a reader error: bad character) its character offset."""
    mark = getattr(err, "problem_mark", None)
    if mark is not None:
        return mark.line + 1
    position = getattr(err, "position", None)
    if isinstance(position, int):
        return read_text(path)[:position].count("\n") + 1
    return None


def _read_meta(root: Path) -> BundleMeta:
    path = root / BUNDLE_FILE
    if not _require_file(path):
        raise MissingBundleFileError(path, "every bundle needs bundle.yaml (name, market, languages)")
    try:
        raw = yaml.safe_load(read_text(path)) or {}
    except yaml.YAMLError as err:
        reason = " ".join(str(err).split())  # PyYAML's message spans lines: one line here
        raise BundleError(path, f"malformed YAML: {reason}", _yaml_error_line(err, path)) from None
    except RecursionError:
        raise BundleError(path, "malformed YAML: nested too deeply") from None
    except ValueError as err:  # an integer of more digits than Python converts
        raise BundleError(path, f"malformed YAML: number too long ({str(err).split(';')[0]})") from None
    check_values(raw, path, None)
    if not isinstance(raw, dict):
        raise BundleError(path, "expected a mapping with name, market, languages")
    for key in ("name", "market", "languages"):
        if key not in raw:
            raise BundleError(path, f"missing required key '{key}'")
    languages = raw["languages"]
    if isinstance(languages, str) or not isinstance(languages, list) or not languages:
        raise BundleError(path, "'languages' must be a non-empty list such as [en, ms]")
    known = {"name", "market", "languages", "source", "license", "description"}
    return BundleMeta(
        name=str(raw["name"]),
        market=str(raw["market"]),
        languages=tuple(str(x) for x in languages),
        source=str(raw.get("source", "user")),
        license=str(raw.get("license", "unknown")),
        description=str(raw.get("description", "")),
        extra={k: v for k, v in raw.items() if k not in known},
    )


def read_intents(path: Path) -> list[Intent]:
    """Read and validate `intents.jsonl`: unique ids, non-empty titles, non-empty category paths.

    A category is its path: names may repeat under different parents ("Hotel > Inform", "Attraction > Inform"),
    and paths may have different depths (a shallower one is padded by repeating its leaf, see
    `mtic.data.taxonomy`); two intents may not end at the same (padded) path.
    """
    if not _require_file(path):
        raise MissingBundleFileError(path, "every bundle needs intents.jsonl")
    intents: list[Intent] = []
    seen: dict[str, int] = {}
    for line, row in iter_jsonl(path):
        intent_id = text_field(row.get("id"), path, line, "id")
        if intent_id in seen:
            raise BundleError(path, f"duplicate intent id '{intent_id}' (first on line {seen[intent_id]})", line)
        seen[intent_id] = line
        title = text_field(row.get("title"), path, line, "title")
        raw_path = row.get("path")
        if not isinstance(raw_path, list) or not raw_path:
            raise BundleError(path, "'path' must be a non-empty list of category names, root first", line)
        names = tuple(text_field(p, path, line, "path") for p in raw_path)
        optional = {}
        for key in ("title_en", "label", "label_en"):
            if row.get(key) is not None:
                optional[key] = text_field(row[key], path, line, key)
        intents.append(Intent(id=intent_id, title=title, path=names, **optional))
    if not intents:
        raise BundleError(path, "no intents")
    try:
        class_paths(intents)
    except SharedPathError as err:
        raise BundleError(path, f"{err} (line {seen[err.first.id]}): every intent needs a path of its own",
                          seen[err.intent.id]) from None
    return intents


def read_single_turn(path: Path, known: set[str]) -> Sequence[SingleTurnQuery]:
    """Read and validate `single_turn.jsonl`: a list, or an ArrowRows for a big file (mtic/data/arrow_cache.py)."""
    return load_rows(path, "single_turn", lambda: single_turn_records(path, known), sorted(known))


def read_sessions(path: Path, known: set[str], require_target: bool) -> Sequence[Session]:
    """Read and validate one sessions file; `require_target` demands a labelled last turn. A list, or an
    ArrowRows for a big file (mtic/data/arrow_cache.py)."""
    return load_rows(path, "sessions", lambda: session_records(path, known, require_target),
                     [*sorted(known), f"require_target={require_target}"])


def require_bundle_dir(root: str | Path, absent: str = "bundle directory does not exist") -> Path:
    """`root` as a Path when it is a directory; MissingBundleFileError saying what is there otherwise."""
    root = Path(root).expanduser()
    if not root.is_dir():
        if root.exists():
            raise MissingBundleFileError(root, "is a file, not a bundle directory (a directory holding bundle.yaml, "
                                               "intents.jsonl, single_turn.jsonl, sessions/)")
        raise MissingBundleFileError(root, absent)
    return root


def read_bundle(root: str | Path) -> Bundle:
    """Read and validate a bundle directory; any problem raises BundleError naming the file and line."""
    root = require_bundle_dir(root)
    meta = _read_meta(root)
    intents = read_intents(root / INTENTS_FILE)
    known = {i.id for i in intents}
    single_path = root / SINGLE_TURN_FILE
    single = read_single_turn(single_path, known) if _require_file(single_path) else []
    sessions = {}
    sessions_dir = root / SESSIONS_DIR
    if sessions_dir.exists() and not sessions_dir.is_dir():
        raise BundleError(sessions_dir, "is a file; expected a directory of <split>.jsonl files")
    for split in SESSION_SPLITS:
        path = sessions_dir / f"{split}.jsonl"
        if _require_file(path):
            evaluation = split in EVALUATION_SPLITS
            sessions[split] = read_sessions(path, known, require_target=evaluation)
            if evaluation and not sessions[split]:
                raise BundleError(path, f"no sessions: an empty {split} split would be scored on nothing (remove "
                                        "the file if the bundle has no such split)", 1)
    return Bundle(meta=meta, intents=intents, single_turn=single, sessions=sessions, root=root)


def read_unlabeled_gold(bundle_root: str | Path, known_intents: set[str]) -> Sequence[Session] | None:
    """Gold labels of a crafted bundle's unlabelled sessions (`sessions/unlabeled.gold.jsonl`), or None."""
    path = Path(bundle_root) / SESSIONS_DIR / UNLABELED_GOLD_FILE
    return read_sessions(path, known_intents, require_target=True) if path.is_file() else None


def write_unlabeled_gold(bundle_root: str | Path, gold: Sequence[Session]) -> Path:
    """Write the gold side file next to `sessions/unlabeled.jsonl` (same schema as train.jsonl)."""
    path = Path(bundle_root) / SESSIONS_DIR / UNLABELED_GOLD_FILE
    write_jsonl(path, (s.to_json() for s in gold))
    return path


def write_bundle(bundle: Bundle, root: str | Path, overwrite: bool = False) -> Path:
    """Write `bundle` to `root` atomically (temp dir + rename) so a crash never leaves half a bundle."""
    root = Path(root).expanduser()
    if root.exists() and not overwrite:
        raise FileExistsError(f"{root} exists; pass overwrite=True to replace it")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        (tmp / BUNDLE_FILE).write_text(
            yaml.safe_dump(bundle.meta.to_json(), allow_unicode=True, sort_keys=False), encoding="utf-8"
        )
        write_jsonl(tmp / INTENTS_FILE, (i.to_json() for i in bundle.intents))
        if bundle.single_turn:
            write_jsonl(tmp / SINGLE_TURN_FILE, (q.to_json() for q in bundle.single_turn))
        for split, sessions in bundle.sessions.items():
            write_jsonl(tmp / SESSIONS_DIR / f"{split}.jsonl", (s.to_json() for s in sessions))
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
