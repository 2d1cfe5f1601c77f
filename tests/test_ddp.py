"""DDP proven on the CPU: `trainer=ddp_cpu` (2 processes over gloo, Lightning's subprocess launcher re-running
`run.py`) for the tiny HTC (baseline_naive) and the tiny symbol-tuned LM (st).

Each DDP run must leave one results.json and one predictions.jsonl (rank 0 writes; rank 1 ran in the same run
directory, its own log says so), record world_size 2, and hold every one of the 9 test sessions exactly once, in
dataset order (9 on 2 ranks: the DistributedSampler pads rank 1 with a repeat of session 0). Its metrics must be
those of its 9 rows: one test label contradicts its words, so a metric over rank 0's 5 rows or the padded 10
would differ. The DDP checkpoint tested by one process gives the same rows and metrics (exact). A one-process fit
on the same data with the same effective batch (4 = 2 ranks x 2) reaches the same accuracy within 2/9 (two test
sessions): the runs differ only in which examples share an optimizer step (the DistributedSampler's split),
i.e. the batch order, and over seeds 0-5 (other batch orders) the one-process accuracy spans 1/9 (HTC 7/9 to 8/9;
the tiny LM, which barely learns in 2 epochs, 2/9 to 3/9), so 2/9 leaves one session of margin.

The two DDP runs start together (module fixture) and overlap with the one-process runs.
"""
from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from torch.utils.data import DistributedSampler

from mtic.eval.distributed import EXAMPLE_INDEX, gather_once
from mtic.inputs.datamodule import LengthGroupedBatchSampler
from mtic.pipelines import run
from tests.conftest import write_sessions, write_tiny_bundle

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
KEYWORDS = {"cancel": "cancel my order", "cancel_status": "cancellation status", "refund": "refund to my credit card",
            "track": "where is my parcel"}  # words the tiny models' tokenizers know
FILLERS = ["please", "hi", "ok", "thanks", "two weeks", "it has been", "and", "the page shows nothing", "shop", "help"]
N_TEST = 9
TOLERANCE = 2 / N_TEST
COMMON = ["market.encoder=tiny-bert", "logger=none", "callbacks.progress=null", "trainer.enable_progress_bar=false"]
MODELS: dict[str, list[str]] = {
    "htc": ["+experiment=baseline_naive", "trainer.max_epochs=8", "callbacks.early_stopping=null",
            "model.head_lr=0.01", "model.lr=0.003", "model.freeze_embeddings=false"],
    "st": ["+experiment=st", "backbone=tiny-llama", "model.match_embedder=null", "model.decode=score",
           "trainer.max_epochs=2"],
}
ONE_PROCESS_BATCH, PER_RANK_BATCH = "data.batch_size=4", "data.batch_size=2"  # the same effective batch


def write_keyword_bundle(root: Path) -> Path:
    """The tiny taxonomy with 10 training + 2 valid keyword queries per intent, 8 labelled training sessions and
    9 two-turn test sessions; the last test session's label contradicts its words (track words, label cancel)."""
    write_tiny_bundle(root)
    rng, intents = random.Random(0), list(KEYWORDS)
    single = [{"text": f"{a} {KEYWORDS[i]} {b}", "intent": i, **({"split": "valid"} if k >= 10 else {})}
              for i in intents for k in range(12) for a, b in [rng.sample(FILLERS, 2)]]
    (root / "single_turn.jsonl").write_text("".join(json.dumps(r) + "\n" for r in single), encoding="utf-8")
    test = []
    for k in range(N_TEST):
        intent, words = intents[k % 4], KEYWORDS["track" if k == N_TEST - 1 else intents[k % 4]]
        a, b = rng.sample(FILLERS, 2)
        test.append({"id": f"s{k}", "turns": [{"text": f"{a} {b}"}, {"text": f"{b} {words}", "intent": intent}]})
    train = [{"id": f"t{k}", "turns": [{"text": KEYWORDS[intents[k % 4]], "intent": intents[k % 4]},
                                       {"text": f"and {KEYWORDS[intents[(k + 1) % 4]]}", "intent": intents[(k + 1) % 4]}]}
             for k in range(8)]
    write_sessions(root, {"train": train, "test": test})
    return root


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_keyword_bundle(tmp_path_factory.mktemp("ddp") / "bundle")


