"""baseline_embedding: frozen sentence-encoder features + logistic regression (label-free, like TF-IDF)."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from mtic.hub.registry import load_sentence_embedder
from mtic.models.sentence_features import SentenceFeatures
from mtic.pipelines import run

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_features_are_the_encoder_vectors_computed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    features = SentenceFeatures("tiny-bert", weight=2.0)
    calls: list[list[str]] = []
    embedder = features._embedder()
    original = embedder.encode
    monkeypatch.setattr(embedder, "encode", lambda texts, kind, batch_size: calls.append(list(texts)) or
                        original(texts, kind, batch_size=batch_size))
    first = features.fit(["where is my parcel", "cancel it"]).transform(["where is my parcel", "cancel it"])
    again = features.transform(["cancel it", "refund please", "cancel it"])
    assert calls == [["where is my parcel", "cancel it"], ["refund please"]]  # each distinct text embedded once
    reference = load_sentence_embedder("tiny-bert").encode(["where is my parcel", "cancel it", "refund please"], "query")
    np.testing.assert_allclose(first, 2.0 * reference[:2], atol=1e-5)
    np.testing.assert_allclose(again, 2.0 * reference[[1, 2, 1]], atol=1e-5)
    restored = pickle.loads(pickle.dumps(features))  # settings travel, the loaded encoder does not
    assert restored.get_params() == features.get_params() and getattr(restored, "_model", None) is None


def test_baseline_embedding_end_to_end(tiny_bundle: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "+experiment=baseline_embedding", "data=last_two", "market.encoder=tiny-bert", f"paths.data_dir={tiny_bundle}",
            f"paths.run_dir={run_dir}"])
    assert cfg.model.vectorizer.encoder == "tiny-bert" and cfg.model.classifier.C == 10.0
    metrics = run(cfg)
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert results["method"] == "embedding_lr" and results["backbone"] == "tiny-bert" and results["view"] == "LastKView"
    assert results["label_free"] is True and results["supervision"]["train"] == ["single_turn"]
    assert results["supervision"]["selection"] == []
    assert [r["session_id"] for r in rows] == ["s1", "s2", "s3"]
    assert metrics["test/acc"] == pytest.approx(sum(r["intent"] == r["target"] for r in rows) / 3, abs=1e-6)
    assert rows[1]["intent"] == "refund"  # a training query as a one-turn session: the fitted head recalls it
