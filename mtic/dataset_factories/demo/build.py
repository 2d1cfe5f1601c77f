"""Build the embedded demo bundles: knowledge base + one market file -> a data bundle with crafted sessions.

Each intent's self-contained queries are split deterministically: 1-2 go to single-turn valid, a held-out
share is reserved for the valid/test sessions, the rest is single-turn train and feeds the train/unlabeled
sessions. Each intent's follow-ups are split the same way (`craft.split_followups`: a third, at most 2 of 6, for
the valid/test sessions; a follow-up several intents share stays on the training side), so no valid/test turn
appears in a training-side file (`mtic.data.stats.leaked_eval_turns` counts them: 0 for every market). `demo_bundle_dir` caches a built bundle under a version hashed from the content files, the crafting
parameters and this code, so a stale cache is never reused.
"""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from mtic.data.bundle import Bundle, write_bundle, write_unlabeled_gold
from mtic.data.bundle_cache import build_once
from mtic.data.schema import BundleMeta, Intent, Session, SingleTurnQuery
from mtic.dataset_factories import craft
from mtic.dataset_factories.craft import (
    DEFAULT_EVAL_FOLLOWUP_POOL_SHARE,
    DEFAULT_EVAL_FOLLOWUP_SHARE,
    TransitionModel,
    craft_splits,
    followup_share,
)

MARKETS: tuple[str, ...] = ("br", "id", "my", "ph", "sg", "th", "tw", "vn")
DEMO_DIR = Path(__file__).resolve().parent
KNOWLEDGE_BASE_FILE = DEMO_DIR / "knowledge_base.json"
MARKETS_DIR = DEMO_DIR / "markets"
DEMO_SOURCE = "mtic-demo"
DEMO_LICENSE = "CC BY 4.0"
CACHE_SUBDIR = "bundles"

DEFAULT_SIZES: dict[str, int] = {"n_train": 300, "n_unlabeled": 600, "n_valid": 100, "n_test": 200}
DEMO_TRANSITIONS = TransitionModel()  # stay .45 / within .30 / away .25, 1-5 turns (mean 2.6), follow-up .5
HELDOUT_SHARE = 0.25  # of each intent's queries, reserved for valid/test sessions
MIN_HELDOUT = 2
SINGLE_VALID_SMALL, SINGLE_VALID_LARGE = 1, 2
LARGE_POOL = 16  # intents with at least this many queries give 2 single-turn valid queries
MIN_TRAIN = 1
MIN_QUERIES = SINGLE_VALID_SMALL + MIN_HELDOUT + MIN_TRAIN


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: malformed JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")  # noqa: TRY004 (bad file content, not a bad argument)
    return data


def market_path(code: str, markets_dir: str | Path | None = None) -> Path:
    return Path(markets_dir or MARKETS_DIR) / f"{code}.json"


def available_markets(markets_dir: str | Path | None = None) -> tuple[str, ...]:
    """Markets of MARKETS whose content file exists (some may still be being written)."""
    return tuple(code for code in MARKETS if market_path(code, markets_dir).is_file())


def load_knowledge_base(path: str | Path | None = None) -> list[dict]:
    """The shared knowledge base: id, English path, title_en, curated compressed label per intent."""
    path = Path(path or KNOWLEDGE_BASE_FILE)
    intents = _read_json(path).get("intents")
    if not isinstance(intents, list) or not intents:
        raise ValueError(f"{path}: 'intents' must be a non-empty list")
    return intents


