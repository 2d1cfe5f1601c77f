"""A real Hydra multirun over two markets with the tiny LM, then the comparison tool on its results."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["backbone=tiny-llama", "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "model.match_embedder=null"]


@pytest.fixture(scope="module")
def multirun(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("multirun")
    cmd = [sys.executable, "run.py", "-m", "+experiment=st_sg", "market=sg,id", "data.max_eval_examples=5",
           "callbacks=none", "logger=csv", f"paths.output_dir={out}", *TINY]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_each_job_writes_results(multirun: Path) -> None:
    records = [json.loads(p.read_text()) for p in multirun.rglob("results.json")]
    assert sorted(r["market"] for r in records) == ["id", "sg"]
    assert all(r["experiment"] == "st_sg" and r["test_size"] == 5 for r in records)


def test_compare_weighted_average_matches_hand_computation(multirun: Path, tmp_path: Path) -> None:
    records = [json.loads(p.read_text()) for p in multirun.rglob("results.json")]
    expected = sum(r["metrics"]["test/acc"] * r["test_size"] for r in records) / sum(r["test_size"] for r in records)
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, "experiments/compare.py", str(multirun), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    rows = (out / "test_acc.csv").read_text().splitlines()
    header, values = rows[0].split(","), rows[1].split(",")
    assert header[-3:] == ["id", "sg", "avg"]
    assert abs(float(values[-1]) - expected) < 1e-6
    assert (out / "test_acc.png").stat().st_size > 1000


def test_wandb_offline_logs_without_secrets(tmp_path: Path) -> None:
    env_key = "sk-test-" + "x" * 20
    cmd = [sys.executable, "run.py", "+experiment=st_sg", "data.max_eval_examples=3", "logger=wandb",
           "callbacks=none", f"paths.output_dir={tmp_path}", "+llm_api_key=${oc.env:MTIC_TEST_SECRET}",
           "+llm_url=${oc.env:MTIC_TEST_URL}", *TINY]  # a credentialed URL too
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "MTIC_TEST_SECRET": env_key,
                                       "MTIC_TEST_URL": f"http://user:{env_key}@127.0.0.1:9/v1"})
    assert done.returncode == 0, done.stderr[-3000:]
    runs = list(tmp_path.rglob("offline-run-*"))
    assert runs, "no offline W&B run directory"
    results = next(tmp_path.rglob("results.json")).read_text()
    assert env_key not in results
    assert all(env_key not in p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()
               and "offline-run-" not in str(p) and p.suffix in (".json", ".yaml", ".log", ".csv", ".txt"))
    logged = b"".join(p.read_bytes() for p in runs[0].rglob("*") if p.is_file())
    assert b'"llm_api_key":"***"' in logged and b'"max_new_tokens":12' in logged  # resolved config, secret masked
    assert env_key.encode() not in logged
    # the run record rides in the W&B summary, and compare --wandb reads it back through the API
    # offline runs keep the summary inside the binary run file: decode the JSON value that follows the key
    at = logged.index(b"mtic_results")
    record, _ = json.JSONDecoder().raw_decode(logged[logged.index(b"{", at):].decode("utf-8", "replace"))
    summary = {"mtic_results": record}
    assert record["market"] == "sg" and record["test_size"] == 3 and "config" not in record

    class FakeRun:
        path = ("me", "mtic", "run1")

        def __init__(self, summary: dict) -> None:
            self.summary = summary

    class FakeApi:
        def runs(self, path: str, filters: dict) -> list:
            assert path == "me/mtic" and filters == {"group": "st_sg"}
            return [FakeRun(summary), FakeRun({"_runtime": 3})]  # the second run crashed before its record

    from mtic.eval.wandb_records import records_from_wandb

    fetched = records_from_wandb("me/mtic", api=FakeApi(), filters={"group": "st_sg"})
    assert len(fetched) == 1 and fetched[0]["metrics"] == record["metrics"] and fetched[0]["_path"] == "wandb:me/mtic/run1"
    with pytest.raises(ValueError, match="ENTITY/PROJECT"):
        records_from_wandb("just-a-project", api=FakeApi())
