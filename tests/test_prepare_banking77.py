"""Banking77 -> bundle on a small CSV fixture (tests/fixtures/banking77) and on the real files."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mtic.data.bundle import read_bundle
from mtic.data.errors import BundleError
from mtic.data.stats import leaked_eval_turns
from mtic.dataset_factories.prepare import prepare
from mtic.dataset_factories.prepare.banking77 import Banking77Options, build, read_csv

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "banking77"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "banking77"
SMALL = {"n_train": 12, "n_unlabeled": 12, "n_valid": 5, "valid_share": 0.4}


def test_csv_rows_with_quoted_newlines() -> None:
    rows = read_csv(FIXTURE / "train.csv")
    assert len(rows) == 26 and rows[0] == ("I am still waiting on my card?", "card_arrival", 2)
    assert ("The top up didn't work\nwhat happened?", "top_up_failed", 17) in rows


def test_flat_intents_and_splits() -> None:
    bundle, gold = build(FIXTURE, Banking77Options(**SMALL))
    assert [i.id for i in bundle.intents][:2] == ["card_arrival", "lost_or_stolen_card"] and len(bundle.intents) == 6
    arrival = bundle.intents[0]
    assert arrival.path == ("card_arrival",) and arrival.title == "Card arrival" and arrival.label == "Card Arrival"
    assert bundle.intents[-1].label == "Atm Support"  # atm_support: listed in categories.json, no rows
    # 40 % of 5 distinct texts held out: 1 per intent single-turn valid, 1 for the valid sessions only
    valid = [q for q in bundle.single_turn if q.split == "valid"]
    assert len({q.intent for q in valid}) == 5 and len(valid) == 5
    session_rows = bundle.meta.extra["valid_session_rows"]
    assert session_rows >= 5 and len(bundle.single_turn) + session_rows == 26  # every other row, duplicates kept
    test_texts = {t for t, _, _ in read_csv(FIXTURE / "test.csv")}
    assert len(bundle.sessions["test"]) == 10 and all(t.text in test_texts for s in bundle.sessions["test"] for t in s.turns)
    train_texts = {q.text for q in bundle.single_turn if q.split == "train"}
    assert all(t.text in train_texts for s in bundle.sessions["train"] + gold for t in s.turns)
    # valid sessions: train.csv texts of no single-turn split; no valid/test turn is a training-side text
    source = {t for t, _, _ in read_csv(FIXTURE / "train.csv")}
    single = {q.text for q in bundle.single_turn}
    valid_turns = {t.text for s in bundle.sessions["valid"] for t in s.turns}
    assert valid_turns and valid_turns <= source - single
    assert leaked_eval_turns(bundle, gold) == {"leaked_last_valid": 0, "leaked_any_valid": 0, "eval_turns_valid":
                                               sum(len(s.turns) for s in bundle.sessions["valid"]),
                                               "leaked_last_test": 0, "leaked_any_test": 0, "eval_turns_test":
                                               sum(len(s.turns) for s in bundle.sessions["test"])}


def test_written_bundle_validates_and_is_deterministic(tmp_path: Path) -> None:
    a = read_bundle(prepare("banking77", FIXTURE, tmp_path / "a", **SMALL))
    b = read_bundle(prepare("banking77", FIXTURE, tmp_path / "b", **SMALL))
    assert a.sessions == b.sessions and a.single_turn == b.single_turn and (tmp_path / "a/sessions/unlabeled.gold.jsonl").is_file()


def test_errors(tmp_path: Path) -> None:
    src = tmp_path / "b77"
    shutil.copytree(FIXTURE, src)
    path = src / "test.csv"
    path.write_text(path.read_text() + "Where is my money?,money_gone\n")
    with pytest.raises(BundleError, match=r"test.csv:12: category 'money_gone' is not in categories.json"):
        build(src, Banking77Options(**SMALL))
    path.write_text("text,category\nonly one column\n")
    with pytest.raises(BundleError, match=r"test.csv:2: expected 2 columns"):
        build(src, Banking77Options(**SMALL))


def test_repository_layout_is_found(tmp_path: Path) -> None:
    shutil.copytree(FIXTURE, tmp_path / "b77" / "banking_data")
    assert build(tmp_path / "b77", Banking77Options(**SMALL)) == build(FIXTURE, Banking77Options(**SMALL))


@pytest.mark.datasets
def test_real_banking77() -> None:
    if not SHARED.is_dir():
        pytest.skip(f"Banking77 not available at {SHARED}")
    bundle, _ = build(SHARED, Banking77Options(n_train=50, n_unlabeled=50, n_valid=20, n_test=100))
    assert len(bundle.intents) == 77 and all(len(i.path) == 1 for i in bundle.intents)
    extra = bundle.meta.extra
    assert len(bundle.single_turn) + extra["valid_session_rows"] == extra["source_rows"]["train"] > 10_000
    leaks = leaked_eval_turns(bundle)
    assert leaks["leaked_any_valid"] == leaks["leaked_any_test"] == 0 and extra["eval_excluded_intents"] == []
    assert {q.intent for q in bundle.single_turn if q.split == "train"} == {i.id for i in bundle.intents}
