"""SGD (Schema-Guided Dialogue, DSTC8) -> data bundle of real multi-turn sessions (USER turns only).

Reads the original layout `<src>/{train,dev,test}/schema.json` + `dialogues_*.json`, each file also accepted
gzipped (`*.json.gz`).

- Intents: one per (domain, intent) of the schemas; the domain is the service name without its version suffix
  (`Restaurants_2` -> `Restaurants`). Id `Restaurants/ReserveRestaurant`, path `Restaurants > ReserveRestaurant`,
  title = the schema's intent description (service versions that disagree: the one of the service name that
  sorts first, train schema before dev before test), label = the name split into words ("Reserve
  Restaurant"). An intent name used by two domains (FindMovies: Media, Movies) gets the leaf
  `FindMovies (Media)`. Turns with no active intent map to the one `NONE` intent (path `NONE > NONE`).
- A turn's intent is the `active_intent` of its frames. Several active frames (a domain switch, ~5 % of user
  turns) are tie-broken by: (1) the frame with an INFORM_INTENT action (the intent the user just stated),
  (2) else the frame continuing the previous user turn's intent, (3) else any active frame; the remaining tie
  goes to the service name that sorts first.
- Single-turn data = user turns whose chosen frame has INFORM_INTENT (self-contained queries), from the
  train dialogues (split train) and the valid dialogues (split valid); never from test dialogues.
- Splits: every dialogue of every split is pooled (ids `<split>/<dialogue_id>`), optionally subsampled to
  `max_dialogues` (seeded; first one dialogue per stated intent, so every intent is covered where the budget
  allows, then random ones), shuffled (seeded) and cut into test / valid / train by `test_share` /
  `valid_share`. An intent stated in valid/test but not in train moves the first such valid/test dialogue (in
  the shuffled order) to train, so every test intent is seen in training.
- Valid/test sessions: a dialogue cut after one user turn drawn uniformly (seeded per dialogue) among its turns
  whose intent has single-turn training data (NONE never is a target); only the last turn keeps its label.
  Dialogues without such a turn are dropped (counted in bundle.yaml). The share of non-first targets
  (`test_nonfirst_share`) and of targets that do not state their intent (`test_followup_share`) are recorded.
- `train.jsonl` = the train dialogues with every turn labelled (gold upper bound). `unlabeled.jsonl` = the
  train dialogues cut the same way (any non-NONE turn; `unlabeled_cut=false` keeps them whole) with labels
  stripped; their gold labels go to `sessions/unlabeled.gold.jsonl` (CLARA's pseudo-label precision).
"""
from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from mtic.data.bundle import Bundle
from mtic.data.errors import BundleError, MissingBundleFileError
from mtic.data.schema import BundleMeta, Intent, Session, SingleTurnQuery, Turn
from mtic.dataset_factories.craft import strip_history
from mtic.dataset_factories.prepare.common import json_file, line_of, nonfirst_share, read_json, split_words

NAME = "sgd"
FOLDER = "sgd"
LICENSE = "CC BY-SA 4.0"
SOURCE = "SGD (google-research-datasets/dstc8-schema-guided-dialogue)"
NONE_ID = "NONE"
NONE_INTENT = Intent(
    id=NONE_ID,
    title="No active intent: greetings, thanks, goodbyes and other turns that do not ask for a service",
    path=(NONE_ID, NONE_ID),
    label="No Intent",
)
SPLITS: tuple[str, ...] = ("train", "dev", "test")
INFORM_INTENT = "INFORM_INTENT"


@dataclass(frozen=True)
class SGDOptions:
    """Converter options (all part of the cache key)."""

    seed: int = 0
    max_dialogues: int | None = None  # subsample the pooled dialogues (None = all)
    valid_share: float = 0.1
    test_share: float = 0.1
    unlabeled_cut: bool = True  # cut unlabelled dialogues like valid/test (else whole dialogues)

    def __post_init__(self) -> None:
        if self.max_dialogues is not None and (not isinstance(self.max_dialogues, int) or self.max_dialogues < 3):
            raise ValueError(f"max_dialogues must be an integer >= 3 or null, got {self.max_dialogues!r}")
        for name in ("valid_share", "test_share"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)!r}")
        if self.valid_share + self.test_share >= 1.0:
            raise ValueError("valid_share + test_share must leave dialogues for training")


