"""Deployment: ONNX export (fp32 + int8) of a tiny trained HTC, parity, and the predictor on export and checkpoint."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import yaml
from conftest import write_tiny_bundle

from mtic.deploy.artifact import ExportError, ViewSpec, read_artifact
from mtic.deploy.export import export_checkpoint, parity_summary
from mtic.deploy.predictor import IntentClassifier
from mtic.deploy.tokenizer import FastTokenizer
from mtic.inputs.datamodule import MTICDataModule
from mtic.inputs.views import NaiveConcatView
from mtic.models.htc import HTC

VALID = [
    {"id": "v1", "turns": [{"text": "where is my parcel"}, {"text": "still nothing", "intent": "track"}]},
    {"id": "v2", "turns": [{"text": "i want to cancel", "intent": "cancel"}]},
    {"id": "v3", "turns": [{"text": "cancel my order"}, {"text": "and the money?", "intent": "refund"}]},
]
SESSIONS = [["where is my parcel"], ["cancel my order pls"], ["i want to cancel", "is it done?"],
            ["我的包裹在哪裡？", "還沒到"], ["พัสดุของฉันอยู่ที่ไหน"], ["Gói hàng của tôi ở đâu?"], ["😊 👍"],
            ["x" * 3000], ["refund not in yet"] * 30]


def make_tiny_run(root: Path, steps: int = 20, bundle: Path | None = None) -> Path:
    """A tiny HTC trained for a few steps on `bundle` (default: the tiny bundle with valid sessions),
    checkpointed inside a run directory with its saved Hydra config."""
    if bundle is None:
        bundle = write_tiny_bundle(root / "tiny")
        (bundle / "sessions" / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in VALID), encoding="utf-8")
    pl.seed_everything(0)
    dm = MTICDataModule(bundle, view=NaiveConcatView(), batch_size=16)
    model = HTC("tiny-bert", dm.taxonomy, tree_height=2, node_dim=16, dropout=0.0, lr=2e-3, head_lr=5e-3,
                warmup_ratio=0.0, max_length=32)
    dm.set_encoder(model.build_encoder(), model.pad_token_id)
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    run_dir = root / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    config = {"experiment": "tiny", "market": {"name": "sg", "languages": ["en"], "bundle": str(bundle)},
              "paths": {"data_dir": None, "run_dir": "${hydra:runtime.output_dir}"},
              "data": {"view": {"_target_": "mtic.inputs.views.NaiveConcatView", "separator": " | "}}}
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    trainer.save_checkpoint(ckpt)
    return ckpt


def make_tiny_export(root: Path) -> Path:
    out = root / "export"
    export_checkpoint(make_tiny_run(root), out)
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("deploy")
    ckpt = make_tiny_run(root)
    card = export_checkpoint(ckpt, root / "export")  # view and bundle from the run's saved config
    return ckpt, root / "export", card


def test_export_layout_card_and_parity(tiny: tuple[Path, Path, dict]) -> None:
    ckpt, out, card = tiny
    for name in ("model.onnx", "model.int8.onnx", "deploy.json", "model_card.json", "intents.jsonl",
                 "tokenizer/tokenizer.json"):
        assert (out / name).is_file(), name
    assert card == json.loads((out / "model_card.json").read_text(encoding="utf-8"))
    assert card["intents"] == 4 and card["levels"] == [3, 3, 4] and card["market"] == "sg"
    assert card["view"] == {"kind": "naive_concat", "separator": " | "}
    assert len(card["source_checkpoint"]["sha256"]) == 64 and card["version"]
    parity = card["parity"]
    assert parity["split"] == "valid" and parity["sessions"] == 3
    assert parity["fp32"]["argmax_agreement"] == 1.0 and parity["fp32"]["max_abs_diff"] < 1e-4
    assert parity["fp32"]["accuracy_onnx"] == parity["fp32"]["accuracy_torch"]
    assert parity["int8"]["max_abs_diff"] < 0.5
    # the int8 figures are those of the exported int8 model against the checkpoint, recomputed on the 3 valid sessions
    queries, targets = [[t["text"] for t in v["turns"]] for v in VALID], [v["turns"][-1]["intent"] for v in VALID]
    int8 = [p.intent for p in IntentClassifier.load(out, precision="int8").predict_batch(queries)]
    eager = [p.intent for p in IntentClassifier.load(ckpt).predict_batch(queries)]
    assert parity["int8"]["argmax_agreement"] == pytest.approx(sum(a == b for a, b in zip(int8, eager)) / 3, abs=1e-6)
    assert parity["int8"]["argmax_agreement"] >= 2 / 3  # quantisation flips at most one of the three (1.0 seen)
    assert parity["int8"]["accuracy_onnx"] == pytest.approx(sum(a == t for a, t in zip(int8, targets)) / 3, abs=1e-6)
    assert parity["fp32"]["accuracy_torch"] == pytest.approx(sum(a == t for a, t in zip(eager, targets)) / 3, abs=1e-6)
    assert card["files"]["int8"]["bytes"] < card["files"]["fp32"]["bytes"]
    assert "argmax agreement 1.0000" in parity_summary(card)
    spec = read_artifact(out).spec
    assert spec.outputs == ["probs_level1", "probs_level2", "probs_level3"] and spec.max_length == 32


def test_predictor_onnx_matches_checkpoint(tiny: tuple[Path, Path, dict]) -> None:
    ckpt, out, _ = tiny
    onnx_fp32 = IntentClassifier.load(out, precision="fp32")
    onnx_int8 = IntentClassifier.load(out)  # auto = int8
    torch_clf = IntentClassifier.load(ckpt)  # view from the run config
    assert (onnx_fp32.precision, onnx_int8.precision, torch_clf.precision) == ("fp32", "int8", "fp32-eager")
    a, b = onnx_fp32.level_probabilities(SESSIONS), torch_clf.level_probabilities(SESSIONS)
    assert all(np.abs(x - y).max() < 1e-4 for x, y in zip(a, b))
    fp32, eager = onnx_fp32.predict_batch(SESSIONS, top_k=3), torch_clf.predict_batch(SESSIONS, top_k=3)
    assert [p.intent for p in fp32] == [p.intent for p in eager]
    assert len(onnx_int8.predict_batch(SESSIONS)) == len(SESSIONS)
    p = onnx_fp32.predict(["where is my parcel", "still nothing"])
    assert p.intent in {"track", "refund", "cancel", "cancel_status"} and len(p.path) == 3
    assert [lv["level"] for lv in p.levels] == [1, 2, 3] and p.levels[-1]["name"] == p.path[-1]
    assert {x["intent"] for x in p.top_k} == {"track", "refund", "cancel", "cancel_status"}  # top 5 of 4 intents
    assert all(len(q.top_k) == 3 for q in fp32)
    assert p.top_k[0]["intent"] == p.intent and p.top_k[0]["probability"] == pytest.approx(p.probability)
    assert sorted(x["probability"] for x in p.top_k) == [x["probability"] for x in p.top_k][::-1]
    assert json.dumps(p.to_json())
    with pytest.raises(TypeError, match="list of queries"):
        onnx_fp32.predict("where is my parcel")
    with pytest.raises(ValueError, match="at least one query"):
        onnx_fp32.predict([])
    assert onnx_fp32.predict_batch([]) == []


def test_tokenizer_and_view_match_training(tiny: tuple[Path, Path, dict]) -> None:
    """The torch-free path builds the same model input as the training code (view + ClassificationEncoder)."""
    ckpt, out, _ = tiny
    model = HTC.from_checkpoint(ckpt)
    encode = model.build_encoder()
    onnx_clf = IntentClassifier.load(out, precision="fp32")
    for queries, text in zip(SESSIONS, onnx_clf.texts(SESSIONS)):
        assert text == " | ".join(queries)
        from mtic.inputs.views import ViewExample

        expected = encode(ViewExample("s", None, text))["input_ids"]
        assert onnx_clf.runtime.encode([text])[0] == expected  # left truncation keeps the last query
    fast = FastTokenizer(out / "tokenizer" / "tokenizer.json")
    fast.truncation_side = model.tokenizer.truncation_side = "right"  # pairs (the selector) truncate on the right
    assert fast(["a b", "c"], ["d", "e f"], truncation=True, max_length=4)["input_ids"] == \
        model.tokenizer(["a b", "c"], ["d", "e f"], truncation=True, max_length=4)["input_ids"]


def test_onnx_predictor_does_not_import_torch(tiny: tuple[Path, Path, dict]) -> None:
    _, out, _ = tiny
    code = ("import sys, mtic; c = mtic.IntentClassifier.load(sys.argv[1]); c.predict(['where is my parcel']); "
            "print(sorted(m for m in ('torch', 'transformers', 'pytorch_lightning') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_export_errors_and_options(tiny: tuple[Path, Path, dict], tmp_path: Path) -> None:
    ckpt, _, _ = tiny
    loose = tmp_path / "loose.ckpt"  # a checkpoint outside its run directory: no view known
    loose.write_bytes(ckpt.read_bytes())
    with pytest.raises(ExportError, match="--view"):
        export_checkpoint(loose, tmp_path / "x")
    with pytest.raises(ExportError, match="selector"):
        export_checkpoint(loose, tmp_path / "x", view="selected_concat")
    with pytest.raises(ExportError, match="cannot be served"):
        ViewSpec("chat")
    card = export_checkpoint(loose, tmp_path / "fp32", view="last_query", int8=False)
    assert card["parity"]["split"] == "intent_titles" and "int8" not in card["parity"]
    assert not (tmp_path / "fp32" / "model.int8.onnx").exists()
    with pytest.raises(ExportError, match="no int8 model"):
        IntentClassifier.load(tmp_path / "fp32", precision="int8")
    assert IntentClassifier.load(tmp_path / "fp32").texts([["a", "b"]]) == ["b"]  # last-query view
    with pytest.raises(ExportError, match="neither"):
        IntentClassifier.load(tmp_path)


def test_selected_concat_exports_its_selector(tiny: tuple[Path, Path, dict], tmp_path: Path) -> None:
    """selected_concat: the run's selector is exported beside the classifier and used by the ONNX predictor."""
    from mtic.models.selector import train_selector

    ckpt, _, _ = tiny
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "best.ckpt").write_bytes(ckpt.read_bytes())
    config = yaml.safe_load((ckpt.parent.parent / ".hydra" / "config.yaml").read_text(encoding="utf-8"))
    config["data"]["view"]["_target_"] = "mtic.inputs.views.SelectedConcatView"
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    selector, _ = train_selector(Path(config["market"]["bundle"]), "tiny-bert", epochs=1, batch_size=4, seed=0)
    selector.threshold = 0.0  # always pick a history query: the concatenation path is exercised
    selector.save(run_dir / "selector")
    card = export_checkpoint(run_dir / "checkpoints" / "best.ckpt", tmp_path / "export")
    assert card["selector"] and card["view"]["kind"] == "selected_concat"
    assert (tmp_path / "export" / "selector" / "selector.int8.onnx").is_file()
    assert card["parity"]["fp32"]["input_agreement"] == 1.0 and card["parity"]["fp32"]["argmax_agreement"] == 1.0
    onnx_clf = IntentClassifier.load(tmp_path / "export", precision="fp32")
    torch_clf = IntentClassifier.load(run_dir / "checkpoints" / "best.ckpt")
    sessions = [["where is my parcel", "ok", "still nothing"], ["refund not in yet"]]
    assert onnx_clf.texts(sessions) == torch_clf.texts(sessions)
    assert " | " in onnx_clf.texts(sessions)[0] and onnx_clf.texts(sessions)[1] == "refund not in yet"
    assert [p.intent for p in onnx_clf.predict_batch(sessions)] == [p.intent for p in torch_clf.predict_batch(sessions)]


