"""Selector of the selective-concatenation baseline: training pairs, selection rule, training, save/load, pipeline."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir

from mtic.data.schema import Session, SingleTurnQuery, Turn
from mtic.inputs.views import SelectedConcatView
from mtic.models import selector as selector_module
from mtic.models.selector import (
    Pair,
    Selector,
    gold_choice,
    load_selector,
    selection_accuracy,
    session_pairs,
    single_turn_pairs,
    train_selector,
)

CONF = Path(__file__).resolve().parents[1] / "conf"


def session(*turns: tuple[str, str | None]) -> Session:
    return Session("s", tuple(Turn(t, i) for t, i in turns))


def test_gold_choice_is_the_most_recent_same_intent_turn() -> None:
    assert gold_choice(session(("a", "x"), ("b", "y"), ("c", "x"), ("d", "x"))) == 2
    assert gold_choice(session(("a", "y"), ("b", "z"), ("c", "x"))) is None
    assert gold_choice(session(("a", "x"))) is None


def test_session_pairs() -> None:
    pairs = session_pairs([session(("a", "x"), ("b", None), ("c", "x"), ("d", "y"))])
    # prefix 'c': history a (same intent, positive), b unlabelled (skipped); prefix 'd': a, c negatives ("none")
    assert pairs == [Pair("a", "c", 1.0), Pair("a", "d", 0.0), Pair("c", "d", 0.0)]
    # every same-intent history query is a positive (the pair scorer cannot see recency; selection ties can)
    assert session_pairs([session(("a", "x"), ("b", "x"), ("c", "x"))]) == [
        Pair("a", "b", 1.0), Pair("a", "c", 1.0), Pair("b", "c", 1.0)]


def test_single_turn_fallback_pairs() -> None:
    queries = [SingleTurnQuery(t, i) for t, i in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b"), ("c1", "c")]]
    pairs = single_turn_pairs(queries, negatives=2, seed=0)
    intent = {q.text: q.intent for q in queries}
    assert pairs == single_turn_pairs(queries, negatives=2, seed=0)
    assert all((intent[p.history] == intent[p.last]) == (p.label == 1.0) for p in pairs)
    assert sum(p.label for p in pairs) == 4 and len(pairs) == 4 + 2 * len(queries)


class FixedSelector(Selector):
    """The selection rule over given probabilities (no model)."""

    def __init__(self, probs: list[float], threshold: float = 0.5) -> None:
        self.probs, self.threshold, self._cache, self.cache_size, self.calls = probs, threshold, {}, 10, 0

    def probabilities(self, history, last):  # type: ignore[override]
        self.calls += 1
        return self.probs[: len(history)]


def test_selection_rule() -> None:
    assert FixedSelector([0.2, 0.9, 0.4])(["a", "b", "c"], "d") == 1
    assert FixedSelector([0.2, 0.3])(["a", "b"], "d") is None  # nothing reaches the threshold: no context
    assert FixedSelector([0.8, 0.8])(["a", "b"], "d") == 1  # ties go to the most recent query
    assert FixedSelector([])([], "d") is None
    cached = FixedSelector([0.9])
    cached(["a"], "b")
    cached(["a"], "b")
    assert cached.calls == 1
    view = SelectedConcatView(selector=FixedSelector([0.1, 0.7]))
    assert view(session(("a", "x"), ("b", "x"), ("c", "x"))).text == "b | c"
    # prefix "a b": [0.1] -> None but gold 0 (miss); prefix "a b c": 1 = gold (hit)
    assert selection_accuracy(FixedSelector([0.1, 0.7]), [session(("a", "x"), ("b", "x"), ("c", "x"))]) == 0.5


# Two labelled sessions where the same-intent history query is once the older and once the more recent one: a
# selector that learnt from the pairs picks it by content, not by position.
SELECTOR_TRAIN = [
    {"id": "a", "turns": [{"text": "where is my parcel", "intent": "track"},
                          {"text": "cancel my order", "intent": "cancel"}, {"text": "still nothing", "intent": "track"}]},
    {"id": "b", "turns": [{"text": "cancel my order", "intent": "cancel"},
                          {"text": "where is my parcel", "intent": "track"},
                          {"text": "is it cancelled yet", "intent": "cancel"}]},
]


def test_train_save_load_and_fallback(tiny_bundle: Path, tmp_path: Path) -> None:
    (tiny_bundle / "sessions" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in SELECTOR_TRAIN),
                                                          encoding="utf-8")
    selector, summary = train_selector(tiny_bundle, "tiny-bert", epochs=20, lr=3e-3, batch_size=8, seed=0)
    # pairs: (parcel, cancel) 0, (parcel, still) 1, (cancel, still) 0, (cancel, parcel) 0, (cancel, cancelled) 1, ...
    assert summary["source"] == "sessions" and summary["pairs"] == 6 and summary["positives"] == 2
    assert summary["holdout_sessions"] == 0 and summary["holdout_acc"] is None
    assert summary["last_loss"] < summary["first_loss"]
    assert isinstance(selector.scorer, pl.LightningModule) and len(selector.scorer.losses) == 20  # 1 batch x 20 epochs
    assert not selector.scorer.training
    history, last = ["where is my parcel", "cancel my order"], "still nothing"
    probs = selector.probabilities(history, last)
    assert len(probs) == 2 and probs[0] > 0.5 > probs[1], probs  # same intent (track) over other intent (cancel)
    assert selector(history, last) == 0  # the older same-intent query, not the more recent one
    other = selector.probabilities(["cancel my order", "where is my parcel"], "is it cancelled yet")
    assert other[0] > 0.5 > other[1], other
    assert selector(["cancel my order", "where is my parcel"], "is it cancelled yet") == 0
    assert selector(["cancel my order"], "still nothing") is None  # no history query reaches the threshold
    out = selector.save(tmp_path / "sel")
    selector_module._LOADED.clear()  # force a real reload from disk
    loaded = load_selector(out, threshold=0.3)
    assert loaded is not selector and loaded.threshold == 0.3
    assert torch.allclose(torch.tensor(loaded.probabilities(history, last)), torch.tensor(probs), atol=1e-6)
    assert loaded(history, last) == 0
    strict = load_selector(out, threshold=probs[0] + 1e-3)  # the same object: the new threshold applies at once
    assert strict is loaded and strict(history, last) is None

    _, summary = train_selector(tiny_bundle, "tiny-bert", sessions="none", epochs=1, batch_size=8)
    assert summary["source"] == "single_turn" and summary["positives"] == 8
    # seeded: the same losses again; Trainer arguments pass through (`trainer`)
    again, repeat = train_selector(tiny_bundle, "tiny-bert", sessions="none", epochs=1, batch_size=8,
                                   trainer={"max_steps": 1})
    assert repeat["first_loss"] == summary["first_loss"] and len(again.scorer.losses) == 1
    with pytest.raises(FileNotFoundError, match="no trained selector"):
        load_selector(tmp_path / "missing")


def test_selective_pipeline_end_to_end(tiny_bundle: Path, tmp_path: Path) -> None:
    from mtic.pipelines import run

    overrides = [
        "+experiment=baseline_select", f"paths.data_dir={tiny_bundle}", f"paths.run_dir={tmp_path / 'run'}",
        "market.encoder=tiny-bert", "logger=none", "callbacks=none", "trainer.max_epochs=1",
        "trainer.enable_checkpointing=false", "trainer.enable_progress_bar=false", "pipeline.selector.epochs=1",
        "model.tree_height=2", "data.batch_size=8",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    metrics = run(cfg)
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert record["method"] == "selective_concat" and record["selector"]["source"] == "single_turn"  # label-free
    assert record["backbone"] == "tiny-bert" and (tmp_path / "run" / "selector" / "selector.json").is_file()
    rows = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert [(r["session_id"], r["target"]) for r in rows] == [
        ("s1", "cancel_status"), ("s2", "refund"), ("s3", "cancel")]
    assert all(r["intent"] in {"cancel", "cancel_status", "refund", "track"} for r in rows)
    # the reported accuracy is that of the written predictions
    assert metrics["test/acc"] == pytest.approx(sum(r["intent"] == r["target"] for r in rows) / 3, abs=1e-6)
    assert record["metrics"]["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
