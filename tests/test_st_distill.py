"""st_distill on the tiny bundle with chat logs: a tiny-llama teacher (label-free: single-turn queries + sessions
crafted from them) labels the logs by exact scoring, the sessions it is sure of train the tiny-bert HTC; the teacher
reads no gold multi-turn label; a higher min_confidence keeps a subset; precision is scored on the gold side file."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir

from mtic.clara.labeler import DISAGREEMENT, KEPT
from mtic.clara.pseudo_label import RecordsError, summarise
from mtic.config_schema import ConfigError
from mtic.data.bundle import read_bundle
from mtic.data.schema import normalise_text
from mtic.eval.compare import row_value, table4_markdown
from mtic.eval.supervision import CRAFTED, LabelFreeViolation, Supervision
from mtic.inputs.data_plan import CARVED_VALID_SHARE
from mtic.pipelines import run
from mtic.pipelines.st_distill import label_with_teacher
from mtic.pipelines.teacher import Teacher, teacher_config
from mtic.pipelines.teacher_labels import LOW_CONFIDENCE, read_agreement, select
from mtic.pipelines.train_eval import build_datamodule
from tests.conftest import TINY_SINGLE, TINY_UNLABELED
from tests.test_supervision import poison

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY = ["backbone@teacher.backbone=tiny-llama", "market.encoder=tiny-bert", "logger=none", "pipeline.progress=false",
        "trainer.max_epochs=1", "teacher.trainer.max_epochs=1", "teacher.data.crafting.n_sessions=12",
        "data.batch_size=4"]
N_CARVED = max(1, round(CARVED_VALID_SHARE * len(TINY_SINGLE)))  # the tiny bundle has no single-turn valid split


def _compose(bundle: Path, run_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=[
            "+experiment=st_distill", *TINY, *overrides, f"paths.data_dir={bundle}", f"paths.run_dir={run_dir}"])


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _kept(run_dir: Path) -> dict[str, str]:
    return {r["id"]: r["intent"] for r in _jsonl(run_dir / "pseudo_labels.jsonl") if r["status"] == KEPT}


def test_st_distill_end_to_end_and_the_threshold(tiny_bundle_with_logs: Path, tmp_path: Path, monkeypatch) -> None:
    art = f"pipeline.artifact_dir={tmp_path / 'art'}"
    first = tmp_path / "run"
    metrics = run(_compose(tiny_bundle_with_logs, first, art, "pipeline.min_confidence=0", "pipeline.keep_share=null"))
    record = json.loads((first / "results.json").read_text())
    assert record["method"] == "st_distill" and record["label_free"] is True and "test/acc" in metrics
    # supervision: single-turn labels, crafted sessions (the teacher), pseudo-labels; the gold side file only scores
    sup = record["supervision"]
    assert sup["label_free"] is True and {"single_turn", CRAFTED, "pseudo_labels"} <= set(sup["train"])
    assert "sessions.unlabeled.gold" in sup["evaluation"] and not any(s.startswith("sessions.") for s in sup["train"])
    assert record["teacher"]["supervision"]["train"] == ["single_turn", CRAFTED]
    assert row_value(record, "config.teacher.backbone.name") == "tiny-llama"  # what compare's tables name
    # the HTC trained on exactly the kept sessions (no threshold, no share: all), split into train / valid
    kept = _kept(first)
    assert len(kept) == len(TINY_UNLABELED)
    train, valid = _jsonl(first / "pseudo_train.jsonl"), _jsonl(first / "pseudo_valid.jsonl")
    assert sorted(r["id"] for r in train + valid) == sorted(kept)
    assert all(r["turns"][-1]["intent"] == kept[r["id"]] for r in train + valid)
    sizes = record["data_sizes"]
    assert sizes["train"] == len(TINY_SINGLE) - N_CARVED + len(train)
    assert sizes["valid"] == len(valid) + N_CARVED and sizes["test"] == 3
    # precision against sessions/unlabeled.gold.jsonl: all answers and the kept ones
    gold = {f"u{k}": intent for k, (_, intent) in enumerate(TINY_UNLABELED)}
    answers = _jsonl(first / "pseudo_labels.jsonl")
    expected = sum(r["base"] == gold[r["id"]] for r in answers) / len(answers)
    precision = record["pseudo_labels"]["precision"]
    assert precision["without_sc"] == pytest.approx(expected) == record["metrics"]["pseudo/precision_without_sc"]
    assert precision["with_sc"] == pytest.approx(expected) and record["metrics"]["pseudo/kept_share"] == 1.0
    # the teacher's own test accuracy is recorded, and is the accuracy of its predictions
    teacher_dir = Path(record["teacher"]["results"]).parent
    rows = _jsonl(teacher_dir / "predictions.jsonl")
    assert record["metrics"]["teacher/acc"] == pytest.approx(sum(r["intent"] == r["target"] for r in rows) / len(rows),
                                                            abs=1e-6)
    row = [line for line in table4_markdown([record]).splitlines() if line.startswith("| st_distill")]
    assert row == [f"| st_distill | teacher tiny-llama | sg | {100 * expected:.1f} | {100 * expected:.1f} | 100.0 |"]

    # a higher threshold: the cached answers are reused (no teacher loads), the kept sessions are a subset
    def no_teacher(*args, **kwargs):
        raise AssertionError("cached teacher answers must not load the teacher")

    monkeypatch.setattr("mtic.pipelines.st_distill.load_teacher", no_teacher)
    confidences = sorted((r["confidence"] for r in answers), reverse=True)
    threshold = confidences[2]
    second = tmp_path / "run-sure"
    run(_compose(tiny_bundle_with_logs, second, art, f"pipeline.min_confidence={threshold}",
                 "pipeline.keep_share=null"))
    sure = _kept(second)
    assert sure == {r["id"]: r["base"] for r in answers if r["confidence"] >= threshold}
    assert 3 <= len(sure) < len(kept) and sure.items() <= kept.items()
    again = json.loads((second / "results.json").read_text())
    assert again["teacher"]["sha256"] == record["teacher"]["sha256"]
    split = _jsonl(second / "pseudo_train.jsonl") + _jsonl(second / "pseudo_valid.jsonl")
    assert sorted(r["id"] for r in split) == sorted(sure)
    with_sc = sum(sure[i] == gold[i] for i in sure) / len(sure)
    assert again["pseudo_labels"]["precision"]["with_sc"] == pytest.approx(with_sc)
    assert again["pseudo_labels"]["kept_share"] == pytest.approx(len(sure) / len(TINY_UNLABELED))


def _copy(bundle: Path, target: Path, poisoned: bool) -> Path:
    """The bundle with a gold valid split (a copy of train.jsonl); `poisoned`: every labelled turn of train.jsonl
    and valid.jsonl gets another, random intent."""
    shutil.copytree(bundle, target)
    shutil.copyfile(target / "sessions" / "train.jsonl", target / "sessions" / "valid.jsonl")
    if poisoned:
        poison(target)
    return target


def _teacher_data(bundle: Path, tmp_path: Path) -> tuple[list, list, Any]:
    cfg = _compose(bundle, tmp_path / "run")
    dm = build_datamodule(teacher_config(cfg, tmp_path / "teacher"))
    return dm.train_examples(), dm.evaluation_sessions("valid"), dm


def test_teacher_reads_no_gold_multi_turn_label(tiny_bundle_with_logs: Path, tmp_path: Path, monkeypatch) -> None:
    clean = _copy(tiny_bundle_with_logs, tmp_path / "clean", poisoned=False)
    poisoned = _copy(tiny_bundle_with_logs, tmp_path / "poisoned", poisoned=True)
    assert _jsonl(clean / "sessions" / "valid.jsonl") != _jsonl(poisoned / "sessions" / "valid.jsonl")
    examples, valid, dm = _teacher_data(clean, tmp_path)
    assert (examples, valid) == _teacher_data(poisoned, tmp_path)[:2]  # gold sessions change nothing it reads
    assert dm.supervision().multi_turn_gold == [] and CRAFTED in dm.supervision().train
    # crafted sessions: multi-turn, every turn a single-turn training query, the held-out valid ones excluded
    crafted = [e for e in examples if len(e.turns) > 1]
    assert crafted and len([e for e in examples if e.session_id.startswith("crafted")]) == 12
    held_out = {normalise_text(s.last.text) for s in valid}
    training = {normalise_text(t) for t, _ in TINY_SINGLE} - held_out
    assert len(held_out) == N_CARVED and all(normalise_text(q) in training for e in crafted for q, _ in e.turns)
    # the teacher's model must be its own backbone's (a group file pointing at the run's encoder is refused)
    with pytest.raises(ConfigError, match="teacher.model.backbone"):
        teacher_config(_compose(clean, tmp_path / "run", "teacher.model.backbone=tiny-bert"), tmp_path / "teacher")
    # a teacher told to select on gold sessions stops before any model or training
    monkeypatch.setattr("mtic.pipelines.st_distill.ensure_teacher", lambda *a, **k: pytest.fail("teacher built"))
    with pytest.raises(LabelFreeViolation, match="sessions.valid"):
        run(_compose(clean, tmp_path / "gold", "teacher.data.valid_sessions=valid"))


def test_selection_statuses_and_precision_of_the_kept() -> None:
    def answer(session: str, intent: str, confidence: float) -> dict[str, Any]:
        return {"id": session, "turns": [{"text": "q", "intent": intent}], "status": KEPT, "intent": intent,
                "base": intent, "confidence": confidence, "answers": [{"status": "ok"}]}

    answers = [answer("a", "track", 0.9), answer("b", "refund", 0.6), answer("c", "cancel", 0.3),
               answer("d", "track", 0.8)]
    gold = {"a": "track", "b": "cancel", "c": "cancel", "d": "refund"}
    low = select(answers, 0.5)
    assert [r["status"] for r in low] == [KEPT, KEPT, LOW_CONFIDENCE, KEPT]
    assert low[2]["intent"] is None and low[2]["turns"][-1]["intent"] is None and answers[2]["intent"] == "cancel"
    high = select(answers, 0.85)
    assert {r["id"] for r in high if r["status"] == KEPT} == {"a"}
    agreed = select(answers, 0.5, agreement={"a": "track", "b": "cancel", "d": "track"})
    assert [r["status"] for r in agreed] == [KEPT, DISAGREEMENT, LOW_CONFIDENCE, KEPT]
    summary = summarise(low, gold, {"rule": "confidence >= 0.5"}, filtered=True)
    assert summary["precision"]["without_sc"] == pytest.approx(2 / 4)  # a and c right of all four answers
    assert summary["precision"]["with_sc"] == pytest.approx(1 / 3)     # a right of the kept a, b, d
    assert summary["kept_share"] == 0.75 and summary["session_statuses"][LOW_CONFIDENCE] == 1
    with pytest.raises(ValueError, match="min_confidence"):
        select(answers, 1.5)


def test_keep_share_keeps_the_most_confident_without_a_threshold() -> None:
    def answer(session: str, confidence: float) -> dict[str, Any]:
        return {"id": session, "turns": [{"text": "q", "intent": "track"}], "status": KEPT, "intent": "track",
                "base": "track", "confidence": confidence, "answers": [{"status": "ok"}]}

    # flat probabilities, as a softmax over many labels gives: no absolute threshold of 0.5 keeps any
    answers = [answer("e", 0.12), answer("a", 0.21), answer("c", 0.12), answer("b", 0.09), answer("d", 0.30)]
    assert all(r["status"] == LOW_CONFIDENCE for r in select(answers, 0.5))

    def kept(share: float | None, threshold: float = 0.0) -> list[str]:
        return [r["id"] for r in select(answers, threshold, keep_share=share) if r["status"] == KEPT]

    assert kept(0.4) == ["a", "d"]              # ceil(0.4 * 5) = 2 most confident
    assert kept(0.6) == ["a", "c", "d"]         # the tie at 0.12 goes to the smaller id (c before e)
    assert kept(None) == ["e", "a", "c", "b", "d"] and kept(1.0) == kept(None)
    assert set(kept(0.4)) <= set(kept(0.6)) <= set(kept(0.8))
    assert kept(0.6, threshold=0.2) == ["a", "d"]  # both rules apply
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="keep_share"):
            select(answers, 0.0, keep_share=bad)


def test_agreement_reads_clara_kept_intents(tmp_path: Path) -> None:
    clara = tmp_path / "pseudo_labels.jsonl"
    clara.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "a", "status": KEPT, "intent": "track"}, {"id": "b", "status": DISAGREEMENT, "intent": None}]))
    assert read_agreement(clara, ["a", "b", "c"]) == {"a": "track", "b": None, "c": None}
    with pytest.raises(RecordsError, match="none of its sessions"):
        read_agreement(clara, ["x"])
    with pytest.raises(RecordsError, match="no such pseudo-label records file"):
        read_agreement(tmp_path / "missing.jsonl", ["a"])


class ScriptedTeacher:
    """Answers 'track' with probability 0.9 for every session; raises on batch `fail_on` (a killed run)."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[int] = []
        self.fail_on = fail_on

    def predict_sessions(self, sessions: list) -> list[dict[str, Any]]:
        self.batches.append(len(sessions))
        if len(self.batches) == self.fail_on:
            raise KeyboardInterrupt("killed")
        return [{"intent": "track", "output": "Track Parcel", "method": "exact", "score": -0.1,
                 "top": {"track": 0.9, "refund": 0.1}} for _ in sessions]