@dataclass(frozen=True)
class UserTurn:
    text: str
    intent: str  # intent id; NONE_ID when no frame has an active intent
    states: bool  # the chosen frame has an INFORM_INTENT action: a self-contained query


@dataclass(frozen=True)
class Dialogue:
    id: str  # "<split>/<dialogue_id>"
    turns: tuple[UserTurn, ...]

    @property
    def stated(self) -> set[str]:
        return {t.intent for t in self.turns if t.states}

    def session(self, n_turns: int | None = None) -> Session:
        """All labelled user turns (or the first `n_turns`, id suffixed `#n`)."""
        full = Session(self.id, tuple(Turn(t.text, t.intent) for t in self.turns))
        return full if n_turns is None else full.prefix(n_turns)


def domain_of(service: str) -> str:
    """`Restaurants_2` -> `Restaurants` (a name without a numeric suffix is its own domain)."""
    head, _, tail = service.rpartition("_")
    return head if head and tail.isdigit() else service


def source_files(src: Path, options: SGDOptions | None = None) -> list[Path]:
    """Every file the converter reads (the cache key hashes them); a missing split folder is an error."""
    files = []
    for split in SPLITS:
        folder = src / split
        if not folder.is_dir():
            raise MissingBundleFileError(folder, f"SGD split folder missing (expected {', '.join(SPLITS)} under {src})")
        schema = json_file(folder, "schema")
        if schema is None:
            raise MissingBundleFileError(folder / "schema.json", "SGD schema missing (schema.json or schema.json.gz)")
        dialogues = sorted(p for p in folder.iterdir() if p.name.startswith("dialogues_") and p.name.endswith((".json", ".json.gz")))
        files += [schema, *dialogues]
    return files


def read_schemas(files: Iterable[Path]) -> tuple[list[Intent], dict[tuple[str, str], str]]:
    """Intents (sorted by id, NONE last) and a map (service, intent name) -> intent id."""
    found: dict[tuple[str, str], list[tuple[str, int, str]]] = {}
    services: dict[tuple[str, str], str] = {}
    for order, path in enumerate(files):
        rows, text = read_json(path)
        if not isinstance(rows, list):
            raise BundleError(path, "an SGD schema is a JSON list of services", 1)
        for row in rows:
            name = row.get("service_name") if isinstance(row, dict) else None
            line = line_of(text, f'"service_name": "{name}"')
            if not isinstance(name, str) or not name or not isinstance(row.get("intents"), list):
                raise BundleError(path, "each service needs 'service_name' and a list of 'intents'", line)
            for intent in row["intents"]:
                iname, desc = (intent.get("name"), intent.get("description")) if isinstance(intent, dict) else (None, None)
                if not isinstance(iname, str) or not iname or not isinstance(desc, str) or not desc.strip():
                    raise BundleError(path, f"service {name}: each intent needs a 'name' and a 'description'", line)
                key = (domain_of(name), iname)
                found.setdefault(key, []).append((name, order, desc.strip()))
                services[(name, iname)] = f"{key[0]}/{iname}"
    domains_of: dict[str, set[str]] = {}
    for domain, iname in found:
        domains_of.setdefault(iname, set()).add(domain)
    intents = []
    for (domain, iname), versions in sorted(found.items()):
        leaf = iname if len(domains_of[iname]) == 1 else f"{iname} ({domain})"
        title = min(versions)[2]
        intents.append(Intent(id=f"{domain}/{iname}", title=title, path=(domain, leaf), label=split_words(leaf)))
    return [*intents, NONE_INTENT], services


def _choose(frames: list[tuple[str, str, bool]], previous: str | None) -> tuple[str, bool]:
    """(intent id, states) of a user turn from its active frames (service, intent id, has INFORM_INTENT)."""
    if not frames:
        return NONE_ID, False
    candidates = [f for f in frames if f[2]] or [f for f in frames if f[1] == previous] or frames
    _service, intent, states = min(candidates)
    return intent, states


