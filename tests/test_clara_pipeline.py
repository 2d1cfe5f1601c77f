"""The CLARA pipelines end to end on the tiny bundle (tiny-llama answers, tiny-bert retrieves and is the HTC)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from hydra import compose, initialize_config_dir

from mtic.pipelines import run

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY = ["market.encoder=tiny-bert", "llm.model=tiny-llama", "logger=none",
        "pipeline.progress=false", "trainer.max_epochs=1"]


def _compose(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=[
            *overrides, *TINY, f"paths.data_dir={tmp_path / 'tiny'}", f"paths.run_dir={tmp_path / 'run'}",
            f"llm.cache_file={tmp_path / 'answers.sqlite'}",  # paths.cache_dir: the session's MTIC_CACHE (conftest)
        ])


def test_lara_writes_results(tiny_bundle, tmp_path):
    prompt = "p_symbolic"
    cfg = _compose(tmp_path, "+experiment=lara_sg", f"prompt={prompt}", "pipeline.retrieval.k=2")
    metrics = run(cfg)
    assert "test/acc" in metrics and metrics["test/unmatched"] == 0.0  # score mode: always a label
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert record["method"] == "lara" and record["prompt"] == prompt and record["test_size"] == 3
    assert len((tmp_path / "run" / "predictions.jsonl").read_text().splitlines()) == 3


def test_clara_pseudo_labels_then_trains_and_reuses_the_artifact(tiny_bundle, tmp_path, monkeypatch):
    shutil.copyfile(tiny_bundle / "sessions" / "test.jsonl", tiny_bundle / "sessions" / "valid.jsonl")  # val/loss
    overrides = ["+experiment=clara_sg", "pipeline.unlabeled.split=train", f"pipeline.artifact_dir={tmp_path / 'art'}",
                 "pipeline.retrieval.k=2", "data.batch_size=4"]
    metrics = run(_compose(tmp_path, *overrides))
    assert "test/acc" in metrics
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    pseudo = record["pseudo_labels"]
    assert pseudo["sessions"] == 2 and pseudo["precision"]["n_gold"] == 2  # labelled input: gold = own labels
    assert record["metrics"]["pseudo/precision_without_sc"] == pseudo["precision"]["without_sc"]
    assert record["self_consistency"] == "unanimous" and record["llm"]["model"] == "tiny-llama"
    assert (tmp_path / "run" / "pseudo_labels.summary.md").is_file()
    records = list((tmp_path / "art").rglob("pseudo_labels.jsonl"))
    assert len(records) == 1
    before = records[0].read_bytes()
    # second run, pseudo-labels only: the finished artifact is reused as is (no LLM is even loaded)
    def no_models(*args, **kwargs):
        raise AssertionError("a finished artifact must not load any model")

    monkeypatch.setattr("mtic.pipelines.clara.build_labeler", no_models)
    assert run(_compose(tmp_path, *overrides, "pipeline.fit=false", "pipeline.test=false")) == {}
    assert records[0].read_bytes() == before
    again = json.loads((tmp_path / "run" / "results.json").read_text())
    assert again["pseudo_labels"]["precision"] == pseudo["precision"]
    assert again["metrics"]["pseudo/kept_share"] == pseudo["kept_share"]  # pseudo-label figures only, no test/
    assert not any(k.startswith("test/") for k in again["metrics"])
