"""Self-consistency: the orderings and the agreement rules."""
from __future__ import annotations

import pytest

from mtic.clara.retrieval import Demo
from mtic.clara.self_consistency import MAJORITY, UNANIMOUS, agree, order_names, orderings

DEMOS = [Demo(f"q{k}", f"i{k % 3}", score=1.0 - k / 10) for k in range(8)]  # best first


def test_orderings_ascending_descending_random_seeded():
    asc, desc, rnd, rnd2 = orderings(DEMOS, 4, seed=1, session_id="s1")
    assert [d.score for d in asc] == sorted(d.score for d in DEMOS)  # closest demo last
    assert desc == DEMOS
    assert sorted(rnd, key=lambda d: d.text) == sorted(DEMOS, key=lambda d: d.text)
    assert rnd != rnd2  # each random ordering has its own seed
    again = orderings(DEMOS, 4, seed=1, session_id="s1")
    assert again[2] == rnd and again[3] == rnd2  # reproducible
    assert orderings(DEMOS, 3, seed=2, session_id="s1")[2] != rnd or orderings(DEMOS, 3, seed=3, session_id="s1")[2] != rnd
    assert order_names(5) == ["ascending", "descending", "random", "random", "random"]
    with pytest.raises(ValueError):
        order_names(0)


def test_unanimous():
    assert agree(["a", "a", "a"], UNANIMOUS).answer == "a"
    vote = agree(["a", "a", "b"], UNANIMOUS)
    assert not vote.kept and vote.answer is None and vote.votes == 2
    assert not agree(["a", "a", None], UNANIMOUS).kept  # a failed ordering breaks unanimity
    assert agree(["a"], UNANIMOUS).kept


def test_majority():
    assert agree(["a", "a", "b"], MAJORITY).answer == "a"
    assert agree(["a", None, "a"], MAJORITY).kept
    assert not agree(["a", "b", None], MAJORITY).kept
    assert not agree(["a", "a", "b", "b"], MAJORITY).kept  # a tie is no majority
    assert not agree([None, None, None], MAJORITY).kept


def test_unknown_rule():
    with pytest.raises(ValueError):
        agree(["a"], "plurality")
