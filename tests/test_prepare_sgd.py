"""SGD -> bundle on a small fixture in the original layout (tests/fixtures/sgd), plus a subset of the real data."""
from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pytest

from mtic.data.bundle import read_bundle, read_unlabeled_gold
from mtic.data.errors import BundleError
from mtic.data.taxonomy import Taxonomy
from mtic.dataset_factories.prepare import prepare, sgd
from mtic.dataset_factories.prepare.sgd import NONE_ID, SGDOptions, build
from mtic.dataset_factories.prepare.transitions import (
    SGD_LENGTH_COUNTS,
    SGD_TRANSITIONS,
    estimate_from_bundle,
    length_counts,
)

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "sgd"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "sgd"
OPTS = SGDOptions(valid_share=0.25, test_share=0.25)


def _dialogues(split: str) -> dict[str, sgd.Dialogue]:
    files = sgd.source_files(FIXTURE)
    _, services = sgd.read_schemas([p for p in files if p.name.startswith("schema")])
    return {d.id: d for d in sgd.read_dialogues(FIXTURE / split / "dialogues_001.json", split, services)}


def test_intents_titles_labels_and_none() -> None:
    bundle, _ = build(FIXTURE, OPTS)
    by_id = {i.id: i for i in bundle.intents}
    assert list(by_id) == ["Alarm/AddAlarm", "Alarm/GetAlarms", "Media/FindMovies", "Movies/BuyMovieTickets",
                           "Movies/FindMovies", "Restaurants/FindRestaurants", "Restaurants/ReserveRestaurant",
                           "Weather/GetWeather", NONE_ID]
    reserve = by_id["Restaurants/ReserveRestaurant"]
    assert reserve.path == ("Restaurants", "ReserveRestaurant") and reserve.label == "Reserve Restaurant"
    assert reserve.title == "Reserve a table at a restaurant"  # Restaurants_1 sorts before Restaurants_2
    assert by_id["Media/FindMovies"].path == ("Media", "FindMovies (Media)")  # a name shared by two domains
    assert by_id["Movies/FindMovies"].label == "Find Movies (Movies)"
    assert by_id[NONE_ID].path == (NONE_ID, NONE_ID)
    assert Taxonomy.from_intents(bundle.intents).num_classes == [6, 9]


def test_turn_intents_user_turns_only_and_tie_breaks() -> None:
    train = _dialogues("train")
    assert [t.text for t in train["train/1_00000"].turns][-1] == "Thanks, that's all."  # SYSTEM turns dropped
    assert [t.intent for t in train["train/1_00000"].turns] == [
        "Restaurants/FindRestaurants", "Restaurants/FindRestaurants", "Restaurants/ReserveRestaurant", NONE_ID]
    # two active frames: (1) the one with INFORM_INTENT, then (2) the one continuing the previous turn's intent
    assert [t.intent for t in train["train/1_00001"].turns] == [
        "Media/FindMovies", "Media/FindMovies", "Weather/GetWeather", "Weather/GetWeather", NONE_ID]
    # both frames state an intent -> first service in sorted order; neither states nor continues -> same rule
    assert [t.intent for t in train["train/1_00003"].turns] == [
        NONE_ID, "Restaurants/FindRestaurants", "Restaurants/ReserveRestaurant"]
    assert [t.states for t in train["train/1_00001"].turns] == [True, False, True, False, False]


def test_single_turn_only_from_inform_intent_turns_of_train_and_valid() -> None:
    bundle, _ = build(FIXTURE, OPTS)
    stated = {t.text: t.intent for split in ("train", "dev", "test") for d in _dialogues(split).values()
              for t in d.turns if t.states}
    assert bundle.single_turn and all(stated.get(q.text) == q.intent for q in bundle.single_turn)
    texts = {q.text for q in bundle.single_turn}
    assert not texts & {"Italian food please.", "Hello there.", "And tomorrow?", "Yes, please."}
    dialogues = {**_dialogues("train"), **_dialogues("dev"), **_dialogues("test")}
    test_dialogues = [dialogues[s.id.split("#")[0]] for s in bundle.sessions["test"]]
    assert test_dialogues and not texts & {t.text for d in test_dialogues for t in d.turns}  # never from test


def test_resplit_keeps_every_test_intent_in_training() -> None:
    for seed in range(6):
        bundle, _ = build(FIXTURE, SGDOptions(seed=seed, valid_share=0.3, test_share=0.4))
        trained = {q.intent for q in bundle.single_turn if q.split == "train"}
        targets = {s.target for split in ("valid", "test") for s in bundle.sessions.get(split, [])}
        assert targets <= trained and NONE_ID not in targets
    # the only dialogue stating Alarm/AddAlarm is moved back to train wherever the shuffle put it
    rare = sgd.Dialogue("x/rare", (sgd.UserTurn("set an alarm", "Alarm/AddAlarm", True),))
    common = [sgd.Dialogue(f"x/{k}", (sgd.UserTurn(f"find food {k}", "R/Find", True),)) for k in range(9)]
    moved = 0
    for seed in range(10):
        train, valid, test, n = sgd.resplit([rare, *common], SGDOptions(seed=seed, valid_share=0.2, test_share=0.4))
        assert rare in train and len(train) + len(valid) + len(test) == 10
        moved += n
    assert moved > 0


