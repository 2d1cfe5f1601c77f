"""Demo bundles: every market file that exists (plus a synthetic one) builds a valid bundle whose valid/test
turns (history and follow-ups included) never appear in a training-side file."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from mtic.data.bundle import read_bundle, read_unlabeled_gold
from mtic.data.schema import normalise_text
from mtic.data.stats import bundle_stats, stats_table
from mtic.data.taxonomy import Taxonomy
from mtic.dataset_factories.craft import MIN_EVAL_FOLLOWUP_SHARE
from mtic.dataset_factories.demo.build import (
    DEFAULT_SIZES,
    MARKETS,
    available_markets,
    build_demo_bundle,
    demo_bundle_dir,
    load_knowledge_base,
    load_market,
    market_path,
    write_demo_bundle,
)

MIN_INTENTS = 40
LEVELS = 3
MIN_MARKET_QUERIES = 12
SYNTHETIC = "zz"


@pytest.fixture(scope="session")
def synthetic_markets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A market file in the documented format for every KB intent (12 queries, 4 follow-ups each)."""
    root = tmp_path_factory.mktemp("markets")
    intents = {
        row["id"]: {
            "title": f"Customer asks: {row['title_en']} (synthetic)",
            "queries": [f"{row['id']} question number {k}" for k in range(MIN_MARKET_QUERIES)],
            "followups": [f"{row['id']} follow-up {k}" for k in range(4)],
        }
        for row in load_knowledge_base()
    }
    data = {"market": SYNTHETIC, "languages": ["en"], "description": "A synthetic test market.", "intents": intents}
    market_path(SYNTHETIC, root).write_text(json.dumps(data), encoding="utf-8")
    return root


def _cases() -> list[tuple[str, bool]]:
    return [(SYNTHETIC, True)] + [(code, False) for code in available_markets()]


@pytest.mark.parametrize("code, synthetic", _cases())
def test_demo_bundle(code: str, synthetic: bool, synthetic_markets: Path, tmp_path: Path) -> None:
    markets_dir = synthetic_markets if synthetic else None
    market = load_market(code, markets_dir)
    for intent_id, entry in market["intents"].items():
        assert len(set(entry["queries"])) >= MIN_MARKET_QUERIES, intent_id
    root = write_demo_bundle(code, tmp_path / code, markets_dir=markets_dir)
    bundle = read_bundle(root)  # validates every file
    taxonomy = Taxonomy.from_intents(bundle.intents)
    assert len(bundle.intents) >= MIN_INTENTS and taxonomy.depth == LEVELS
    english = [i.label_en for i in bundle.intents]  # curated English labels everywhere (cross-lingual labels)
    assert None not in english and len(set(english)) == len(english)
    # a local-language market compresses its own titles; only English titles come with the English labels
    local = [i.label for i in bundle.intents]
    assert local == (english if bundle.meta.languages[0] == "en" else [None] * len(local))
    per_intent = Counter(q.intent for q in bundle.single_turn)
    assert set(per_intent) == {i.id for i in bundle.intents}
    assert all(q.split in ("train", "valid") for q in bundle.single_turn)
    sizes = {split: len(rows) for split, rows in bundle.sessions.items()}
    assert sizes == {k[2:]: v for k, v in DEFAULT_SIZES.items()}
    share = bundle.meta.extra["test_followup_share"]
    assert share >= MIN_EVAL_FOLLOWUP_SHARE
    gold = read_unlabeled_gold(root, {i.id for i in bundle.intents})
    assert gold is not None and [s.unlabeled() for s in gold] == bundle.sessions["unlabeled"]
    # no valid/test turn (last or history, follow-ups included) is a text of a training-side file
    training = {normalise_text(q.text) for q in bundle.single_turn}
    training |= {normalise_text(t.text) for split in ("train", "unlabeled") for s in bundle.sessions[split]
                 for t in s.turns}
    training |= {normalise_text(t.text) for s in gold for t in s.turns}
    followups = {t for entry in market["intents"].values() for t in entry.get("followups", [])}
    eval_followups = set()
    for split in ("valid", "test"):
        for s in bundle.sessions[split]:
            assert all(t.intent is None for t in s.turns[:-1]) and s.target is not None
            assert not [t.text for t in s.turns if normalise_text(t.text) in training], s.id
            eval_followups |= {t.text for t in s.turns} & followups
    assert eval_followups  # follow-ups are used, from their own evaluation-side pool
    stats = bundle_stats(bundle, gold)
    assert stats["test_followup_share"] == share and stats["levels"] == LEVELS
    assert [stats[f"leaked_{kind}_{split}"] for kind in ("last", "any") for split in ("valid", "test")] == [0] * 4
    assert bundle.meta.extra["eval_excluded_intents"] == []
    table = stats_table([stats])
    assert f"| {code} |" in table and "| 0 / 0 | 0 / 0 |" in table


def test_build_is_deterministic(synthetic_markets: Path) -> None:
    small = {"n_train": 20, "n_unlabeled": 20, "n_valid": 10, "n_test": 10, "markets_dir": synthetic_markets}
    assert build_demo_bundle(SYNTHETIC, 0, **small) == build_demo_bundle(SYNTHETIC, 0, **small)
    assert build_demo_bundle(SYNTHETIC, 1, **small).sessions != build_demo_bundle(SYNTHETIC, 0, **small).sessions


def test_cache_is_versioned(synthetic_markets: Path, tmp_path: Path) -> None:
    small = {"n_train": 20, "n_unlabeled": 20, "n_valid": 10, "n_test": 10, "markets_dir": synthetic_markets}
    first = demo_bundle_dir(SYNTHETIC, tmp_path, **small)
    assert first.name.startswith(f"demo-{SYNTHETIC}-v") and read_bundle(first).meta.name == f"demo-{SYNTHETIC}"
    assert demo_bundle_dir(SYNTHETIC, tmp_path, **small) == first
    assert demo_bundle_dir(SYNTHETIC, tmp_path, **{**small, "n_test": 11}) != first
    path = market_path(SYNTHETIC, synthetic_markets)
    original = path.read_text(encoding="utf-8")
    try:
        data = json.loads(original)
        data["description"] = "edited"
        path.write_text(json.dumps(data), encoding="utf-8")
        assert demo_bundle_dir(SYNTHETIC, tmp_path, **small) != first
    finally:
        path.write_text(original, encoding="utf-8")
    leftovers = [p.name for p in (tmp_path / "bundles").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_missing_market_is_a_clear_error(tmp_path: Path) -> None:
    assert set(available_markets()) <= set(MARKETS)
    with pytest.raises(FileNotFoundError, match="known markets"):
        load_market("xx", tmp_path)
