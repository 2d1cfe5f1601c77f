"""Session crafting: determinism, recovery of the transition model, forced follow-ups, leakage-free splits."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtic.data.schema import Session, Turn, normalise_text
from mtic.dataset_factories.craft import (
    DEFAULT_EVAL_FOLLOWUP_SHARE,
    MIN_EVAL_FOLLOWUP_SHARE,
    TransitionModel,
    check_disjoint,
    craft_sessions,
    craft_splits,
    estimate_transitions,
    followup_share,
    split_followups,
)

KB = Path(__file__).resolve().parents[1] / "mtic" / "dataset_factories" / "demo" / "knowledge_base.json"
TOLERANCE = 0.03


def _toy_taxonomy() -> dict[str, tuple[str, ...]]:
    """Three categories of 2-4 intents: every move is possible from every intent (no fallbacks)."""
    sizes = {"A": 4, "B": 3, "C": 2}
    return {f"{cat}{k}": ("Root", cat) for cat, n in sizes.items() for k in range(n)}


def _pools(parents: dict[str, tuple[str, ...]], n_queries: int = 8, n_followups: int = 4):
    queries = {i: [f"{i} query {k}" for k in range(n_queries)] for i in parents}
    followups = {i: [f"{i} followup {k}" for k in range(n_followups)] for i in parents}
    return queries, followups


MODEL = TransitionModel(p_stay=0.5, p_switch_within=0.3, p_switch_away=0.2,
                        length_dist={1: 0.2, 2: 0.4, 3: 0.3, 4: 0.1}, p_followup=0.5)


def test_same_seed_same_sessions_different_seed_differs() -> None:
    parents = _toy_taxonomy()
    queries, followups = _pools(parents)

    def make(seed: int) -> list[Session]:
        return craft_sessions(MODEL, queries, followups, parents.__getitem__, 50, seed, "s")

    assert make(1) == make(1)
    assert make(1) != make(2)
    shuffled = {i: list(reversed(queries[i])) for i in reversed(list(queries))}
    assert craft_sessions(MODEL, shuffled, followups, parents.__getitem__, 50, 1, "s") == make(1)
    assert all(t.intent is not None for s in make(1) for t in s.turns)


@pytest.mark.parametrize("taxonomy", ["toy", "demo_kb"])
def test_estimates_recover_the_model(taxonomy: str) -> None:
    if taxonomy == "toy":
        parents = _toy_taxonomy()
    else:  # the demo KB has single-intent categories: the estimator must undo the within->away fallback
        parents = {row["id"]: tuple(row["path"][:-1]) for row in json.loads(KB.read_text())["intents"]}
    queries, followups = _pools(parents)
    sessions = craft_sessions(MODEL, queries, followups, parents.__getitem__, 8000, 0, "s")
    est = estimate_transitions(sessions, parents.__getitem__, intents=parents)
    assert abs(est.p_stay - MODEL.p_stay) < TOLERANCE
    assert abs(est.p_switch_within - MODEL.p_switch_within) < TOLERANCE
    assert abs(est.p_switch_away - MODEL.p_switch_away) < TOLERANCE
    assert set(est.length_dist) == set(MODEL.length_dist)
    for n, p in MODEL.length_dist.items():
        assert abs(est.length_dist[n] - p) < TOLERANCE
    uniform = 1 / len(parents)
    assert max(abs(p - uniform) for p in est.first_intent.values()) < TOLERANCE


def test_estimate_skips_unlabelled_turns() -> None:
    parents = _toy_taxonomy()
    sessions = [
        Session("a", (Turn("x", "A0"), Turn("y", "A0"), Turn("z"), Turn("w", "B0"))),
        Session("b", (Turn("x"), Turn("y", "A1"), Turn("z", "A2"))),
    ]
    est = estimate_transitions(sessions, parents.__getitem__)
    assert est.p_stay == pytest.approx(0.5) and est.p_switch_within == pytest.approx(0.5)
    assert est.first_intent == {"A0": 1.0}
    assert est.length_dist == {3: 0.5, 4: 0.5}
    with pytest.raises(ValueError, match="consecutive labelled"):
        estimate_transitions([Session("c", (Turn("x"), Turn("y", "A0")))], parents.__getitem__)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"p_stay": 0.5, "p_switch_within": 0.5, "p_switch_away": 0.5}, "sum to 1"),
        ({"p_stay": 1.2, "p_switch_within": -0.1, "p_switch_away": -0.1}, r"\[0, 1\]"),
        ({"length_dist": {0: 1.0}}, "turn counts"),
        ({"length_dist": {1: 0.5, 2: 0.4}}, "length_dist must sum to 1"),
        ({"first_intent": {"A0": 0.3}}, "first_intent must sum to 1"),
        ({"p_followup": 2.0}, "p_followup"),
    ],
)
def test_transition_model_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TransitionModel(**kwargs)


def test_fallback_when_category_has_one_intent() -> None:
    parents = {"solo": ("X",), "a": ("Y",), "b": ("Y",)}
    queries, followups = _pools(parents)
    model = TransitionModel(p_stay=0.0, p_switch_within=1.0, p_switch_away=0.0, length_dist={2: 1.0})
    sessions = craft_sessions(model, queries, followups, parents.__getitem__, 200, 0, "s")
    for s in sessions:
        first, second = s.turns[0].intent, s.turns[1].intent
        assert second != first
        if first != "solo":
            assert parents[second] == parents[first]


@pytest.mark.parametrize("share", [0.0, 0.3, 0.4, 1.0])
def test_forced_followup_share_is_exact(share: float) -> None:
    parents = _toy_taxonomy()
    queries, followups = _pools(parents)
    n = 123
    sessions = craft_sessions(MODEL, queries, followups, parents.__getitem__, n, 0, "s", last_turn_followup_share=share)
    ending = [s for s in sessions if s.last.text in followups[s.target]]
    assert len(ending) == round(share * n)
    assert followup_share(sessions, followups) == pytest.approx(round(share * n) / n)
    for s in ending:
        assert len(s.turns) >= 2 and s.turns[-2].intent == s.target


def _leaky_case():
    """Toy pools with every way an evaluation text could reach the training side.

    Six follow-ups per intent; "same here" is a follow-up of A0 and B0 (shared); B1's follow-up
    "A1  QUERY 0" is A1's training query up to case and whitespace; the held-out pools overlap single-turn
    valid; everything C1 holds out is a training query (C1 must leave the evaluation sessions).
    """
    parents = _toy_taxonomy()
    queries, followups = _pools(parents, n_queries=12, n_followups=6)
    followups["A0"][0] = followups["B0"][0] = "same here"
    followups["B1"][1] = "A1  QUERY 0"
    train_pool = {i: q[:6] for i, q in queries.items()}
    single_valid = {i: q[6:7] for i, q in queries.items()}
    eval_pool = {i: q[6:] for i, q in queries.items()}  # overlaps single_valid: must be filtered out
    eval_pool["C1"] = [t.upper() for t in train_pool["C1"][:2]]  # training queries in another case
    return parents, train_pool, single_valid, eval_pool, followups


def _craft_leaky(seed: int = 3):
    parents, train_pool, single_valid, eval_pool, followups = _leaky_case()
    splits = craft_splits(
        MODEL, train_pool, eval_pool, followups, parents.__getitem__, n_train=60, n_unlabeled=80, n_valid=40,
        n_test=100, seed=seed, single_turn_texts=[t for v in single_valid.values() for t in v],
    )
    return splits, train_pool, single_valid, followups


def test_splits_strip_history_and_keep_every_eval_text_off_the_training_side() -> None:
    splits, train_pool, single_valid, followups = _craft_leaky()
    assert splits.eval_excluded_intents == ["C1"]  # never filled with training queries
    assert len(splits.train) == 60 and len(splits.test) == 100 and len(splits.valid) == 40
    assert all(t.intent is not None for s in splits.train for t in s.turns)
    assert all(t.intent is None for s in splits.unlabeled for t in s.turns)
    assert [s.unlabeled() for s in splits.unlabeled_gold] == splits.unlabeled
    assert all(t.intent is not None for s in splits.unlabeled_gold for t in s.turns)
    # follow-ups: two sides, disjoint; a shared text and a text equal to a training query stay on training side
    train_fu = {t for v in splits.train_followups.values() for t in v}
    eval_fu = {t for v in splits.eval_followups.values() for t in v}
    assert not train_fu & eval_fu and "same here" in train_fu and "A1  QUERY 0" in train_fu
    assert all(len(splits.eval_followups[i]) == 2 for i in splits.eval_followups)  # a third of 6
    assert "C1" not in splits.eval_followups and len(splits.eval_followups) == len(followups) - 1
    # every turn of every valid/test session (history included) is off the training side
    training = {t for v in train_pool.values() for t in v} | {t for v in single_valid.values() for t in v} | train_fu
    training |= {t.text for s in (*splits.train, *splits.unlabeled_gold) for t in s.turns}
    training = {normalise_text(t) for t in training}
    eval_turns = [t for s in (*splits.valid, *splits.test) for t in s.turns]
    assert eval_turns and not [t.text for t in eval_turns if normalise_text(t.text) in training]
    assert not [t for t in eval_turns if t.text.lower().startswith("c1 ")]
    for split in (splits.valid, splits.test):
        for s in split:
            assert s.target is not None and s.target != "C1" and all(t.intent is None for t in s.turns[:-1])
    # training sessions never use an evaluation follow-up; evaluation sessions end with one as often as asked
    assert not {t.text for s in (*splits.train, *splits.unlabeled_gold) for t in s.turns} & eval_fu
    assert followup_share(splits.test, splits.eval_followups) == pytest.approx(DEFAULT_EVAL_FOLLOWUP_SHARE)
    assert followup_share(splits.test, followups) == pytest.approx(DEFAULT_EVAL_FOLLOWUP_SHARE)
    assert DEFAULT_EVAL_FOLLOWUP_SHARE >= MIN_EVAL_FOLLOWUP_SHARE
    again, *_ = _craft_leaky()
    assert again.test == splits.test and again.unlabeled_gold == splits.unlabeled_gold


def test_split_followups_is_disjoint_deterministic_and_keeps_shared_texts_for_training() -> None:
    followups = {"A": ["a1", "a2", "a3", "a4", "a5", "a6", "then how"], "B": ["b1", "b2", "b3", "Then  How"],
                 "C": ["c1"], "D": ["same", "SAME "]}
    train, held = split_followups(followups, 1 / 3, seed=0, reserved=["A1"])
    assert set(train) == set(held) == set(followups)
    for intent, texts in followups.items():
        assert not {normalise_text(t) for t in train[intent]} & {normalise_text(t) for t in held[intent]}
        assert sorted(train[intent] + held[intent]) == sorted(set(texts))
        assert train[intent]  # every intent keeps a training follow-up
    assert "then how" in train["A"] and "Then  How" in train["B"]  # shared (after normalisation)
    assert "a1" in train["A"]  # reserved: already a training-side text
    assert len(held["A"]) == 2 and len(held["B"]) == 1 and held["C"] == [] and held["D"] == []
    reordered = {i: list(reversed(v)) for i, v in reversed(list(followups.items()))}
    assert split_followups(reordered, 1 / 3, seed=0, reserved=["A1"]) == (train, held)
    held_by_seed = {tuple(split_followups(followups, 1 / 3, seed=s)[1]["A"]) for s in range(10)}
    assert len(held_by_seed) > 1


def test_given_eval_followups_are_filtered_and_nothing_held_out_is_an_error() -> None:
    parents = _toy_taxonomy()
    queries, followups = _pools(parents, n_queries=10)
    train_pool = {i: q[:7] for i, q in queries.items()}
    eval_pool = {i: q[7:] for i, q in queries.items()}
    # the given evaluation follow-ups: one new text, then training-side texts (a follow-up, a query)
    leaky_eval = {i: [f"{i} new followup", v[0].upper(), queries[i][0]] for i, v in followups.items()}
    splits = craft_splits(MODEL, train_pool, eval_pool, followups, parents.__getitem__, n_train=10,
                          n_unlabeled=10, n_valid=20, n_test=40, seed=0, eval_followups_by_intent=leaky_eval)
    assert splits.eval_followups == {i: [f"{i} new followup"] for i in followups}
    training = {t for v in train_pool.values() for t in v} | {t for v in followups.values() for t in v}
    assert not {t.text for s in (*splits.valid, *splits.test) for t in s.turns} & training
    with pytest.raises(ValueError, match="no intent has a held-out query"):
        craft_splits(MODEL, train_pool, {i: q[:2] for i, q in train_pool.items()}, followups, parents.__getitem__,
                     n_train=10, n_unlabeled=10, n_valid=5, n_test=5)


def test_check_disjoint_names_the_leak() -> None:
    train = [Session("t", (Turn("Still nothing", "A"),))]
    check_disjoint(train, [Session("v", (Turn("still something", "A"),))])
    with pytest.raises(ValueError, match="still  NOTHING"):
        check_disjoint(train, [Session("v", (Turn("hello"), Turn("still  NOTHING", "A")))])
    with pytest.raises(ValueError, match="1 evaluation text"):
        check_disjoint([], [Session("v", (Turn("a query", "A"),))], extra_training=["A Query"])