def test_teacher_labelling_resumes_where_it_stopped(tiny_bundle_with_logs: Path, tmp_path: Path, monkeypatch) -> None:
    cfg = _compose(tiny_bundle_with_logs, tmp_path / "run")
    bundle = read_bundle(tiny_bundle_with_logs)
    sessions = bundle.sessions["unlabeled"]
    teacher = Teacher(tmp_path / "best.ckpt", "0" * 64, False, None, Supervision())
    settings = {"split": "unlabeled", "max_sessions": None}

    def label(scripted: ScriptedTeacher) -> Path:
        monkeypatch.setattr("mtic.pipelines.st_distill.load_teacher", lambda *_: scripted)
        return label_with_teacher(cfg, teacher, sessions, {}, settings, tmp_path / "art", 2, False)

    with pytest.raises(KeyboardInterrupt):
        label(ScriptedTeacher(fail_on=2))
    answers = next((tmp_path / "art").rglob("teacher_labels.jsonl"))
    assert [r["id"] for r in _jsonl(answers)] == ["u0", "u1"]  # the first batch was kept
    again = ScriptedTeacher()
    assert label(again) == answers and again.batches == [2, 2, 2]  # only the rest is asked
    records = _jsonl(answers)
    assert [r["id"] for r in records] == [s.id for s in sessions]
    assert all(r["confidence"] == 0.9 and r["turns"][-1]["intent"] == "track" for r in records)
    assert label(ScriptedTeacher(fail_on=1)) == answers  # finished: the teacher is not asked again
