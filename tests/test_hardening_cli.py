"""Issue 22, group 8: CLI and config errors are one line `error: ...` with exit 2, raised before any data, model,
port or network is touched: `mtic serve` limits and port, `mtic data demo` into an existing directory, wrong types
and ranges of trainer / model / data numbers, an unknown encoder name, an unwritable run directory."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_tiny_bundle
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from test_hardening_artifacts import _user_error  # exit 2, exactly one stderr line 'error: ...'

from mtic.cli import main
from mtic.cli_errors import EXIT_USER_ERROR
from mtic.config_schema import ConfigError, validate_config
from mtic.data.bundle import read_bundle
from mtic.hub.registry import KNOWN_MODELS, check_model_name, resolve_model
from mtic.run_dir import unwritable_reason

REPO = Path(__file__).resolve().parents[1]


def _run_py(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "HF_ENDPOINT": "http://127.0.0.1:9"}  # a hub call would fail at once, not hang: none may happen
    return subprocess.run([sys.executable, str(REPO / "run.py"), *overrides], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def _one_line(done: subprocess.CompletedProcess) -> str:
    """The error line: exit 2, the last stderr line, the only one saying error (a run that got as far as seeding
    may have logged Lightning's 'Seed set to 0' before), no traceback."""
    assert done.returncode == EXIT_USER_ERROR, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and sum("error" in line.lower() for line in lines) == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and len(lines) <= 2, done.stderr[-3000:]
    return lines[-1]


# --------------------------------------------------------------------------- mtic serve
@pytest.mark.parametrize(("flags", "reason"), [
    (["--max-turns", "-1"], "max_turns must be >= 1, got -1"),
    (["--max-batch", "0"], "max_batch must be >= 1, got 0"),
    (["--top-k", "0"], "top_k must be >= 1"),
    (["--port", "99999"], "--port must be 0..65535"),
    (["--port", "-1"], "--port must be 0..65535"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--keep-alive", "nan"], "--keep-alive must be a finite number"),
    (["--header-timeout", "0"], "header_timeout_s must be > 0"),
])
def test_serve_settings_are_checked_before_the_model(flags: list[str], reason: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    """The model path does not exist: the settings error comes first (no model load, no port bound)."""
    err = _user_error(capsys, ["serve", str(tmp_path / "no-model"), *flags])
    assert err.startswith("error: mtic serve: ") and reason in err, err


# --------------------------------------------------------------------------- mtic data demo
def test_demo_into_an_existing_directory(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me", encoding="utf-8")
    err = _user_error(capsys, ["data", "demo", "sg", "--out", str(mine)])
    assert err == f"error: {mine}: already exists; pass --overwrite to replace the bundle in it"
    err = _user_error(capsys, ["data", "demo", "sg", "--out", str(mine), "--overwrite"])
    assert "holds no bundle" in err
    assert (mine / "notes.txt").read_text(encoding="utf-8") == "keep me"  # never deleted

    err = _user_error(capsys, ["data", "demo", "sg", "--out", str(mine / "notes.txt")])
    assert err == f"error: {mine / 'notes.txt'}: is a file; give a new directory for the bundle"
    assert "known: br id my ph sg th tw vn" in _user_error(capsys, ["data", "demo", "xx", "--out", str(tmp_path / "x")])


def test_demo_into_an_empty_directory_and_over_a_bundle(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    assert main(["data", "demo", "sg", "--out", str(out)]) == 0
    assert read_bundle(out).meta.market == "sg"
    _user_error(capsys, ["data", "demo", "sg", "--out", str(out)])  # a bundle there now: --overwrite needed
    assert main(["data", "demo", "sg", "--out", str(out), "--overwrite", "--seed", "1"]) == 0
    assert read_bundle(out).intents


# --------------------------------------------------------------------------- config numbers
def _compose(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=["+experiment=baseline_single", *overrides])


@pytest.mark.parametrize(("override", "reason"), [
    ("trainer.max_epochs=abc", "'trainer.max_epochs' must be of type int, got str ('abc')"),
    ("trainer.max_epochs=true", "'trainer.max_epochs' must be of type int, got bool"),
    ("trainer.max_epochs=-2", "'trainer.max_epochs' must be >= -1, got -2"),
    ("trainer.max_steps=1.5", "'trainer.max_steps' must be of type int, got float"),
    ("trainer.accumulate_grad_batches=0", "'trainer.accumulate_grad_batches' must be >= 1, got 0"),
    ("model.lr=fast", "'model.lr' must be of type int/float, got str ('fast')"),
    ("model.lr=0", "'model.lr' must be > 0, got 0"),
    ("model.lr=nan", "'model.lr' must be > 0, got nan"),
    ("model.head_lr=-1e-3", "'model.head_lr' must be > 0"),
    ("model.max_length=0", "'model.max_length' must be >= 1"),
    ("data.batch_size=0", "'data.batch_size' must be >= 1, got 0"),
    ("data.batch_size=8.5", "'data.batch_size' must be of type int, got float"),
    ("data.eval_batch_size=-4", "'data.eval_batch_size' must be >= 1, got -4"),
])
def test_config_numbers_are_checked(override: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate_config(_compose(override))
    assert str(err.value).startswith(f"invalid config: {reason}") and "\n" not in str(err.value)  # one line


def test_valid_numbers_pass() -> None:
    validate_config(_compose("trainer.max_epochs=-1", "model.lr=1", "model.lr=2e-5", "data.batch_size=1"))


@pytest.mark.parametrize("override", ["trainer.max_epochs=abc", "model.lr=fast", "data.batch_size=0"])
def test_run_py_checks_numbers_before_data_and_model(override: str, tmp_path: Path) -> None:
    """The bundle does not exist and the encoder is unknown: the config line comes first (nothing is loaded)."""
    line = _one_line(_run_py(tmp_path, "+experiment=baseline_single", "market.encoder=nosuch",
                             f"paths.data_dir={tmp_path / 'no-bundle'}", f"hydra.run.dir={tmp_path / 'run'}", override))
    assert line.startswith("error: invalid config: '" + override.split("=")[0] + "'"), line


# --------------------------------------------------------------------------- encoder names
@pytest.mark.parametrize(("name", "hint"), [("nosuch", None), ("E5-small", "e5-small"), ("smollm2-135", "smollm2-135m"),
                                            ("minilm_l6", "minilm-l6")])
def test_an_unknown_model_name_lists_the_registry(name: str, hint: str | None, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_model(name, cache_dir=tmp_path)
    message = str(err.value)
    assert message.startswith(f"unknown model '{name}': ") and ", ".join(KNOWN_MODELS) in message
    assert (f"did you mean '{hint}'?" in message) if hint else "did you mean" not in message
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("name", ["./models/mine", "/no/such/model", "~/no-such-model-dir"])
def test_a_missing_local_model_path_is_named(name: str) -> None:
    with pytest.raises(ConfigError, match="no such local directory"):
        check_model_name(name)


@pytest.mark.parametrize("name", ["meta-llama/Llama-2-7b-hf", "SeaLLMs/SeaLLM-7B-chat", "org/name.v1_2", "tiny-bert"])
def test_hub_ids_and_registry_names_pass(name: str) -> None:
    check_model_name(name)


def test_a_legacy_hub_id_in_the_local_hub_cache_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ConfigError):
        check_model_name("gpt2")
    (tmp_path / "models--gpt2").mkdir()
    check_model_name("gpt2")


def test_run_py_unknown_encoder_fails_fast(tmp_path: Path) -> None:
    bundle = write_tiny_bundle(tmp_path / "bundle")
    start = time.monotonic()
    line = _one_line(_run_py(tmp_path, "+experiment=baseline_single", "market.encoder=nosuch",
                             f"paths.data_dir={bundle}", f"hydra.run.dir={tmp_path / 'run'}"))
    assert line.startswith("error: unknown model 'nosuch': known names: smollm2-135m"), line
    assert time.monotonic() - start < 60  # start-up only (was 23 s of hub retries on top)


# --------------------------------------------------------------------------- run directory
def test_unwritable_reason(tmp_path: Path) -> None:
    assert unwritable_reason(tmp_path / "a" / "b") is None
    assert not (tmp_path / "a").exists()  # the check leaves nothing behind
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("", encoding="utf-8")
    assert unwritable_reason(tmp_path / "file" / "run") == f"{tmp_path / 'file'} is a file, not a directory"
    assert "cannot create a directory in /proc" in unwritable_reason("/proc/x/y")


@pytest.mark.parametrize("where", ["/proc/x", "file/run"])
def test_run_py_unwritable_run_dir_is_one_line(where: str, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("", encoding="utf-8")
    run_dir = where if where.startswith("/") else str(tmp_path / where)
    line = _one_line(_run_py(tmp_path, "+experiment=baseline_tfidf", f"hydra.run.dir={run_dir}"))
    assert line.startswith(f"error: {run_dir}: the run directory cannot be created: "), line
    assert "hydra.run.dir" in line