def read_dialogues(path: Path, split: str, services: dict[tuple[str, str], str]) -> list[Dialogue]:
    """The dialogues of one file, USER turns only, each with its chosen intent."""
    rows, text = read_json(path)
    if not isinstance(rows, list):
        raise BundleError(path, "an SGD dialogues file is a JSON list of dialogues", 1)
    dialogues = []
    for row in rows:
        dialogue_id = row.get("dialogue_id") if isinstance(row, dict) else None

        def fail(message: str, _id: object = dialogue_id) -> BundleError:
            return BundleError(path, f"dialogue {_id}: {message}", line_of(text, f'"dialogue_id": "{_id}"'))

        if not isinstance(dialogue_id, str) or not dialogue_id or not isinstance(row.get("turns"), list):
            raise fail("each dialogue needs a 'dialogue_id' and a list of 'turns'")
        turns: list[UserTurn] = []
        for k, turn in enumerate(row["turns"]):
            if not isinstance(turn, dict) or turn.get("speaker") not in ("USER", "SYSTEM"):
                raise fail(f"turn {k} needs 'speaker' USER or SYSTEM")
            if turn["speaker"] != "USER":
                continue
            utterance, frames = turn.get("utterance"), turn.get("frames")
            if not isinstance(utterance, str) or not utterance.strip():
                raise fail(f"turn {k}: empty or missing 'utterance'")
            if not isinstance(frames, list):
                raise fail(f"turn {k}: 'frames' must be a list")
            active = []
            for frame in frames:
                state = frame.get("state") if isinstance(frame, dict) else None
                if not isinstance(state, dict) or not isinstance(state.get("active_intent"), str):
                    raise fail(f"turn {k}: every USER frame needs state.active_intent")
                if state["active_intent"] == NONE_ID:
                    continue
                key = (frame.get("service"), state["active_intent"])
                if key not in services:
                    raise fail(f"turn {k}: intent {key[1]!r} of service {key[0]!r} is not in any schema.json")
                acts = frame.get("actions") or []
                states = any(isinstance(a, dict) and a.get("act") == INFORM_INTENT for a in acts)
                active.append((key[0], services[key], states))
            intent, states = _choose(active, turns[-1].intent if turns else None)
            turns.append(UserTurn(utterance, intent, states))
        if not turns:
            raise fail("no USER turn")
        dialogues.append(Dialogue(f"{split}/{dialogue_id}", tuple(turns)))
    return dialogues


def select(dialogues: Sequence[Dialogue], max_dialogues: int | None, seed: int) -> list[Dialogue]:
    """All dialogues, or `max_dialogues` of them: one per stated intent first (sorted intents), then random."""
    if max_dialogues is None or max_dialogues >= len(dialogues):
        return list(dialogues)
    order = list(dialogues)
    random.Random(f"sgd/{seed}/select").shuffle(order)
    chosen: dict[str, Dialogue] = {}
    covered: set[str] = set()
    for intent in sorted(set().union(*(d.stated for d in order))):
        if intent in covered or len(chosen) >= max_dialogues:
            continue
        pick = next(d for d in order if intent in d.stated and d.id not in chosen)
        chosen[pick.id] = pick
        covered |= pick.stated
    for dialogue in order:
        if len(chosen) >= max_dialogues:
            break
        chosen.setdefault(dialogue.id, dialogue)
    return sorted(chosen.values(), key=lambda d: d.id)


def resplit(dialogues: Sequence[Dialogue], opts: SGDOptions) -> tuple[list[Dialogue], list[Dialogue], list[Dialogue], int]:
    """(train, valid, test, number moved to train for coverage) by dialogue, seeded."""
    order = sorted(dialogues, key=lambda d: d.id)
    random.Random(f"sgd/{opts.seed}/split").shuffle(order)
    n_test, n_valid = round(opts.test_share * len(order)), round(opts.valid_share * len(order))
    split = {d.id: "test" if k < n_test else "valid" if k < n_test + n_valid else "train" for k, d in enumerate(order)}
    covered = set().union(*(d.stated for d in order if split[d.id] == "train"))
    moved = 0
    for intent in sorted(set().union(*(d.stated for d in order)) - covered):
        if intent in covered:
            continue
        pick = next(d for d in order if split[d.id] != "train" and intent in d.stated)
        split[pick.id] = "train"
        covered |= pick.stated
        moved += 1
    parts = {name: [d for d in order if split[d.id] == name] for name in ("train", "valid", "test")}
    return parts["train"], parts["valid"], parts["test"], moved


