"""Issue 22, group 7: corrupt artifacts are one line `error: <file>: <reason>` with exit 2 on every entry point.

Truncated / empty / random-bytes / not-a-checkpoint files in `mtic export`, `IntentClassifier.load` and `mtic
serve`; a damaged model.onnx, deploy.json, model_card.json or tokenizer.json; `mtic merge` on a classifier
checkpoint; `export` on a missing checkpoint; `export` into an existing export (needs --force)."""
from __future__ import annotations

import os
import pickle
import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from test_deploy_export import make_tiny_run

from mtic.cli import main
from mtic.cli_errors import EXIT_USER_ERROR
from mtic.deploy.export import export_checkpoint
from mtic.deploy.predictor import IntentClassifier
from mtic.models.checkpoint_io import ArtifactError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("hardening_artifacts")
    ckpt = make_tiny_run(root, steps=2)
    export = root / "export"
    export_checkpoint(ckpt, export, parity_limit=2)
    return ckpt, export


def _user_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Run `mtic argv` in-process; it must exit 2 with exactly one stderr line, `error: ...`."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err.strip()


def _random(n: int) -> bytes:
    return random.Random(0).randbytes(n)


CHECKPOINTS: dict[str, tuple[Callable[[bytes, Path], None], str]] = {
    "empty": (lambda good, p: p.write_bytes(b""), "empty file (0 bytes)"),
    "truncated": (lambda good, p: p.write_bytes(good[: len(good) // 2]), "truncated or corrupt checkpoint"),
    "random_bytes": (lambda good, p: p.write_bytes(_random(4096)), "not a PyTorch checkpoint"),
    "pickle": (lambda good, p: p.write_bytes(pickle.dumps(ArtifactError("x", "y"))), "not a PyTorch checkpoint"),
    "a_tensor": (lambda good, p: torch.save(torch.zeros(3), p), "not a Lightning checkpoint"),
    "foreign_dict": (lambda good, p: torch.save({"state_dict": {}}, p), "not an mtic HTC classifier checkpoint"),
    "directory": (lambda good, p: p.mkdir(), "is a directory"),
}


@pytest.fixture
def bad_checkpoint(request: pytest.FixtureRequest, tiny: tuple[Path, Path], tmp_path: Path) -> tuple[Path, str]:
    """A damaged checkpoint inside a copy of the run directory (so the run config is known)."""
    ckpt, _ = tiny
    run = tmp_path / "run"
    shutil.copytree(ckpt.parent.parent / ".hydra", run / ".hydra")
    (run / "checkpoints").mkdir()
    path = run / "checkpoints" / "best.ckpt"
    make, reason = CHECKPOINTS[request.param]
    make(ckpt.read_bytes(), path)
    return path, reason


@pytest.mark.parametrize("bad_checkpoint", list(CHECKPOINTS), indirect=True)
def test_a_damaged_checkpoint_is_one_line_everywhere(bad_checkpoint: tuple[Path, str], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    path, reason = bad_checkpoint
    expected = f"error: {path}: {reason}"
    assert _user_error(capsys, ["export", str(path), str(tmp_path / "out")]).startswith(expected)
    assert not (tmp_path / "out").exists()
    if path.is_file():  # a directory is not a checkpoint for serve/load either: "neither an export nor a .ckpt"
        assert _user_error(capsys, ["serve", str(path), "--port", "1"]).startswith(expected)
        with pytest.raises(ArtifactError) as err:
            IntentClassifier.load(path)
        assert str(err.value).startswith(f"{path}: {reason}")
    assert _user_error(capsys, ["merge", str(path), str(tmp_path / "merged")]).startswith(f"error: {path}: ")


def test_merge_on_a_classifier_checkpoint(tiny: tuple[Path, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    ckpt, _ = tiny
    err = _user_error(capsys, ["merge", str(ckpt), str(tmp_path / "merged")])
    assert err.startswith(f"error: {ckpt}: an HTC classifier checkpoint, not a LoRA one") and "mtic export" in err
    assert not (tmp_path / "merged").exists()


def test_export_on_a_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "run" / "checkpoints" / "best.ckpt"
    err = _user_error(capsys, ["export", str(missing), str(tmp_path / "out")])
    assert err == f"error: {missing}: no such checkpoint file"  # not "no run config"
    assert _user_error(capsys, ["serve", str(tmp_path / "nope")]) == \
        f"error: {tmp_path / 'nope'}: no such export directory or checkpoint"


def test_export_into_an_existing_export_needs_force(tiny: tuple[Path, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    ckpt, export = tiny
    out = tmp_path / "export"
    shutil.copytree(export, out)
    (out / "model_card.json").write_text('{"name": "the old one"}', encoding="utf-8")
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    err = _user_error(capsys, ["export", str(ckpt), str(out), "--no-int8", "--parity-limit", "2"])
    assert err == f"error: {out}: an export already exists here; pass --force to replace it"
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # untouched
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine", encoding="utf-8")
    assert "is not an mtic export" in _user_error(capsys, ["export", str(ckpt), str(other), "--force"])
    assert (other / "todo.txt").read_text(encoding="utf-8") == "mine"
    assert main(["export", str(ckpt), str(out), "--no-int8", "--parity-limit", "2", "--force"]) == 0
    assert "the old one" not in (out / "model_card.json").read_text(encoding="utf-8")
    assert not (out / "model.int8.onnx").exists()  # the stale int8 model of the old export is gone


EXPORT_DAMAGE: dict[str, tuple[str, bytes, str]] = {
    "int8_truncated": ("model.int8.onnx", b"", "empty file (0 bytes), not an ONNX model"),
    "int8_random": ("model.int8.onnx", _random(2048), "not a loadable ONNX model"),
    "deploy_not_json": ("deploy.json", b'{"format": 1, "view": ', "line 1: not valid JSON"),
    "deploy_empty": ("deploy.json", b"", "empty file (0 bytes)"),
    "deploy_array": ("deploy.json", b"[]", "not an mtic deploy spec"),
    "deploy_fields": ("deploy.json", b'{"format": 1}', "not an mtic deploy spec"),
    "deploy_binary": ("deploy.json", _random(64), "not UTF-8 text"),
    "card_not_json": ("model_card.json", b"{", "line 1: not valid JSON"),
    "tokenizer": ("tokenizer/tokenizer.json", b'{"model": 3}', "not a readable tokenizer.json"),
}


@pytest.mark.parametrize("case", list(EXPORT_DAMAGE))
def test_a_damaged_export_is_one_line(case: str, tiny: tuple[Path, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    _, export = tiny
    out = tmp_path / "export"
    shutil.copytree(export, out)
    name, data, reason = EXPORT_DAMAGE[case]
    (out / name).write_bytes(data)
    expected = f"{out / name}: {reason}"
    with pytest.raises(ArtifactError) as err:
        IntentClassifier.load(out)
    assert str(err.value).startswith(expected) and "\n" not in str(err.value)
    assert _user_error(capsys, ["serve", str(out), "--port", "1"]).startswith(f"error: {expected}")


def test_the_real_command_line(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    """`mtic export` on a truncated checkpoint, as a user runs it: one stderr line, exit 2, no traceback."""
    ckpt, _ = tiny
    bad = tmp_path / "best.ckpt"
    bad.write_bytes(ckpt.read_bytes()[:1000])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "mtic.cli", "export", str(bad), str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120, env=env, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: {bad}: truncated or corrupt checkpoint")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