def test_pipeline_export_from_hydra(tiny: tuple[Path, Path, dict], tmp_path: Path) -> None:
    """`python run.py +experiment=baseline_naive pipeline=export pipeline.checkpoint=...` (composed in-process)."""
    from hydra import compose, initialize_config_dir

    from mtic.pipelines import run

    ckpt, _, _ = tiny
    conf = Path(__file__).resolve().parents[1] / "conf"
    bundle = ckpt.parent.parent.parent / "tiny"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "+experiment=baseline_naive", "pipeline=export", f"pipeline.checkpoint={ckpt}", "market.encoder=tiny-bert",
            "pipeline.int8=false", f"paths.data_dir={bundle}", f"paths.run_dir={tmp_path / 'run'}", "logger=none",
        ])
    card = run(cfg)
    assert (tmp_path / "run" / "export" / "model.onnx").is_file() and card["parity"]["split"] == "valid"
    assert card["parity"]["fp32"]["argmax_agreement"] == 1.0 and card["experiment"] == "baseline_naive"


def test_deploy_reads_level_decoding_of_old_checkpoints() -> None:
    """Export and the predictor read `level_decoding`; checkpoints saved before the rename say `decoding`."""
    from mtic.models.htc import level_decoding_of

    assert level_decoding_of({"level_decoding": "consistent"}) == "consistent"
    assert level_decoding_of({"decoding": "consistent"}) == "consistent"
    assert level_decoding_of({}) == "leaf"


def test_parity_sessions_read_the_bundle(tmp_path: Path) -> None:
    """The valid sessions file, else the single-turn valid queries as one-turn sessions; test as it is."""
    from mtic.data.bundle import read_bundle
    from mtic.deploy.export import parity_sessions

    bundle = write_tiny_bundle(tmp_path / "tiny")  # no sessions/valid.jsonl
    single = [{"text": "track my package", "intent": "track"},
              {"text": "where is my refund", "intent": "refund", "split": "valid"}]
    (bundle / "single_turn.jsonl").write_text("".join(json.dumps(r) + "\n" for r in single), encoding="utf-8")
    sessions, meta = parity_sessions(bundle, "valid")
    assert [(s.last.text, s.target) for s in sessions] == [("where is my refund", "refund")]
    assert meta == {"market": "sg", "languages": ["en"]}
    assert parity_sessions(bundle, "test")[0] == read_bundle(bundle).sessions["test"]
    (bundle / "sessions" / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in VALID), encoding="utf-8")
    assert [s.id for s in parity_sessions(bundle, "valid")[0]] == ["v1", "v2", "v3"]
