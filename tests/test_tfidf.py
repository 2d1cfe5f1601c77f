"""baseline_tfidf: TF-IDF + logistic regression end to end on the tiny bundle, the LastKView (last_two) view."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from mtic.config_schema import ConfigError
from mtic.data.bundle import read_bundle
from mtic.eval.supervision import LabelFreeViolation
from mtic.inputs.datamodule import MTICDataModule
from mtic.inputs.encoding import ClassificationEncoder
from mtic.inputs.views import LastKView
from mtic.pipelines import run

CONF = Path(__file__).resolve().parents[1] / "conf"


def _compose(bundle: Path, run_dir: Path, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=[
            "+experiment=baseline_tfidf", *overrides, f"paths.data_dir={bundle}", f"paths.run_dir={run_dir}"])


def _read(run_dir: Path) -> tuple[dict, list[dict]]:
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    return results, rows


@pytest.mark.parametrize("view, view_class", [("last_query", "LastQueryView"), ("naive_concat", "NaiveConcatView"),
                                              ("last_two", "LastKView")])
def test_tfidf_end_to_end(tiny_bundle: Path, tmp_path: Path, view: str, view_class: str,
                          capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "run"
    metrics = run(_compose(tiny_bundle, run_dir, f"data={view}"))
    results, rows = _read(run_dir)
    assert results["method"] == "tfidf" and results["experiment"] == "baseline_tfidf"
    assert results["view"] == view_class and results["backbone"] == "tfidf"
    assert results["decode"] is None and results["global_head"] is None   # no model-group setting claimed
    assert results["label_free"] is True
    assert results["supervision"]["train"] == ["single_turn"]
    assert results["supervision"]["selection"] == []
    assert results["supervision"]["label_free"] is True
    assert results["train_size"] == 8 and results["test_size"] == 3
    # predictions.jsonl: one row per test session; results.json's accuracy is the one of these rows
    assert [r["session_id"] for r in rows] == ["s1", "s2", "s3"]
    assert {"session_id", "target", "intent"} <= set(rows[0])
    accuracy = sum(r["intent"] == r["target"] for r in rows) / len(rows)
    assert results["metrics"]["test/acc"] == pytest.approx(accuracy, abs=1e-6)
    assert metrics["test/acc"] == pytest.approx(accuracy, abs=1e-6)
    assert {"test/macro_f1", "test/acc_level1", "test/acc_level3"} <= set(results["metrics"])
    # s2 is the training query "refund not in yet" as a one-turn test session: a fitted model gets it right
    assert rows[1]["target"] == "refund" and rows[1]["intent"] == "refund"
    assert f"[mtic] baseline_tfidf market=sg n_test=3: acc={accuracy:.4f}" in capsys.readouterr().out


def test_tfidf_fits_every_training_query(tiny_bundle: Path, tmp_path: Path) -> None:
    """Every training query repeated as a test session comes back with its own intent."""
    queries = [json.loads(line) for line in (tiny_bundle / "single_turn.jsonl").read_text().splitlines()]
    sessions = [{"id": f"q{k}", "turns": [{"text": q["text"], "intent": q["intent"]}]} for k, q in enumerate(queries)]
    (tiny_bundle / "sessions" / "test.jsonl").write_text("".join(json.dumps(s) + "\n" for s in sessions))
    metrics = run(_compose(tiny_bundle, tmp_path / "run", "data=last_query"))
    assert metrics["test/acc"] == 1.0


def test_classifier_settings_reach_the_estimator(tiny_bundle: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from mtic.pipelines import tfidf

    built = []
    original = tfidf.build_classifier
    monkeypatch.setattr(tfidf, "build_classifier", lambda cfg: built.append(original(cfg)) or built[-1])
    run(_compose(tiny_bundle, tmp_path / "run", "model.classifier.C=3.5", "model.vectorizer.sublinear_tf=true",
                 "+model.vectorizer.max_df=0.9"))
    vectorizer, classifier = (step for _, step in built[0].steps)
    assert classifier.C == 3.5 and classifier.max_iter == 1000
    assert vectorizer.sublinear_tf is True and vectorizer.max_df == 0.9


def test_supervised_variant_records_gold_sessions(tiny_bundle: Path, tmp_path: Path) -> None:
    run(_compose(tiny_bundle, tmp_path / "run", "data.train_sessions=train", "label_free=false"))
    results, _ = _read(tmp_path / "run")
    assert results["supervision"]["train"] == ["single_turn", "sessions.train"]
    assert results["supervision"]["selection"] == [] and results["label_free"] is False
    assert results["train_size"] == 8 + 4   # every labelled prefix of the two training sessions


def test_label_free_refuses_gold_sessions_before_fitting(tiny_bundle: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from mtic.pipelines import tfidf

    def no_fit(cfg: DictConfig) -> None:
        raise AssertionError("the classifier was built before the label-free check")

    monkeypatch.setattr(tfidf, "build_classifier", no_fit)
    cfg = _compose(tiny_bundle, tmp_path / "run", "label_free=true", "data.train_sessions=train")
    with pytest.raises(LabelFreeViolation, match=r"label-free \(label_free=true\) but would read gold multi-turn "
                                                 r"labels: sessions\.train"):
        run(cfg)
    assert not (tmp_path / "run" / "results.json").exists()


def test_selected_concat_needs_a_selector(tiny_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a trained selector") as err:
        run(_compose(tiny_bundle, tmp_path / "run", "data=selected_concat"))
    assert "\n" not in str(err.value) and "last_two" in str(err.value)


# --------------------------------------------------------------------------- LastKView
def test_last_k_view(tiny_bundle: Path) -> None:
    sessions = {s.id: s for s in read_bundle(tiny_bundle).sessions["test"]}
    two = LastKView(k=2)
    assert two(sessions["s3"]).text == "ok | cancel it" and two(sessions["s3"]).target == "cancel"
    assert two(sessions["s2"]).text == "refund not in yet"          # shorter than k: all its queries
    assert LastKView(k=1, separator=" ")(sessions["s1"]).text == "is it done?"
    assert LastKView(k=5, separator=" / ")(sessions["s3"]).text == "where is my parcel / ok / cancel it"
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="positive integer"):
            LastKView(k=bad)


class _Words:
    """Whitespace tokenizer, enough for the HTC's ClassificationEncoder."""

    pad_token_id = 0
    truncation_side = "right"

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def __call__(self, text: str, truncation: bool = False, max_length: int | None = None) -> dict:
        return {"input_ids": [self.vocab.setdefault(w, len(self.vocab) + 1) for w in text.split()]}


def test_htc_data_path_reads_the_last_two_view(tiny_bundle: Path) -> None:
    """The HTC only needs ViewExample.text: the datamodule encodes last_two examples like naive_concat ones."""
    dm = MTICDataModule(tiny_bundle, view=LastKView(k=2), train_sessions="train", valid_sessions="train")
    tok = _Words()
    dm.set_encoder(ClassificationEncoder(tok, dm.taxonomy), pad_token_id=tok.pad_token_id)
    dm.setup("fit")
    dm.setup("test")
    texts = {e.session_id: e.text for e in dm.train_examples()}
    assert texts["t2#2"] == "cancel my order | and the money?"
    batch = next(iter(dm.test_dataloader()))
    assert batch["input_ids"].shape[0] == 3 and batch["target"][2] == "cancel"
