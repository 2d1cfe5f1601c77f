"""What a run reads from its bundle, decided before any model loads (any user's data: only bundle.yaml and
intents.jsonl are required, every other part is optional).

A pipeline checks the parts it needs up front (`require_training_data`, `require_split`, `require_demos`): a
missing part is one line naming the file and the override that fixes it (exit status 2 from `python run.py`).
It also decides where model selection (early stopping, checkpoint choice) comes from (`resolve_validation`);
when the planned source is missing it falls back, and says so in the log and in results.json (`selection`):

  planned source               missing                              fallback
  a sessions split (valid)     sessions/<split>.jsonl               the single-turn valid queries
  single_turn                  a 'valid' split in single_turn.jsonl 10 % of the training queries, held out (seeded)
  single_turn                  single-turn queries (fewer than 2)   no selection: no early stopping, last epoch tested

Every fallback is a label-free source (single-turn labels, or none), so a label-free run stays label-free.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtic.config_schema import ConfigError
from mtic.data.bundle import SESSIONS_DIR, SINGLE_TURN_FILE, Bundle
from mtic.data.errors import MissingBundleFileError
from mtic.data.schema import SingleTurnQuery
from mtic.eval.supervision import CRAFTED, FILE_PREFIX, PSEUDO_LABELS, SINGLE_TURN_VALID, sessions_source

NO_SESSIONS = "none"
SINGLE_TURN_SOURCE = "single_turn"   # valid_sessions: the single-turn queries of the valid split
PSEUDO_PREFIX = "pseudo:"            # a sessions file labelled by an LLM, e.g. pseudo:/run/pseudo_train.jsonl
CRAFTED_SOURCE = CRAFTED             # train_sessions: sessions crafted from the single-turn training queries
CARVED_VALID_SHARE = 0.1             # single-turn queries held out for selection when there is no valid split
LAST_EPOCH = "none: no early stopping, the last epoch is tested"
NO_SELECTING_CALLBACK = "validation is logged, but no callback selects on it: the last epoch is tested"
_ADD_QUERIES = "add single_turn.jsonl (e.g. mtic data import ... --queries queries.csv)"
EMPTY_VALIDATION = "the validation sources hold no session: training runs without model selection and the last " \
                   "epoch is tested"


def source_list(spec: str | Sequence[str]) -> list[str]:
    """A sessions spec as a list of sources: one name, or several (a list) whose sessions are pooled."""
    return [spec] if isinstance(spec, str) else [str(s) for s in spec]


def is_file_source(spec: str) -> bool:
    """A sessions JSONL given by path (`/data/x.jsonl`, `pseudo:/run/pseudo_valid.jsonl`), not a bundle split."""
    return Path(spec.removeprefix(PSEUDO_PREFIX)).suffix == ".jsonl"


def source_name(spec: str) -> str:
    """The supervision vocabulary's name of a sessions spec (mtic/eval/supervision.py)."""
    if spec.startswith(PSEUDO_PREFIX):
        return PSEUDO_LABELS
    if spec == CRAFTED_SOURCE:
        return CRAFTED
    if is_file_source(spec):
        return FILE_PREFIX + Path(spec).name
    return SINGLE_TURN_VALID if spec == SINGLE_TURN_SOURCE else sessions_source(spec)


def single_turn_training(bundle: Bundle) -> list[SingleTurnQuery]:
    """The bundle's single-turn queries of the train split (none when single_turn.jsonl is absent)."""
    return [q for q in bundle.single_turn if q.split == "train"]


@dataclass(frozen=True)
class ValidationPlan:
    """Where model selection reads from: the configured sources (`planned`), those actually read (`used`,
    datamodule specs; empty = no selection), whether single-turn valid queries are carved out of the training
    queries, and the fallback taken (None when the plan holds as configured)."""

    planned: tuple[str, ...]
    used: tuple[str, ...]
    carve: bool = False
    fallback: str | None = None
    valid_size: int | None = field(default=None, compare=False)

    @property
    def selects(self) -> bool:
        return bool(self.used)

    def names(self, specs: Sequence[str]) -> list[str]:
        """The recorded names of sources: the supervision vocabulary's (`source_name`)."""
        return [source_name(s) for s in specs]

    def record(self, rule: str | None) -> dict[str, Any]:
        """The `selection` entry of results.json; `rule`: how the callbacks select on validation data ('early
        stopping and the best checkpoint on val/loss'), None when none watches it."""
        said = (rule or NO_SELECTING_CALLBACK) if self.selects else LAST_EPOCH
        return {"planned": self.names(self.planned), "used": self.names(self.used),
                "valid_size": self.valid_size, "rule": said, "fallback": self.fallback}

    def line(self, rule: str | None) -> str:
        """The one log line that says what selects the model, and why when it is not what was configured."""
        used = ", ".join(self.names(self.used)) or "none"
        size = f" ({self.valid_size} sessions)" if self.valid_size is not None and self.selects else ""
        said = f"[mtic] model selection: {self.record(rule)['rule']}; validation data: {used}{size}"
        return f"{said} ({self.fallback})" if self.fallback else said


