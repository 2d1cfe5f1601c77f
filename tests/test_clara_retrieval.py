"""LARA retrieval: top-k per query, merged over the session by best similarity, candidates forced in."""
from __future__ import annotations

import numpy as np
import pytest

from mtic.clara.retrieval import DemoIndex, Retriever

# 2-D toy vectors: the embedder looks texts up in this table (unit circle angles in degrees)
ANGLES = {"a0": 0, "a0bis": 0, "a10": 10, "a20": 20, "b90": 90, "b100": 100, "c180": 180, "q5": 5, "q95": 95, "q170": 170}


def toy_embed(texts, kind="query"):
    assert kind in ("query", "passage")
    rad = np.deg2rad([ANGLES[t] for t in texts])
    return np.stack([np.cos(rad), np.sin(rad)], axis=1)


@pytest.fixture
def index() -> DemoIndex:
    texts = ["a0", "a10", "a20", "b90", "b100", "c180", "a0"]  # the duplicate is indexed once
    intents = ["A", "A", "A", "B", "B", "C", "A"]
    return DemoIndex(texts, intents, toy_embed)


def test_index_dedupes_and_searches_best_first(index):
    assert len(index) == 6
    idx, sims = index.search(toy_embed(["q5"]), k=3)
    assert {index.texts[i] for i in idx[0][:2]} == {"a0", "a10"} and index.texts[idx[0][2]] == "a20"
    assert np.all(np.diff(sims[0]) <= 1e-9)
    assert sims[0][0] == pytest.approx(np.cos(np.deg2rad(5)), abs=1e-6)


def test_ties_go_to_lower_index():
    index = DemoIndex(["b90", "a0", "a0bis"], ["B", "A", "A"], toy_embed)  # a0 and a0bis: the same vector
    idx, _ = index.search(toy_embed(["q5"]), k=2)
    assert [index.texts[i] for i in idx[0]] == ["a0", "a0bis"]


def test_session_merge_keeps_best_score_sorted(index):
    retriever = Retriever(index, toy_embed, k=2, max_demos=4)
    (demos,) = retriever.retrieve([["q95", "q5"]])  # history near B, last query near A
    texts = [d.text for d in demos]
    assert set(texts) == {"a0", "a10", "b90", "b100"}
    scores = [d.score for d in demos]
    assert scores == sorted(scores, reverse=True)
    assert {d.text: d.intent for d in demos}["b90"] == "B"


def test_history_weight_pushes_history_hits_down(index):
    retriever = Retriever(index, toy_embed, k=2, max_demos=2, history_weight=0.5)
    (demos,) = retriever.retrieve([["q95", "q5"]])
    assert [d.intent for d in demos] == ["A", "A"]  # history hits at half weight lose the capped slots


def test_candidates_force_their_demos(index):
    calls = []

    def propose(last_queries):
        calls.append(list(last_queries))
        return [["C", "unknown-intent"] for _ in last_queries]

    retriever = Retriever(index, toy_embed, k=2, max_demos=3, candidates=propose, n_candidates=1, demos_per_candidate=1)
    out = retriever.retrieve([["q5"], ["q95", "q170"]])
    assert calls == [["q5", "q170"]]
    assert "c180" in [d.text for d in out[0]]  # far from q5, but proposed
    assert len(out[0]) == 3
    assert all(len(demos) <= 3 for demos in out)


def test_bad_inputs():
    with pytest.raises(ValueError):
        DemoIndex([], [], toy_embed)
    with pytest.raises(ValueError):
        DemoIndex(["a0"], ["A"], toy_embed, doc_kind="document")


def test_single_turn_htc_checkpoint_proposes_candidates(tiny_bundle, tmp_path):
    import pytorch_lightning as pl

    from mtic.clara.candidates import htc_candidates
    from mtic.inputs.datamodule import MTICDataModule
    from mtic.inputs.views import LastQueryView
    from mtic.models.htc import HTC

    dm = MTICDataModule(tiny_bundle, view=LastQueryView(), batch_size=8, train_sessions="none")
    model = HTC("tiny-bert", dm.taxonomy, tree_height=2, node_dim=8)
    dm.set_encoder(model.build_encoder(), model.pad_token_id)
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    ckpt = tmp_path / "single.ckpt"
    trainer.save_checkpoint(ckpt)
    propose = htc_candidates(ckpt, dm.taxonomy, top_k=2)
    ranked = propose(["where is my parcel", "cancel it"])
    assert len(ranked) == 2 and all(len(r) == 2 and set(r) <= set(dm.taxonomy.ids) for r in ranked)
    with pytest.raises(FileNotFoundError):
        htc_candidates(tmp_path / "missing.ckpt", dm.taxonomy)
