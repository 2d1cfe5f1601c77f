"""Every experiment config composes; wrong values get messages that name the key and the allowed values."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from mtic.config_schema import ConfigError, validate_config

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml") if not p.stem.startswith("_"))  # _x: bases


def _compose(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_there_are_experiments() -> None:
    assert "st_sg" in EXPERIMENTS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_validates(name: str) -> None:
    cfg = _compose(f"+experiment={name}")
    assert cfg.experiment == name
    validate_config(cfg)
    for group in ("data", "model", "trainer", "pipeline"):
        assert "_target_" in cfg[group], f"{name}: {group} is not instantiable"


SWEEPS = sorted(p.stem for p in (CONF / "sweep").glob("*.yaml"))


@pytest.mark.parametrize("sweep", SWEEPS)
def test_sweep_configs_compose(sweep: str) -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+experiment=st_sg", f"sweep={sweep}"], return_hydra_config=True)
    assert cfg.hydra.sweeper.params, f"sweep {sweep} sets no parameters"


def test_joblib_launcher_composes() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+experiment=st_sg", "launcher=joblib"], return_hydra_config=True)
    assert "JoblibLauncher" in cfg.hydra.launcher._target_


def test_tests_write_under_the_session_temp_dir(isolated_writes: Path) -> None:
    """conftest's autouse fixture: the model cache and Hydra's run directories of every test are temp dirs."""
    from mtic.hub.registry import cache_root

    paths = _compose().paths
    assert Path(paths.cache_dir) == cache_root() == isolated_writes / "cache"
    assert Path(paths.output_dir) == isolated_writes / "outputs"


def test_experiment_is_not_in_defaults() -> None:
    assert _compose().experiment == "default"


@pytest.mark.parametrize("market", ["br", "id", "my", "ph", "sg", "th", "tw", "vn"])
def test_markets_point_at_demo_bundles(market: str) -> None:
    cfg = _compose(f"market={market}")
    assert cfg.market.bundle == f"demo:{market}"


@pytest.mark.parametrize("trainer", ["cpu", "gpu", "ddp", "fsdp", "deepspeed"])
def test_trainer_configs_compose(trainer: str) -> None:
    cfg = _compose(f"trainer={trainer}")
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"


def test_wrong_enum_value_names_key_and_choices() -> None:
    cfg = _compose("model.decode=beam")
    with pytest.raises(ConfigError, match=r"'model.decode' is 'beam'; allowed values: greedy, score"):
        validate_config(cfg)


def test_missing_required_key() -> None:
    cfg = _compose("~market.bundle")
    with pytest.raises(ConfigError, match=r"missing required key 'market.bundle'"):
        validate_config(cfg)


def test_config_schema_imports_no_torch() -> None:
    """Every `mtic` command and run.py import the schema first: its value lists come from torch-free modules."""
    probe = ("import sys, mtic.config_schema; "
             "print(sorted(m for m in ('torch', 'pytorch_lightning', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_value_lists_are_their_owners() -> None:
    """The schema checks the very lists the models use (re-exported by each owner, not copied)."""
    import mtic.config_schema as schema
    from mtic.hub import registry
    from mtic.models import htc, rollout

    assert schema.LEVEL_DECODINGS is htc.LEVEL_DECODINGS
    assert schema.DECODES is rollout.DECODES and schema.HISTORIES is rollout.HISTORIES
    assert schema.BACKBONE_KINDS is registry.BACKBONE_KINDS


def test_cli_prints_resolved_config() -> None:
    out = subprocess.run(
        [sys.executable, "run.py", "--cfg", "job", "+experiment=st_sg"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "experiment: st_sg" in out.stdout and "smollm2-135m" in out.stdout


def test_cli_rejects_bad_value_with_one_line(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "run.py", "+experiment=st_sg", "model.history=psychic", f"paths.output_dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert out.returncode == 2
    assert "'model.history' is 'psychic'; allowed values: rollout, gold, none" in out.stderr
    assert "Traceback" not in out.stderr
