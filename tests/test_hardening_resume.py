"""Issue 22, group 6: training after a crash. A run killed with SIGKILL resumes from its `last.ckpt`
(`pipeline.resume=auto`, the default) and says so; a fresh fit moves old checkpoints into `stale-<time>/`, so
`checkpoints/best.ckpt` is always the one model `mtic export` should get (never a `best-v1.ckpt` beside it)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY_SINGLE, write_tiny_bundle

from mtic.models.checkpoint_io import ArtifactError, read_checkpoint
from mtic.pipelines.train_eval import resume_point

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 5


def _bundle(root: Path, copies: int = 1) -> Path:
    """The tiny bundle; `copies` > 1 repeats its single-turn rows so that an epoch lasts long enough to be killed."""
    bundle = write_tiny_bundle(root)
    if copies > 1:
        import json

        rows = "".join(json.dumps({"text": t, "intent": i}) + "\n" for t, i in TINY_SINGLE)
        (bundle / "single_turn.jsonl").write_text(rows * copies, encoding="utf-8")
    return bundle


def _command(bundle: Path, run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, str(REPO / "run.py"), "+experiment=baseline_naive", "market.encoder=tiny-bert",
            f"paths.data_dir={bundle}", f"hydra.run.dir={run_dir}", f"trainer.max_epochs={EPOCHS}", *overrides]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}


def _train(bundle: Path, run_dir: Path, *overrides: str) -> str:
    """What a run printed (console log lines and stderr together); it must succeed."""
    done = subprocess.run(_command(bundle, run_dir, *overrides), cwd=run_dir.parent, env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:]
    return done.stdout


def _checkpoints(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))


def _wait_for_a_whole_file(path: Path, process: subprocess.Popen, log: Path, limit_s: float = 300) -> None:
    """Until `path` exists and its size has held still for a moment (written whole), or fail: bounded."""
    deadline, last_size = time.monotonic() + limit_s, -1
    while time.monotonic() < deadline:
        assert process.poll() is None, f"training ended before it could be killed:\n{log.read_text()[-3000:]}"
        size = path.stat().st_size if path.is_file() else -1
        if size > 0 and size == last_size:
            return
        last_size = size
        time.sleep(0.2)
    process.kill()
    pytest.fail(f"no {path.name} within {limit_s} s:\n{log.read_text()[-3000:]}")


def test_killed_training_resumes_from_last_checkpoint(tmp_path: Path) -> None:
    bundle, run_dir = _bundle(tmp_path / "big", copies=500), tmp_path / "run"
    run_dir.mkdir()
    overrides = ("model.checkpoint_optimizer=true", "~callbacks.early_stopping")  # resumable; all epochs run
    log = tmp_path / "killed.log"
    with log.open("w") as out:
        process = subprocess.Popen(_command(bundle, run_dir, *overrides), cwd=tmp_path, env=_env(), stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_for_a_whole_file(run_dir / "checkpoints" / "last.ckpt", process, log)
        finally:
            os.killpg(process.pid, signal.SIGKILL)  # kill -9, mid-training
            process.wait(timeout=60)
    killed_at = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["epoch"]
    assert killed_at < EPOCHS - 1 and not (run_dir / "results.json").exists(), "the run was not interrupted"

    said = _train(bundle, run_dir, *overrides)  # pipeline.resume=auto is the default
    lines = [line for line in said.splitlines() if "resuming from" in line]
    assert len(lines) == 1, said[-3000:]
    assert f"{run_dir / 'checkpoints' / 'last.ckpt'} (saved after epoch {killed_at + 1}," in lines[0]
    assert "not resuming" not in said and "moved" not in said
    assert (run_dir / "results.json").is_file()
    assert _checkpoints(run_dir) == ["best.ckpt", "last.ckpt"]  # one best: the best of the whole run
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["epoch"] == EPOCHS - 1
    assert not list((run_dir / "checkpoints").glob("stale-*"))


def test_fresh_fit_moves_stale_checkpoints_away(tmp_path: Path) -> None:
    """A finished run's weights-only checkpoints (the HTC default): the rerun says why it cannot resume, moves
    them to stale-<time>/ and writes one best.ckpt, no best-v1.ckpt."""
    bundle, run_dir = _bundle(tmp_path / "tiny"), tmp_path / "run"
    run_dir.mkdir()
    _train(bundle, run_dir, "trainer.max_epochs=1")
    assert _checkpoints(run_dir) == ["best.ckpt", "last.ckpt"]
    said = _train(bundle, run_dir, "trainer.max_epochs=1")
    assert "not resuming: " in said and "holds weights only (model.checkpoint_optimizer=false)" in said
    assert "moved 2 old checkpoint(s) (best.ckpt, last.ckpt)" in said
    assert _checkpoints(run_dir) == ["best.ckpt", "last.ckpt"]
    stale = list((run_dir / "checkpoints").glob("stale-*/*.ckpt"))
    assert sorted(p.name for p in stale) == ["best.ckpt", "last.ckpt"]


# --------------------------------------------------------------------------- resume_point, without training
def _trainer(folder: Path) -> SimpleNamespace:
    return SimpleNamespace(checkpoint_callback=SimpleNamespace(dirpath=str(folder)))


def test_auto_with_an_unreadable_last_checkpoint_starts_fresh(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "last.ckpt").write_bytes(b"PK\x03\x04 cut off")  # killed while it was written
    (folder / "best.ckpt").write_bytes(b"old")
    with caplog.at_level("INFO", logger="mtic"):
        assert resume_point(_trainer(folder), tmp_path, "auto") is None
    assert "is unreadable" in caplog.text and "training starts fresh" in caplog.text
    assert not list(folder.glob("*.ckpt")) and len(list(folder.glob("stale-*/*.ckpt"))) == 2


def test_never_starts_fresh_and_auto_without_checkpoints_says_nothing(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "checkpoints"
    with caplog.at_level("INFO", logger="mtic"):
        assert resume_point(_trainer(folder), tmp_path, "auto") is None
        assert caplog.text == ""
        folder.mkdir()
        torch.save({"epoch": 0, "global_step": 3, "optimizer_states": [{}], "callbacks": {}}, folder / "last.ckpt")
        assert resume_point(_trainer(folder), tmp_path, "never") is None
    assert "moved 1 old checkpoint(s) (last.ckpt)" in caplog.text and "resuming" not in caplog.text


def test_resume_from_a_path_keeps_its_recorded_best(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    callbacks = {"ModelCheckpoint{'monitor': 'val/loss'}": {"best_model_path": str(folder / "best.ckpt")}}
    torch.save({"epoch": 1, "global_step": 8, "optimizer_states": [{}], "callbacks": callbacks}, folder / "last.ckpt")
    for name in ("best.ckpt", "best-v1.ckpt"):
        (folder / name).write_bytes(b"x")
    with caplog.at_level("INFO", logger="mtic"):
        assert resume_point(_trainer(folder), tmp_path, str(folder / "last.ckpt")) == str(folder / "last.ckpt")
    assert "(saved after epoch 2, step 8)" in caplog.text
    assert _checkpoints(tmp_path) == ["best.ckpt", "last.ckpt"]  # best-v1.ckpt (not the recorded best) moved


@pytest.mark.parametrize(("content", "reason"), [
    (None, "pipeline.resume: no such checkpoint file"),
    ({"epoch": 0, "state_dict": {}}, "holds weights only (callbacks.checkpoint.save_weights_only=true)"),
])
def test_resume_from_a_path_that_cannot_resume_is_one_line(content: dict | None, reason: str, tmp_path: Path) -> None:
    path = tmp_path / "given.ckpt"
    if content is not None:
        torch.save(content, path)
    with pytest.raises(ArtifactError, match=r"^\S*given.ckpt: ") as err:
        resume_point(_trainer(tmp_path / "checkpoints"), tmp_path, str(path))
    assert reason in str(err.value) and "\n" not in str(err.value)