def load_market(code: str, markets_dir: str | Path | None = None, kb_ids: list[str] | None = None) -> dict:
    """Read `<markets_dir>/<code>.json` and check it covers every knowledge-base intent with usable content."""
    path = market_path(code, markets_dir)
    if not path.is_file():
        ready = ", ".join(available_markets(markets_dir)) or "none yet"
        raise FileNotFoundError(f"no demo market file {path} (known markets: {', '.join(MARKETS)}; present: {ready})")
    data = _read_json(path)
    entries = data.get("intents")
    languages = data.get("languages")
    if not isinstance(entries, dict) or not entries:
        raise ValueError(f"{path}: 'intents' must be a non-empty mapping id -> entry")
    if not isinstance(languages, list) or not languages:
        raise ValueError(f"{path}: 'languages' must be a non-empty list")
    ids = kb_ids if kb_ids is not None else [i["id"] for i in load_knowledge_base()]
    missing = [i for i in ids if i not in entries]
    if missing:
        raise ValueError(f"{path}: no entry for intents {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    for intent_id in ids:
        entry = entries[intent_id]
        if not str(entry.get("title", "")).strip():
            raise ValueError(f"{path}: intent {intent_id} has an empty title")
        if len(_distinct(entry.get("queries", []))) < MIN_QUERIES:
            raise ValueError(f"{path}: intent {intent_id} needs at least {MIN_QUERIES} distinct queries")
    return data


def _distinct(texts: list[str]) -> list[str]:
    """Distinct non-empty texts, sorted (file order never changes a split)."""
    return sorted({t.strip() for t in texts if isinstance(t, str) and t.strip()})


def split_queries(queries: list[str], rng: random.Random) -> tuple[list[str], list[str], list[str]]:
    """(single-turn train, single-turn valid, held-out for valid/test sessions) of one intent's queries."""
    pool = _distinct(queries)
    rng.shuffle(pool)
    n_valid = SINGLE_VALID_LARGE if len(pool) >= LARGE_POOL else SINGLE_VALID_SMALL
    n_heldout = max(MIN_HELDOUT, round(HELDOUT_SHARE * len(pool)))
    heldout, valid, train = pool[:n_heldout], pool[n_heldout : n_heldout + n_valid], pool[n_heldout + n_valid :]
    return sorted(train), sorted(valid), sorted(heldout)


def _params(seed: int, sizes: dict[str, int], transitions: TransitionModel, eval_followup_share: float) -> dict:
    return {
        "seed": seed,
        **sizes,
        "transitions": transitions.to_json(),
        "eval_followup_share": eval_followup_share,
        "heldout_share": HELDOUT_SHARE,
        "eval_followup_pool_share": DEFAULT_EVAL_FOLLOWUP_POOL_SHARE,
    }


def curated_labels(row: dict, languages: list[str]) -> dict[str, str | None]:
    """The knowledge base's curated labels are English: `label_en` everywhere, `label` only where titles are English.

    A local-language market then gets its compressed labels from its own titles (or a reviewed compression
    file), and `labels.cross_lingual=true` switches to the English ones, as the cross-lingual ablation needs.
    """
    english = row.get("label")
    return {"label": english if languages[0] == "en" else None, "label_en": english}


def demo_version(code: str, seed: int = 0, markets_dir: str | Path | None = None,
                 transitions: TransitionModel | None = None,
                 eval_followup_share: float = DEFAULT_EVAL_FOLLOWUP_SHARE, **sizes: int) -> str:
    """Hash of the market file, the knowledge base, the crafting parameters and the crafting code."""
    params = _params(seed, {**DEFAULT_SIZES, **sizes}, transitions or DEMO_TRANSITIONS, eval_followup_share)
    if not market_path(code, markets_dir).is_file():
        load_market(code, markets_dir)  # raises the explanatory FileNotFoundError
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode("utf-8"))
    for path in (market_path(code, markets_dir), KNOWLEDGE_BASE_FILE, Path(craft.__file__), Path(__file__)):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def build_demo(
    code: str,
    seed: int = 0,
    *,
    n_train: int = DEFAULT_SIZES["n_train"],
    n_unlabeled: int = DEFAULT_SIZES["n_unlabeled"],
    n_valid: int = DEFAULT_SIZES["n_valid"],
    n_test: int = DEFAULT_SIZES["n_test"],
    transitions: TransitionModel | None = None,
    eval_followup_share: float = DEFAULT_EVAL_FOLLOWUP_SHARE,
    markets_dir: str | Path | None = None,
) -> tuple[Bundle, list[Session]]:
    """The demo bundle of market `code` and the gold labels of its unlabelled sessions."""
    transitions = transitions or DEMO_TRANSITIONS
    sizes = {"n_train": n_train, "n_unlabeled": n_unlabeled, "n_valid": n_valid, "n_test": n_test}
    kb = load_knowledge_base()
    market = load_market(code, markets_dir, kb_ids=[row["id"] for row in kb])
    entries = market["intents"]
    intents, single_turn = [], []
    train_pool: dict[str, list[str]] = {}
    heldout_pool: dict[str, list[str]] = {}
    followups: dict[str, list[str]] = {}
    parent = {}
    for row in kb:
        intent_id, entry = row["id"], entries[row["id"]]
        intents.append(Intent(id=intent_id, title=entry["title"].strip(), path=tuple(row["path"]),
                              title_en=row.get("title_en"), **curated_labels(row, market["languages"])))
        parent[intent_id] = tuple(row["path"][:-1])
        train, valid, heldout = split_queries(entry["queries"], random.Random(f"{code}/{seed}/{intent_id}"))
        single_turn += [SingleTurnQuery(t, intent_id, "train") for t in train]
        single_turn += [SingleTurnQuery(t, intent_id, "valid") for t in valid]
        train_pool[intent_id], heldout_pool[intent_id] = train, heldout
        queries = set(_distinct(entry["queries"]))
        followups[intent_id] = [t for t in _distinct(entry.get("followups", [])) if t not in queries]
    crafted = craft_splits(
        transitions, train_pool, heldout_pool, followups, parent.__getitem__, **sizes, seed=seed,
        eval_followup_share=eval_followup_share, single_turn_texts=[q.text for q in single_turn],
    )
    extra = {
        "seed": seed,
        "demo_version": demo_version(code, seed, markets_dir, transitions, eval_followup_share, **sizes),
        "test_followup_share": followup_share(crafted.test, followups),
        "valid_followup_share": followup_share(crafted.valid, followups),
        "heldout_share": HELDOUT_SHARE,
        "eval_followup_pool_share": DEFAULT_EVAL_FOLLOWUP_POOL_SHARE,
        "eval_followups": sum(len(v) for v in crafted.eval_followups.values()),
        "train_followups": sum(len(v) for v in crafted.train_followups.values()),
        "eval_excluded_intents": crafted.eval_excluded_intents,
    }
    description = (
        f"{str(market.get('description', '')).strip()} mtic demo: hand-written queries per intent; multi-turn "
        f"sessions crafted with an intent transition model (seed {seed})."
    ).strip()
    meta = BundleMeta(name=f"demo-{code}", market=code, languages=tuple(str(x) for x in market["languages"]),
                      source=DEMO_SOURCE, license=DEMO_LICENSE, description=description, extra=extra)
    bundle = Bundle(meta=meta, intents=intents, single_turn=single_turn, sessions=crafted.bundle_sessions())
    return bundle, crafted.unlabeled_gold


def build_demo_bundle(code: str, seed: int = 0, **kw) -> Bundle:
    """The demo bundle of market `code` (sizes default to DEFAULT_SIZES; see `build_demo` for options)."""
    return build_demo(code, seed, **kw)[0]


def write_demo_bundle(code: str, out_dir: str | Path, overwrite: bool = False, **kw) -> Path:
    """Write the demo bundle plus `sessions/unlabeled.gold.jsonl` (gold labels of the unlabelled sessions)."""
    bundle, gold = build_demo(code, **kw)
    root = write_bundle(bundle, out_dir, overwrite=overwrite)
    if gold:
        write_unlabeled_gold(root, gold)
    return root


def demo_bundle_dir(code: str, cache_dir: str | Path, **kw) -> Path:
    """`<cache>/bundles/demo-<code>-v<version>`, built on first use (temp dir + atomic rename)."""
    target = Path(cache_dir).expanduser() / CACHE_SUBDIR / f"demo-{code}-v{demo_version(code, **kw)}"
    return build_once(target, lambda staging: write_demo_bundle(code, staging / "bundle", **kw))
