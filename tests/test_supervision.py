"""Label-free means label-free: poisoning the gold multi-turn labels changes nothing a label-free run does, and
CLARA's self-consistency drops exactly the sessions whose orderings disagree (a scripted, deterministic LLM)."""
from __future__ import annotations

import json
import random
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir

from mtic.clara.llm import LLMRequest, LLMResponse
from mtic.eval.supervision import LabelFreeViolation, Supervision
from mtic.pipelines import run
from tests.conftest import TINY_INTENTS, write_tiny_bundle

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY = ["market.encoder=tiny-bert", "logger=none", "trainer.max_epochs=2", "data.batch_size=4"]
IDS = [i["id"] for i in TINY_INTENTS]
LABEL_OF = {i["id"]: i["label"] for i in TINY_INTENTS}
UNLABELED = [  # (queries, the intent the scripted LLM gives the last one)
    (["where is my parcel", "still not here"], "track"),
    (["cancel my order", "has it been cancelled?"], "cancel_status"),
    (["refund please", "money not back yet"], "refund"),
    (["i ordered shoes", "i want to cancel"], "cancel"),
    (["where is the refund", "parcel lost, DISAGREE"], "refund"),  # the LLM's orderings disagree here
    (["hello", "track my package"], "track"),
]
DISAGREE = "DISAGREE"


def bundle_with_everything(root: Path) -> Path:
    """The tiny bundle plus single-turn valid queries, gold valid sessions and unlabelled sessions."""
    write_tiny_bundle(root)
    rows = [json.loads(line) for line in (root / "single_turn.jsonl").read_text().splitlines()]
    rows += [{"text": t, "intent": i, "split": "valid"} for t, i in
             [("please cancel", "cancel"), ("parcel location?", "track"), ("refund status", "refund"),
              ("did the cancel go through", "cancel_status")]]
    (root / "single_turn.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    shutil.copyfile(root / "sessions" / "train.jsonl", root / "sessions" / "valid.jsonl")
    unlabeled = [{"id": f"u{k}", "turns": [{"text": q} for q in queries]} for k, (queries, _) in enumerate(UNLABELED)]
    (root / "sessions" / "unlabeled.jsonl").write_text("".join(json.dumps(r) + "\n" for r in unlabeled))
    return root


def poison(root: Path, seed: int = 1) -> None:
    """Every labelled turn of sessions/train.jsonl and sessions/valid.jsonl gets another, random intent."""
    rng = random.Random(seed)
    for split in ("train", "valid"):
        path = root / "sessions" / f"{split}.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        for row in rows:
            for turn in row["turns"]:
                if turn.get("intent"):
                    turn["intent"] = rng.choice([i for i in IDS if i != turn["intent"]])
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))