def test_eval_sessions_are_cut_dialogues_with_only_the_last_label() -> None:
    bundle, _ = build(FIXTURE, OPTS)
    dialogues = {**_dialogues("train"), **_dialogues("dev"), **_dialogues("test")}
    for session in bundle.sessions["valid"] + bundle.sessions["test"]:
        base, _, n = session.id.partition("#")
        source = dialogues[base]
        assert [t.text for t in session.turns] == [t.text for t in source.turns[: int(n)]]
        assert session.target == source.turns[int(n) - 1].intent != NONE_ID
        assert all(t.intent is None for t in session.turns[:-1])
    extra = bundle.meta.extra
    test = bundle.sessions["test"]
    assert test and extra["test_nonfirst_share"] == pytest.approx(sum(len(s.turns) > 1 for s in test) / len(test))
    assert sum(extra["dialogues"].values()) == 12
    assert extra["dialogues"]["train"] == 6 + extra["moved_to_train_for_coverage"]


def test_unlabeled_sessions_and_gold_side_file(tmp_path: Path) -> None:
    root = prepare("sgd", FIXTURE, tmp_path / "b", valid_share=0.25, test_share=0.25)
    bundle = read_bundle(root)
    gold = read_unlabeled_gold(root, {i.id for i in bundle.intents})
    unlabeled = bundle.sessions["unlabeled"]
    assert gold is not None and [s.id for s in gold] == [s.id for s in unlabeled]
    assert all(u.queries == g.queries and u.target is None for u, g in zip(unlabeled, gold))
    assert all(t.intent is not None for s in gold for t in s.turns) and all(s.target != NONE_ID for s in gold)
    train_ids = {s.id for s in bundle.sessions["train"]}
    assert {s.id.split("#")[0] for s in gold} == train_ids  # one unlabelled session per train dialogue
    assert any(t.intent == NONE_ID for s in bundle.sessions["train"] for t in s.turns)


def test_deterministic_and_seeded() -> None:
    first = build(FIXTURE, OPTS)
    assert build(FIXTURE, OPTS) == first
    assert any(build(FIXTURE, SGDOptions(seed=s, valid_share=0.25, test_share=0.25))[0].sessions != first[0].sessions
               for s in (1, 2, 3))


def test_max_dialogues_covers_every_stated_intent() -> None:
    bundle, _ = build(FIXTURE, SGDOptions(max_dialogues=7, valid_share=0.15, test_share=0.15))
    assert bundle.meta.extra["dialogues_used"] == 7
    stated = {t.intent for split in ("train", "dev", "test") for d in _dialogues(split).values() for t in d.turns if t.states}
    assert {q.intent for q in bundle.single_turn if q.split == "train"} == stated


def test_gzipped_files_give_the_same_bundle(tmp_path: Path) -> None:
    src = tmp_path / "sgd"
    shutil.copytree(FIXTURE, src)
    for path in list((src / "dev").glob("*.json")) + [src / "train" / "dialogues_001.json"]:
        path.with_suffix(".json.gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    assert build(src, OPTS) == build(FIXTURE, OPTS)


def test_malformed_sources_name_file_and_line(tmp_path: Path) -> None:
    src = tmp_path / "sgd"
    shutil.copytree(FIXTURE, src)
    path = src / "train" / "dialogues_001.json"
    good = path.read_text()
    path.write_text(good.replace('"active_intent": "GetWeather"', '"active_intent": "GetForecast"', 1))
    line = good.splitlines().index('    "dialogue_id": "1_00001",') + 1
    with pytest.raises(BundleError, match=rf"dialogues_001.json:{line}: dialogue 1_00001: turn 4: intent 'GetForecast'"):
        build(src, OPTS)
    path.write_text(good[:500])
    with pytest.raises(BundleError, match=r"dialogues_001.json:\d+: malformed JSON"):
        build(src, OPTS)
    shutil.rmtree(src / "dev")
    with pytest.raises(BundleError, match=r"dev: SGD split folder missing"):
        build(src, OPTS)


SUBSET = {"train": ("001", "050", "100"), "dev": ("001", "020"), "test": ("001", "030")}


def _real_subset(root: Path) -> Path:
    for split, numbers in SUBSET.items():
        (root / split).mkdir(parents=True)
        for name in ("schema", *(f"dialogues_{n}" for n in numbers)):
            (root / split / f"{name}.json.gz").symlink_to(SHARED / split / f"{name}.json.gz")
    return root


@pytest.mark.datasets
def test_real_sgd_subset(tmp_path: Path) -> None:
    if not SHARED.is_dir():
        pytest.skip(f"SGD not available at {SHARED}")
    root = prepare("sgd", _real_subset(tmp_path / "sgd"), tmp_path / "bundle")
    bundle = read_bundle(root)
    assert len(bundle.intents) == 48 and Taxonomy.from_intents(bundle.intents).depth == 2
    assert bundle.meta.extra["dialogues_used"] > 800
    trained = {q.intent for q in bundle.single_turn if q.split == "train"}
    assert {s.target for s in bundle.sessions["test"]} <= trained
    assert bundle.meta.extra["test_nonfirst_share"] > 0.5
    estimate = estimate_from_bundle(bundle)  # a 7-file subset: close to the constant estimated on all files
    for key in ("p_stay", "p_switch_within", "p_switch_away"):
        assert abs(getattr(estimate, key) - getattr(SGD_TRANSITIONS, key)) < 0.03, key


@pytest.mark.datasets
def test_sgd_transitions_constant_matches_the_full_data() -> None:
    if not SHARED.is_dir():
        pytest.skip(f"SGD not available at {SHARED}")
    if os.environ.get("MTIC_FULL_DATASETS") != "1":
        pytest.skip("converts all of SGD (~10-20 s): set MTIC_FULL_DATASETS=1 to run it")
    bundle, _ = build(SHARED, SGDOptions())
    estimate = estimate_from_bundle(bundle)
    for key in ("p_stay", "p_switch_within", "p_switch_away"):
        assert getattr(estimate, key) == pytest.approx(getattr(SGD_TRANSITIONS, key), abs=1e-4), key
    assert length_counts(bundle) == SGD_LENGTH_COUNTS