def cut(dialogue: Dialogue, eligible: set[str], rng_key: str) -> Session | None:
    """The dialogue cut after one user turn drawn uniformly among turns whose intent is in `eligible`."""
    positions = [k for k, t in enumerate(dialogue.turns) if t.intent in eligible]
    if not positions:
        return None
    return dialogue.session(random.Random(f"{rng_key}/{dialogue.id}").choice(positions) + 1)


def _followup_share(sessions: Sequence[Session], stated: dict[str, list[bool]]) -> float | None:
    """Share of sessions whose target turn does not state its intent (context needed)."""
    if not sessions:
        return None
    flags = [stated[s.id.rsplit("#", 1)[0]][len(s.turns) - 1] for s in sessions]
    return sum(not f for f in flags) / len(flags)


def build(src: Path, opts: SGDOptions) -> tuple[Bundle, list[Session]]:
    """The SGD bundle and the gold labels of its unlabelled sessions (see the module docstring)."""
    files = source_files(src, opts)
    schemas = [p for p in files if p.name.startswith("schema")]
    intents, services = read_schemas(schemas)
    pooled = [d for p in files if not p.name.startswith("schema") for d in read_dialogues(p, p.parent.name, services)]
    seen: set[str] = set()
    for dialogue in pooled:
        if dialogue.id in seen:
            raise BundleError(src / dialogue.id.split("/")[0], f"duplicate dialogue id {dialogue.id}")
        seen.add(dialogue.id)
    used = select(pooled, opts.max_dialogues, opts.seed)
    train, valid, test, moved = resplit(used, opts)
    covered = set().union(*(d.stated for d in train)) if train else set()
    key = f"sgd/{opts.seed}/cut"
    evals = {name: [s for d in part if (s := cut(d, covered, key)) is not None] for name, part in (("valid", valid), ("test", test))}
    real = {i.id for i in intents} - {NONE_ID}
    gold = [s for d in train if (s := (cut(d, real, key) if opts.unlabeled_cut else d.session())) is not None]
    single = [SingleTurnQuery(t.text, t.intent, split) for split, part in (("train", train), ("valid", valid))
              for d in part for t in d.turns if t.states]
    stated = {d.id: [t.states for t in d.turns] for d in (*valid, *test)}
    sessions = {"train": [d.session() for d in train], "unlabeled": [s.unlabeled() for s in gold],
                "valid": [strip_history(s) for s in evals["valid"]], "test": [strip_history(s) for s in evals["test"]]}
    extra = {
        "seed": opts.seed,
        "prepare": {"converter": NAME, **asdict(opts)},
        "dialogues_read": len(pooled),
        "dialogues_used": len(used),
        "dialogues": {"train": len(train), "valid": len(valid), "test": len(test)},
        "moved_to_train_for_coverage": moved,
        "eval_dialogues_without_target": len(valid) + len(test) - len(evals["valid"]) - len(evals["test"]),
        "test_nonfirst_share": nonfirst_share(evals["test"]),
        "test_followup_share": _followup_share(evals["test"], stated),
        "valid_nonfirst_share": nonfirst_share(evals["valid"]),
    }
    size = "all" if opts.max_dialogues is None else str(opts.max_dialogues)
    description = (
        f"Schema-Guided Dialogue: {len(used)} of {len(pooled)} dialogues ({size}), USER turns only, pooled and "
        f"re-split by dialogue (seed {opts.seed}); intent = domain > active intent; valid/test = dialogues cut at "
        f"a sampled user turn."
    )
    name = "sgd" if opts.max_dialogues is None else f"sgd-{opts.max_dialogues}"
    meta = BundleMeta(name=name, market="sgd", languages=("en",), source=SOURCE, license=LICENSE,
                      description=description, extra=extra)
    return Bundle(meta=meta, intents=intents, single_turn=single, sessions=sessions), gold


def cache_name(opts: SGDOptions) -> str:
    return "sgd" if opts.max_dialogues is None else f"sgd-{opts.max_dialogues}"
