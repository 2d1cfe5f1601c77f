"""Pseudo-labelling over shards (pipeline/engine=ray): the merged records file equals the one-process run's byte
for byte, and shards resume (torn last line, done sessions) without labelling a session twice.

The shard logic runs without Ray (a scripted labeller); the end-to-end tests run CLARA's labelling stage on a local
Ray cluster (2 CPUs) with tiny-llama answering and tiny-bert retrieving, against an in-process run.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY_SINGLE, write_sessions, write_tiny_bundle
from hydra import compose, initialize_config_dir

from mtic.clara.engine import InProcess, build_engine
from mtic.clara.pseudo_label import Outputs, line_of, pseudo_label, read_records
from mtic.clara.shards import gather, label_shard, plan_shards, shard_path, shard_size, shards_dir
from mtic.config_schema import ConfigError
from mtic.data.schema import Session, Turn
from mtic.pipelines import run

CONF = Path(__file__).resolve().parents[1] / "conf"
N_SESSIONS = 10
BATCH = 2


# --------------------------------------------------------------------------- shards without Ray
class Scripted:
    """A labeller whose answer depends on the session alone; it remembers every batch it was asked."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def __call__(self, sessions):
        self.batches.append([s.id for s in sessions])
        return [{"id": s.id, "turns": [{"text": t.text, "intent": None} for t in s.turns], "status": "kept",
                 "intent": f"i{len(s.turns[-1].text) % 3}", "answers": []} for s in sessions]


def _sessions(n: int) -> list[Session]:
    return [Session(f"s{k:02d}", tuple(Turn(TINY_SINGLE[(k + j) % 8][0]) for j in range(1 + k % 2))) for k in range(n)]


def test_shards_cover_the_input_in_whole_batches():
    size = shard_size(batch_size=3, shard_batches=2)
    shards = plan_shards(14, size)
    assert [(s.start, s.stop) for s in shards] == [(0, 6), (6, 12), (12, 14)]
    assert all(s.start % 3 == 0 for s in shards)
    assert plan_shards(0, size) == []


def test_a_shard_resumes_after_a_torn_line_and_skips_what_is_done(tmp_path):
    sessions = _sessions(11)
    reference = tmp_path / "ref.jsonl"
    pseudo_label(sessions, Scripted(), reference, batch_size=BATCH, progress=False)
    expected = reference.read_bytes().splitlines(keepends=True)

    size = shard_size(BATCH, 2)
    folder = shards_dir(tmp_path / "run.jsonl", size)
    shards = plan_shards(len(sessions), size)
    second = shards[1]  # sessions 4..7
    path = shard_path(folder, second)
    path.parent.mkdir(parents=True)
    path.write_bytes(expected[4] + expected[5][:17])  # one record, then a line torn by kill -9
    labeller = Scripted()
    run_figures = label_shard(sessions[second.start:second.stop], labeller, path, BATCH, skip={"s07"})
    assert labeller.batches == [["s05"], ["s06"]]  # positions 5 | 6 (7 skipped): the one-process run's batches
    assert run_figures["labelled_now"] == 2 and run_figures["resumed_from"] == 2
    assert path.read_bytes() == b"".join(expected[4:7])  # torn tail cut, whole lines only

    done = {"s07": json.loads(expected[7])}
    for shard in shards:
        if shard != second:
            label_shard(sessions[shard.start:shard.stop], Scripted(), shard_path(folder, shard), BATCH)
    merged = gather(sessions, [shard_path(folder, s) for s in shards], done)
    assert b"".join(line_of(r) for r in merged) == reference.read_bytes()


def test_gather_names_a_session_left_unlabelled(tmp_path):
    sessions = _sessions(3)
    with pytest.raises(RuntimeError, match="'s02'"):
        gather(sessions, [], {s.id: {"id": s.id} for s in sessions[:2]})


def test_engine_is_a_config_group():
    assert isinstance(build_engine({"_target_": "mtic.clara.engine.InProcess"}), InProcess)
    with pytest.raises(ConfigError, match="pipeline/engine=ray"):
        build_engine("ray")  # the override pipeline.engine=ray instead of the group choice


class Untouchable:
    """A recipe that must not be used: nothing is left to label."""

    def prepare(self):
        raise AssertionError("nothing to label: M_c must not be prepared")

    def build(self):
        raise AssertionError("nothing to label: no labeller, no Ray")


def test_a_finished_file_starts_no_ray_and_builds_nothing(tmp_path):
    from mtic.clara.ray_engine import RayEngine  # ray itself is imported only when shards are left to label

    sessions = _sessions(5)
    out = tmp_path / "pl.jsonl"
    pseudo_label(sessions, Scripted(), out, batch_size=BATCH, progress=False)
    before = out.read_bytes()
    summary = RayEngine(num_workers=2, shard_batches=1).label(sessions, Untouchable(), out, batch_size=BATCH,
                                                             progress=False)
    assert summary["run"]["labelled_now"] == 0 and summary["run"]["shards_run"] == 0
    assert out.read_bytes() == before and summary["llm_stats"] is None