class ScriptedLLM:
    """Score-mode LLM with fixed answers: the intent scripted for the session's last query, in every ordering,
    except for sessions marked DISAGREE, whose second ordering answers another candidate."""

    mode = "score"

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}
        self.calls = 0

    @property
    def identity(self) -> dict[str, Any]:
        return {"backend": "scripted"}

    @property
    def params(self) -> dict[str, Any]:
        return {}

    def complete(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        self.calls += len(requests)
        return [self._answer(r) for r in requests]

    def _answer(self, request: LLMRequest) -> LLMResponse:
        last = re.search(r'LAST message \("(.*)"\)', request.user).group(1)
        wanted = LABEL_OF[dict((q[-1], i) for q, i in UNLABELED).get(last, "track")]
        index = [k for k, c in enumerate(request.choices) if c.strip() == wanted]
        choice = index[0] if index else min(range(len(request.choices)), key=request.choices.__getitem__)
        nth = self.seen.get(last, 0)
        self.seen[last] = nth + 1
        if DISAGREE in last and nth % 3 == 1:  # second ordering of this session
            choice = (choice + 1) % len(request.choices)
        return LLMResponse(text=request.choices[choice].strip(), choice=choice)


def _compose(bundle: Path, run_dir: Path, cache: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=[
            *overrides, *TINY, f"paths.data_dir={bundle}", f"paths.run_dir={run_dir}", f"paths.cache_dir={cache}"])


def _predictions(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


def _results(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "results.json").read_text())


def _clara_overrides(tmp_path: Path) -> list[str]:
    return ["+experiment=clara_sg", "pipeline.progress=false", "pipeline.retrieval.k=2",
            f"pipeline.artifact_dir={tmp_path / 'artifacts'}", "pipeline.pseudo_valid.share=0.3",
            "llm.model=tiny-llama"]


def _run_twice(tmp_path: Path, overrides: list[str], monkeypatch: pytest.MonkeyPatch | None = None):
    """The same experiment on the bundle and on a copy whose gold multi-turn labels are poisoned."""
    clean = bundle_with_everything(tmp_path / "clean")
    poisoned = bundle_with_everything(tmp_path / "poisoned")
    poison(poisoned)
    assert (clean / "sessions" / "train.jsonl").read_text() != (poisoned / "sessions" / "train.jsonl").read_text()
    out = []
    for name, bundle in (("clean", clean), ("poisoned", poisoned)):
        if monkeypatch is not None:
            monkeypatch.setattr("mtic.pipelines.clara.build_llm", lambda **_: ScriptedLLM())
        run(_compose(bundle, tmp_path / f"run-{name}", tmp_path / "cache", *overrides))
        out.append(tmp_path / f"run-{name}")
    return out


@pytest.mark.parametrize("experiment", ["baseline_naive", "baseline_single", "baseline_select"])
def test_label_free_baselines_ignore_poisoned_gold_labels(experiment: str, tmp_path: Path) -> None:
    overrides = [f"+experiment={experiment}"]
    if experiment == "baseline_select":
        overrides += ["pipeline.selector.epochs=1", "pipeline.selector.max_pairs=64"]
    clean, poisoned = _run_twice(tmp_path, overrides)
    assert _predictions(clean) == _predictions(poisoned)
    record = _results(clean)
    assert record["label_free"] is True and record["supervision"]["label_free"] is True
    assert record["supervision"]["train"][0] == "single_turn"
    assert record["supervision"]["selection"] == ["single_turn.valid"]
    assert not Supervision(**{k: record["supervision"][k] for k in ("train", "selection")}).multi_turn_gold


def test_supervised_htc_reads_the_gold_labels(tmp_path: Path) -> None:
    clean, poisoned = _run_twice(tmp_path, ["+experiment=htc_supervised"])
    assert _predictions(clean) != _predictions(poisoned)  # the poison reached the model: it reads those labels
    record = _results(clean)
    assert record["label_free"] is False
    assert record["supervision"]["train"] == ["single_turn", "sessions.train"]
    assert record["supervision"]["selection"] == ["sessions.valid"]


def test_gold_selector_is_a_supervised_row(tmp_path: Path) -> None:
    bundle = bundle_with_everything(tmp_path / "b")
    run(_compose(bundle, tmp_path / "run", tmp_path / "cache", "+experiment=baseline_select_gold",
                 "pipeline.selector.epochs=1"))
    assert "selector:gold" in _results(tmp_path / "run")["supervision"]["train"]


@pytest.mark.parametrize("override", ["data.train_sessions=train", "data.valid_sessions=valid",
                                      "pipeline.selector.sessions=train"])
def test_label_free_run_refuses_gold_before_training(override: str, tmp_path: Path) -> None:
    bundle = bundle_with_everything(tmp_path / "b")
    with pytest.raises(LabelFreeViolation, match="label-free"):
        run(_compose(bundle, tmp_path / "run", tmp_path / "cache", "+experiment=baseline_select", override))
    assert not (tmp_path / "run" / "selector").exists() and not (tmp_path / "run" / "checkpoints").exists()


def test_clara_keeps_only_unanimous_sessions_and_trains_on_exactly_them(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("mtic.pipelines.clara.build_llm", lambda **_: ScriptedLLM())
    bundle = bundle_with_everything(tmp_path / "b")
    run_dir = tmp_path / "run"
    run(_compose(bundle, run_dir, tmp_path / "cache", *_clara_overrides(tmp_path)))
    record = _results(run_dir)
    pseudo = record["pseudo_labels"]
    assert pseudo["sessions"] == len(UNLABELED) and pseudo["kept"] == len(UNLABELED) - 1
    assert pseudo["session_statuses"].get("disagreement") == 1
    train = [json.loads(x) for x in (run_dir / "pseudo_train.jsonl").read_text().splitlines()]
    valid = [json.loads(x) for x in (run_dir / "pseudo_valid.jsonl").read_text().splitlines()]
    dropped = f"u{[k for k, (q, _) in enumerate(UNLABELED) if DISAGREE in q[-1]][0]}"
    assert sorted(s["id"] for s in train + valid) == sorted(f"u{k}" for k in range(len(UNLABELED)) if f"u{k}" != dropped)
    assert len(valid) == 2 and not {s["id"] for s in train} & {s["id"] for s in valid}
    for session in train + valid:  # the scripted answer became the label of the last turn
        expected = dict((f"u{k}", i) for k, (_, i) in enumerate(UNLABELED))[session["id"]]
        assert session["turns"][-1]["intent"] == expected
    n_single = sum(1 for line in (bundle / "single_turn.jsonl").read_text().splitlines()
                   if json.loads(line).get("split") != "valid")
    assert record["data_sizes"]["train"] == n_single + len(train)  # single-turn queries + the kept sessions
    n_single_valid = sum(1 for line in (bundle / "single_turn.jsonl").read_text().splitlines()
                         if json.loads(line).get("split") == "valid")
    assert record["data_sizes"]["valid"] == len(valid) + n_single_valid  # pseudo valid split + single-turn valid
    assert record["supervision"]["train"] == ["single_turn", "pseudo_labels"]
    assert record["supervision"]["selection"] == ["single_turn.valid", "pseudo_labels"]  # M_c's, the HTC's
    assert record["candidates"] == "single_turn_htc" and record["label_free"] is True


def test_clara_without_self_consistency_is_lara_pl(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("mtic.pipelines.clara.build_llm", lambda **_: ScriptedLLM())
    bundle = bundle_with_everything(tmp_path / "b")
    overrides = [o.replace("clara_sg", "lara_pl") for o in _clara_overrides(tmp_path)] + ["market=sg"]
    run(_compose(bundle, tmp_path / "run", tmp_path / "cache", *overrides,
                 "pipeline.retrieval.candidates.source=none"))
    record = _results(tmp_path / "run")
    assert record["method"] == "lara_pl" and record["self_consistency"] == "none"
    assert record["pseudo_labels"]["kept"] == len(UNLABELED)  # no vote: the disagreeing session stays
    assert record["candidates"] == "none" and record["supervision"]["selection"] == ["pseudo_labels",
                                                                                     "single_turn.valid"]
    assert "test/acc" in record["metrics"]


def test_paper_selection_reads_only_the_pseudo_labelled_split(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("mtic.pipelines.clara.build_llm", lambda **_: ScriptedLLM())
    bundle = bundle_with_everything(tmp_path / "b")
    run(_compose(bundle, tmp_path / "run", tmp_path / "cache", *_clara_overrides(tmp_path),
                 "pipeline.retrieval.candidates.source=none", "pipeline.pseudo_valid.single_turn=false"))
    record = _results(tmp_path / "run")
    n_valid = len((tmp_path / "run" / "pseudo_valid.jsonl").read_text().splitlines())
    assert record["supervision"]["selection"] == ["pseudo_labels"] and record["data_sizes"]["valid"] == n_valid


def test_clara_predictions_ignore_poisoned_gold_labels(tmp_path: Path, monkeypatch) -> None:
    clean, poisoned = _run_twice(tmp_path, _clara_overrides(tmp_path), monkeypatch)
    assert _predictions(clean) == _predictions(poisoned)
    assert _results(clean)["supervision"]["label_free"] is True