@pytest.fixture(scope="module")
def ddp_runs(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[subprocess.Popen, Path]]]:
    """Both DDP runs, started at once: {model: (process, output dir)}."""
    started = {}
    for name, overrides in MODELS.items():
        out = tmp_path_factory.mktemp(f"ddp-{name}")
        cmd = [sys.executable, "run.py", *overrides, *COMMON, PER_RANK_BATCH, "trainer=ddp_cpu",
               f"paths.data_dir={bundle}", f"paths.output_dir={out}"]
        started[name] = (subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), out)
    yield started
    for process, _ in started.values():
        if process.poll() is None:
            process.kill()


def _finished(ddp_runs: dict[str, tuple[subprocess.Popen, Path]], name: str) -> Path:
    process, out = ddp_runs[name]
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    results = list(out.rglob("results.json"))
    assert len(results) == 1, results  # rank 0 alone writes it
    return results[0].parent


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


def _one_process(name: str, bundle: Path, run_dir: Path, *extra: str) -> dict[str, float]:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*MODELS[name], *COMMON, ONE_PROCESS_BATCH, *extra,
                                                       f"paths.data_dir={bundle}", f"paths.run_dir={run_dir}"])
    return run(cfg)


def _accuracy(rows: list[dict[str, Any]]) -> float:
    return sum(r["intent"] == r["target"] for r in rows) / len(rows)


@pytest.mark.parametrize("name", list(MODELS))
def test_ddp_run_counts_every_test_session_once(name: str, bundle: Path, ddp_runs: dict, tmp_path: Path) -> None:
    run_dir = _finished(ddp_runs, name)
    record = json.loads((run_dir / "results.json").read_text())
    assert record["world_size"] == 2 and record["test_size"] == N_TEST
    assert (run_dir / "train_ddp_process_1.log").is_file()  # rank 1 ran here, and wrote no run files
    assert len(list(ddp_runs[name][1].rglob("predictions.jsonl"))) == 1
    rows = _rows(run_dir)
    assert [r["session_id"] for r in rows] == [f"s{k}" for k in range(N_TEST)]  # each once, in dataset order
    metrics = record["metrics"]
    assert metrics["test/acc"] == pytest.approx(_accuracy(rows), abs=1e-6)
    if name == "st":
        assert metrics["test/unmatched"] == pytest.approx(sum(r["method"] != "exact" for r in rows) / N_TEST, abs=1e-6)

    # the DDP checkpoint, tested by one process: the same predictions and metrics
    checkpoint = run_dir / "checkpoints" / "best.ckpt"
    again = _one_process(name, bundle, tmp_path / "eval", "pipeline.fit=false", f"pipeline.checkpoint={checkpoint}")
    assert [(r["session_id"], r["intent"]) for r in _rows(tmp_path / "eval")] == [
        (r["session_id"], r["intent"]) for r in rows]
    assert again == pytest.approx(metrics, abs=1e-6)

    # a one-process fit on the same data and effective batch: the same accuracy within TOLERANCE (see the docstring)
    alone = _one_process(name, bundle, tmp_path / "alone")
    assert abs(alone["test/acc"] - metrics["test/acc"]) <= TOLERANCE + 1e-9, (alone, metrics)
    if name == "htc":  # the classifier learns the keywords (chance: 1/4), in both runs
        assert min(alone["test/acc"], metrics["test/acc"]) >= 6 / N_TEST


# --------------------------------------------------------------------------- the parts, without processes
def test_length_grouped_batches_shard_over_ranks() -> None:
    """What Lightning builds under DDP: the batch sampler over a DistributedSampler, one per rank."""
    lengths = [5, 1, 9, 3, 7, 2, 8, 4, 6, 10, 11]
    shards = [list(LengthGroupedBatchSampler(lengths, batch_size=2, seed=1, mega_factor=2,
                                             sampler=DistributedSampler(range(11), num_replicas=2, rank=rank,
                                                                        shuffle=False)))
              for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 3  # 6 indices each (11 padded to 12): the ranks step together
    seen = [i for shard in shards for batch in shard for i in batch]
    assert sorted(seen) == sorted([*range(11), 0])  # everything, plus the one padding repeat
    for batch in (b for shard in shards for b in shard):
        assert [lengths[i] for i in batch] == sorted((lengths[i] for i in batch), reverse=True)


def test_gather_once_keeps_one_row_per_example_in_order() -> None:
    rows = [{"session_id": "b", EXAMPLE_INDEX: 1}, {"session_id": "a", EXAMPLE_INDEX: 0},
            {"session_id": "c", EXAMPLE_INDEX: 2}, {"session_id": "a", EXAMPLE_INDEX: 0}]
    assert gather_once(rows) == [{"session_id": "a"}, {"session_id": "b"}, {"session_id": "c"}]
    with pytest.raises(KeyError):
        gather_once([{"session_id": "a"}])