# --------------------------------------------------------------------------- CLARA's labelling on Ray
@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024**2, log_to_driver=False)
    yield ray
    ray.shutdown()


def _bundle(root: Path) -> Path:
    write_tiny_bundle(root)
    texts = [t for t, _ in TINY_SINGLE]
    rows = [{"id": f"u{k:02d}", "turns": [{"text": texts[(3 * k + j) % 8]} for j in range(1 + k % 3)]}
            for k in range(N_SESSIONS)]
    write_sessions(root, {"unlabeled": rows})
    return root


def _label(tmp_path: Path, out: Path, cache: str, *overrides: str) -> dict:
    """CLARA's pseudo-labelling stage only (fit=false, test=false) into `out`, with its own answer cache."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "+experiment=clara_sg", "market.encoder=tiny-bert", "llm.model=tiny-llama", "llm.num_threads=1",
            "logger=none", "pipeline.progress=false", "pipeline.fit=false", "pipeline.test=false",
            "pipeline.retrieval.candidates.source=none", "pipeline.retrieval.k=2", f"pipeline.batch_size={BATCH}",
            f"pipeline.pseudo_labels={out}", f"paths.data_dir={tmp_path / 'tiny'}", f"paths.run_dir={tmp_path / 'run'}",
            f"llm.cache_file={tmp_path / cache}", *overrides])
    assert run(cfg) == {}
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    return {**json.loads(Outputs.of(out).summary_json.read_text()), "llm_stats": results["pseudo_labels"]["llm_stats"]}


RAY = ["pipeline/engine=ray", "pipeline.engine.num_workers=2", "pipeline.engine.shard_batches=1"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The one-process run (the default engine)."""
    import torch

    threads = torch.get_num_threads()  # llm.num_threads=1 is process-wide: as Ray's 1-CPU workers run
    root = tmp_path_factory.mktemp("clara-ray")
    _bundle(root / "tiny")
    out = root / "local" / "pseudo_labels.jsonl"
    try:
        summary = _label(root, out, "local.sqlite")
    finally:
        torch.set_num_threads(threads)
    return root, out, summary


def test_ray_run_resumes_shards_and_equals_the_one_process_run(ray_cluster, reference, monkeypatch):
    """One Ray run (it costs ~20 s on 2 busy cores: each worker imports torch and loads the tiny models) that must
    resume a one-process file stopped part-way, a shard with a torn last line and a finished shard, label the rest
    with its own answer cache and end with the one-process run's files, byte for byte."""
    root, local, local_summary = reference
    assert local_summary["sessions"] == N_SESSIONS and local_summary["run"]["labelled_now"] == N_SESSIONS
    lines = local.read_bytes().splitlines(keepends=True)
    out = root / "ray" / "pseudo_labels.jsonl"
    out.parent.mkdir()
    out.write_bytes(b"".join(lines[:2]))  # a one-process run stopped after sessions 0, 1
    folder = shards_dir(out, BATCH)
    folder.mkdir(parents=True)
    shards = plan_shards(N_SESSIONS, BATCH)
    shard_path(folder, shards[1]).write_bytes(lines[2] + lines[3][:25])  # session 2, then a line torn by kill -9
    shard_path(folder, shards[3]).write_bytes(lines[6] + lines[7])  # a finished shard

    def no_model_here(*args, **kwargs):
        raise AssertionError("the labeller (and its LLM) must be built in the Ray workers, not in the driver")

    monkeypatch.setattr("mtic.pipelines.clara.build_labeler", no_model_here)
    summary = _label(root, out, "ray.sqlite", *RAY)  # its own answer cache: every answer is computed again

    assert out.read_bytes() == local.read_bytes()
    assert Outputs.of(out).sessions.read_bytes() == Outputs.of(local).sessions.read_bytes()
    assert summary["run"]["labelled_now"] == N_SESSIONS - 5  # sessions 0, 1, 2, 6, 7 are not labelled again
    assert summary["run"]["shards"] == N_SESSIONS // BATCH and summary["run"]["shards_run"] == 4  # 0: in the file
    stats = summary["llm_stats"]  # the workers' LLM counters, summed
    assert stats["cache_hits"] == 0 and N_SESSIONS - 5 <= stats["requests"] == stats["cache_misses"]
    for key in ("kept", "session_statuses", "answer_statuses", "precision"):
        assert summary[key] == local_summary[key], key
    assert [r["id"] for r in read_records(out)] == [f"u{k:02d}" for k in range(N_SESSIONS)]
    assert not folder.parent.exists()  # shard files removed once merged