def resolve_validation(bundle: Bundle, valid_sessions: str | Sequence[str]) -> ValidationPlan:
    """The validation sources a run reads: each configured one, or its fallback when the bundle lacks it."""
    planned = tuple(s for s in source_list(valid_sessions) if s != NO_SESSIONS)
    if CRAFTED_SOURCE in planned:
        raise ConfigError(f"data.valid_sessions={CRAFTED_SOURCE}: crafted sessions are training data (their texts are "
                          "the training queries); select on single_turn (the single-turn valid queries) instead")
    missing = [s for s in planned if not (s == SINGLE_TURN_SOURCE or is_file_source(s) or s in bundle.sessions)]
    used = list(dict.fromkeys(SINGLE_TURN_SOURCE if s in missing else s for s in planned))
    said = " and ".join(f"{SESSIONS_DIR}/{s}.jsonl" for s in missing) + (" is missing" if len(missing) == 1 else
                                                                          " are missing")
    notes = [f"{said}: the single-turn valid queries select instead"] if missing else []
    carve = False
    if SINGLE_TURN_SOURCE in used and not any(q.split == "valid" for q in bundle.single_turn):
        carve = len(single_turn_training(bundle)) >= 2
        if carve:
            notes.append(f"{SINGLE_TURN_FILE} has no 'valid' split: {CARVED_VALID_SHARE:.0%} of its training "
                         "queries are held out (seeded) to select the model")
        else:
            used.remove(SINGLE_TURN_SOURCE)
            lacking = (f"{said}, and " if missing else "") + (f"{SINGLE_TURN_FILE} has no 'valid' split and too few "
                                                              "queries to hold some out")
            outcome = "selecting on the other sources alone" if used else (
                "training runs without model selection and the last epoch is tested")
            notes = [f"{lacking}: {outcome}"]
    return ValidationPlan(planned, tuple(used), carve, "; ".join(notes) or None)


def no_selection(why: str) -> dict[str, Any]:
    """The `selection` entry of a run that selects no model (TF-IDF's fixed fit, LARA's prompting)."""
    return {"planned": [], "used": [], "valid_size": None, "rule": f"none: {why}", "fallback": None}


def require_split(bundle: Bundle, split: str, why: str) -> None:
    """MissingBundleFileError naming sessions/<split>.jsonl when the bundle lacks it; `why` says who needs it and
    how to do without (one line: 'experiment X ... ; add it ... or <override>')."""
    if split not in bundle.sessions:
        raise MissingBundleFileError(_where(bundle, f"{SESSIONS_DIR}/{split}.jsonl"), why)


def require_test(bundle: Bundle, where: str, without: str | None) -> None:
    """The test sessions a run is scored on; `without` names the override that skips testing, if any."""
    fix = f", or {without}" if without else ""
    require_split(bundle, "test", f"{where} is scored on the labelled test sessions, but the file is missing: add "
                                  f"it (e.g. mtic data import ... --test-share 0.2){fix}")


def require_demos(bundle: Bundle, where: str) -> None:
    """The labelled single-turn queries an LLM pipeline retrieves as in-context demos."""
    if not single_turn_training(bundle):
        raise MissingBundleFileError(_where(bundle, SINGLE_TURN_FILE),
                                     f"{where} retrieves labelled single-turn queries as in-context demos, but the "
                                     f"bundle has none: {_ADD_QUERIES}")


def require_training_data(bundle: Bundle, train_single_turn: bool, train_sessions: str, where: str) -> str | None:
    """Check that the configured training data exists; returns the fallback taken (None when none is): a bundle
    without single-turn training queries trains on its sessions alone."""
    if not train_single_turn and train_sessions == NO_SESSIONS:
        raise ConfigError("no training data: data.train_single_turn=false and data.train_sessions=none")
    has_queries = bool(single_turn_training(bundle))
    if train_sessions == CRAFTED_SOURCE and not has_queries:
        raise MissingBundleFileError(_where(bundle, SINGLE_TURN_FILE),
                                     f"{where} trains on sessions crafted from the labelled single-turn queries "
                                     f"(data.train_sessions={CRAFTED_SOURCE}), but the bundle has none: {_ADD_QUERIES}")
    if train_sessions not in (NO_SESSIONS, CRAFTED_SOURCE) and not is_file_source(train_sessions):
        alone = ", or data.train_sessions=none to train on the single-turn queries alone" if (
            train_single_turn and has_queries) else ""
        require_split(bundle, train_sessions, f"{where} trains on the sessions of this file (data.train_sessions="
                                              f"{train_sessions}), but it is missing: add it{alone}")
    if not train_single_turn or has_queries:
        return None
    if train_sessions == NO_SESSIONS:
        other = ", or run a method that learns from the labelled sessions (+experiment=htc_supervised)" if (
            "train" in bundle.sessions) else ""
        raise MissingBundleFileError(
            _where(bundle, SINGLE_TURN_FILE),
            f"{where} trains on labelled single-turn queries (data.train_single_turn=true, data.train_sessions=none), "
            f"but the bundle has none: {_ADD_QUERIES}{other}")
    return f"{SINGLE_TURN_FILE} has no training queries: training on the {source_name(train_sessions)} sessions alone"


def require_data(bundle: Bundle, data: Any, where: str, fit: bool, test: bool, test_without: str | None
                 ) -> str | None:
    """Everything a train / test run of a `data` config needs (`data` keys as in conf/data/_base.yaml); returns
    the training fallback taken, if any."""
    note = None
    if fit:
        note = require_training_data(bundle, bool(data.get("train_single_turn", True)),
                                     str(data.get("train_sessions", "train")), where)
    if test:
        require_test(bundle, where, test_without)
    return note


def _where(bundle: Bundle, relative: str) -> Path | str:
    return bundle.root / relative if bundle.root else relative
