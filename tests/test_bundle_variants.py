"""Any user's data: every experiment, in its cheapest tiny configuration, on bundles that lack optional parts.

Each cell either runs (results.json with test metrics and the recorded model-selection source, the fallback said
in the log and in results.json) or refuses before any model loads: exit status 2, one line `error: <file>: ...`
naming what is missing, no checkpoint, no results.json.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir

from mtic.cli_errors import friendly_errors
from mtic.pipelines import run
from tests.test_supervision import ScriptedLLM, bundle_with_everything

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY = ["market.encoder=tiny-bert", "logger=none", "trainer.max_epochs=1", "data.batch_size=4", "callbacks.progress=null"]
LLM = ["llm.model=tiny-llama", "pipeline.progress=false", "pipeline.retrieval.k=2"]
SELECTOR = ["pipeline.selector.epochs=1", "pipeline.selector.max_pairs=32"]
CAUSAL = ["backbone=tiny-llama", "+trainer.limit_train_batches=2"]
TEACHER = ["backbone@teacher.backbone=tiny-llama", "teacher.data.crafting.n_sessions=8", "pipeline.progress=false",
           "pipeline.min_confidence=0"]  # an untrained tiny teacher is sure of nothing
EXPERIMENTS: dict[str, list[str]] = {  # the cheapest configuration of each experiment
    "baseline_tfidf": [],
    "baseline_single": [],
    "baseline_naive": [],
    "baseline_select": SELECTOR,
    "baseline_select_gold": SELECTOR,
    "htc_supervised": [],
    "lara": LLM,  # with M_c: a single-turn HTC trained (fit only) before the LLM labels the test sessions
    "lara_pl": [*LLM, "pipeline.retrieval.candidates.source=none"],
    "clara": [*LLM, "pipeline.retrieval.candidates.source=none"],
    "st_distill": TEACHER,  # a tiny-llama teacher (single-turn queries + crafted sessions) labels the logs
    "st": CAUSAL,
    "pretrain_sg": CAUSAL,
}
LABEL_FREE = {"baseline_tfidf", "baseline_single", "baseline_naive", "baseline_select", "lara", "lara_pl", "clara",
              "st_distill"}

# --------------------------------------------------------------------------- bundle variants
ALL_PARTS = frozenset({"single_turn", "single_turn_valid", "train", "valid", "unlabeled", "test"})


def _rewrite(path: Path, keep: Callable[[dict], bool] = lambda _: True, edit: Callable[[dict], None] = lambda _: None
             ) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        edit(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows if keep(r)))


def _drop(*parts: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        for part in parts:
            if part == "single_turn":
                (root / "single_turn.jsonl").unlink()
            elif part == "single_turn_valid":
                _rewrite(root / "single_turn.jsonl", keep=lambda r: r.get("split") != "valid")
            else:
                (root / "sessions" / f"{part}.jsonl").unlink()
    return apply


def _levels(depth: int) -> Callable[[Path], None]:
    """Every intent path re-cut to `depth` levels (unique category names: the leaf alone, or two made-up levels
    under the 3-level path)."""
    def edit(row: dict) -> None:
        path = row["path"]
        row["path"] = [path[-1]] if depth == 1 else [*path, f"{path[-1]} L4", f"{path[-1]} L5"]
    return lambda root: _rewrite(root / "intents.jsonl", edit=edit)


@dataclass(frozen=True)
class Variant:
    make: Callable[[Path], None]
    lacks: frozenset[str] = frozenset()


VARIANTS = {
    "no_valid_sessions": Variant(_drop("valid"), frozenset({"valid"})),
    "no_valid_anywhere": Variant(_drop("valid", "single_turn_valid"), frozenset({"valid", "single_turn_valid"})),
    "no_train_sessions": Variant(_drop("train"), frozenset({"train"})),
    "no_unlabeled": Variant(_drop("unlabeled"), frozenset({"unlabeled"})),
    "no_single_turn_valid": Variant(_drop("single_turn_valid"), frozenset({"single_turn_valid"})),
    "no_single_turn": Variant(_drop("single_turn"), frozenset({"single_turn", "single_turn_valid"})),
    "sessions_only": Variant(_drop("single_turn", "valid", "unlabeled"),
                             frozenset({"single_turn", "single_turn_valid", "valid", "unlabeled"})),
    "no_test": Variant(_drop("test"), frozenset({"test"})),
    "minimal": Variant(_drop("single_turn", "train", "valid", "unlabeled"), ALL_PARTS - {"test"}),
    "one_level": Variant(_levels(1)),
    "five_level": Variant(_levels(5)),
}

# --------------------------------------------------------------------------- what each experiment must do
SCORED = ("test", "sessions/test.jsonl", "is scored on the labelled test sessions")
QUERIES = ("single_turn", "single_turn.jsonl", "trains on labelled single-turn queries")
DEMOS = ("single_turn", "single_turn.jsonl", "retrieves labelled single-turn queries as in-context demos")
NEEDS: dict[str, list[tuple[str, str, str]]] = {  # (part, its file, the refusal's words), in the order checked
    **{e: [QUERIES, SCORED] for e in ("baseline_tfidf", "baseline_single", "baseline_naive", "baseline_select",
                                       "baseline_select_gold")},
    **{e: [("train", "sessions/train.jsonl", "trains on the sessions of this file"), SCORED]
       for e in ("htc_supervised", "st")},
    "lara": [DEMOS, ("test", "sessions/test.jsonl", "classifies the labelled sessions of this file")],
    **{e: [DEMOS, ("unlabeled", "sessions/unlabeled.jsonl", "pseudo-labels the chat logs"),
           ("test", "sessions/test.jsonl", "is scored on the labelled test sessions")] for e in ("clara", "lara_pl")},
    "pretrain_sg": [("unlabeled", "sessions/unlabeled.jsonl", "trains on the sessions of this file")],
    "st_distill": [("unlabeled", "sessions/unlabeled.jsonl", "has its teacher label the chat logs"), SCORED,
                   ("single_turn", "single_turn.jsonl", "trains on sessions crafted from the labelled single-turn")],
}
PLANNED: dict[str, list[str]] = {  # the configured validation sources (none: the method selects no model)
    "baseline_tfidf": [], "lara": [],
    **{e: ["single_turn.valid"] for e in ("baseline_single", "baseline_naive", "baseline_select",
                                          "baseline_select_gold")},
    **{e: ["sessions.valid"] for e in ("htc_supervised", "st", "pretrain_sg")},
    **{e: ["pseudo_labels", "single_turn.valid"] for e in ("clara", "lara_pl", "st_distill")},
}


@dataclass(frozen=True)
class Expect:
    refusal: tuple[str, str] | None = None   # (file, words of the one-line error)
    used: tuple[str, ...] = ()
    fallback: tuple[str, ...] = ()           # words the recorded fallback must hold (empty: no fallback)
    trains_on_sessions_alone: bool = False


def expected(variant: Variant, experiment: str) -> Expect:
    for part, file, words in NEEDS[experiment]:
        if part in variant.lacks:
            return Expect(refusal=(file, words))
    used, said = [], []
    for source in PLANNED[experiment]:
        if source == "sessions.valid" and "valid" in variant.lacks:
            source = "single_turn.valid"
            said.append("sessions/valid.jsonl is missing")
        used.append(source)
    if "single_turn.valid" in used and "single_turn_valid" in variant.lacks:
        if "single_turn" in variant.lacks:
            used.remove("single_turn.valid")
            said.append("training runs without model selection and the last epoch is tested")
        else:
            said.append("10% of its training queries are held out")
    alone = experiment in ("htc_supervised", "st", "pretrain_sg") and "single_turn" in variant.lacks
    return Expect(used=tuple(used), fallback=tuple(said), trains_on_sessions_alone=alone)


# --------------------------------------------------------------------------- running one cell
def _compose(experiment: str, bundle: Path, run_dir: Path, *extra: str) -> Any:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=[
            f"+experiment={experiment}", *EXPERIMENTS[experiment], *TINY, *extra, f"paths.data_dir={bundle}",
            f"paths.run_dir={run_dir}"])


def _no_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every way a model (encoder, causal LM, LLM, sklearn classifier) is built fails the test."""
    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("a model was loaded before the run refused")

    for target in ("mtic.hub.registry.resolve_model", "mtic.pipelines.clara.build_llm",
                   "mtic.pipelines.tfidf.build_classifier"):
        monkeypatch.setattr(target, refuse)


def _bundle(root: Path, variant: Variant) -> Path:
    bundle_with_everything(root)
    variant.make(root)
    return root


@pytest.mark.parametrize("experiment", list(EXPERIMENTS))
@pytest.mark.parametrize("variant_name", list(VARIANTS))
def test_experiment_runs_or_refuses_up_front(variant_name: str, experiment: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                            caplog: pytest.LogCaptureFixture) -> None:
    variant = VARIANTS[variant_name]
    expect = expected(variant, experiment)
    bundle, run_dir = _bundle(tmp_path / "bundle", variant), tmp_path / "run"
    artifacts = [f"pipeline.artifact_dir={tmp_path / 'art'}"] if experiment in ("clara", "lara_pl", "st_distill") else []
    cfg = _compose(experiment, bundle, run_dir, *artifacts)
    if expect.refusal:
        _no_models(monkeypatch)
        with pytest.raises(SystemExit) as stop, friendly_errors():
            run(cfg)
        file, words = expect.refusal
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert stop.value.code == 2 and len(errors) == 1, errors
        assert errors[0].startswith(f"error: {bundle / file}: ") and words in errors[0], errors[0]
        assert not list(tmp_path.rglob("*.ckpt")) and not (run_dir / "results.json").exists()
        return
    monkeypatch.setattr("mtic.pipelines.clara.build_llm", lambda **_: ScriptedLLM())
    caplog.set_level(logging.INFO, logger="mtic")
    run(cfg)
    record = json.loads((run_dir / "results.json").read_text())
    selection = record["selection"]
    if experiment == "pretrain_sg":
        assert (run_dir / "merged" / "config.json").is_file()
    else:
        assert "test/acc" in record["metrics"] and record["test_size"] == 3
    assert tuple(selection["used"]) == expect.used
    assert selection["planned"] == PLANNED[experiment]
    assert all(words in (selection["fallback"] or "") for words in expect.fallback)
    assert (selection["fallback"] is None) == (not expect.fallback)
    if PLANNED[experiment]:  # a trained model: the selection is said in one log line, fallback included
        said = [r.getMessage() for r in caplog.records if "[mtic] model selection:" in r.getMessage()]
        fits = 2 if experiment == "st_distill" else 1  # st_distill's teacher says its own first
        assert len(said) == fits and all(words in said[-1] for words in expect.fallback), said
        assert selection["rule"].startswith("none") == (not expect.used)
        assert (run_dir / "checkpoints" / "best.ckpt").is_file()  # the best epoch, or the last without selection
    else:
        assert selection["rule"].startswith("none:")
    assert bool(record.get("training_fallback")) == expect.trains_on_sessions_alone
    if experiment in LABEL_FREE:  # a fallback never reaches for gold multi-turn labels
        assert record["supervision"]["label_free"] is True
    if experiment == "baseline_select_gold":  # the gold selector falls back to single-turn pairs, and says so
        assert ("selector:gold" in record["supervision"]["train"]) == ("train" not in variant.lacks)


def test_htc_without_any_validation_source_trains_to_the_last_epoch(tmp_path: Path) -> None:
    """data.valid_sessions=none on a trained model: no validation loop, no early stopping (which would crash on a
    missing val/loss), best.ckpt is the last epoch and results.json says so."""
    bundle = bundle_with_everything(tmp_path / "bundle")
    run(_compose("baseline_naive", bundle, tmp_path / "run", "data.valid_sessions=none", "trainer.max_epochs=2"))
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert record["selection"] == {"planned": [], "used": [], "valid_size": 0, "fallback": None,
                                   "rule": "none: no early stopping, the last epoch is tested"}
    assert record["supervision"]["selection"] == [] and "test/acc" in record["metrics"]
    import torch

    state = torch.load(tmp_path / "run" / "checkpoints" / "best.ckpt", weights_only=True, map_location="cpu")
    assert state["epoch"] == 1  # the second (last) epoch
