"""Benchmark specs (`sgd:`, `xsid:de`, `banking77:`): parsing, the build-once cache, the CLI and Hydra markets."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from mtic.cli import main
from mtic.config_schema import validate_config
from mtic.data.bundle import read_bundle
from mtic.data.errors import BundleError
from mtic.data.sources import resolve_bundle
from mtic.dataset_factories.prepare import cached_bundle, parse_spec
from mtic.dataset_factories.prepare.sgd import SGDOptions
from mtic.dataset_factories.prepare.xsid import XSIDOptions

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
FIXTURES = ROOT / "tests" / "fixtures"
MARKETS = {"sgd": "sgd:", "sgd_small": "sgd:max_dialogues=1500,test_share=0.2", "banking77": "banking77:",
           **{f"xsid_{lang}": f"xsid:{lang}" for lang in ("en", "id", "zh", "ja", "de")}}


def test_parse_spec() -> None:
    assert parse_spec("sgd:") == ("sgd", SGDOptions())
    assert parse_spec("sgd:max_dialogues=1500, test_share=0.2") == ("sgd", SGDOptions(max_dialogues=1500, test_share=0.2))
    assert parse_spec("xsid:de,seed=2") == ("xsid", XSIDOptions(lang="de", seed=2))
    assert parse_spec("sgd:max_dialogues=null")[1].max_dialogues is None
    assert parse_spec("xsid:lang=no")[1].lang == "no"  # string options are not YAML-parsed (no -> False)


@pytest.mark.parametrize("spec, message", [
    ("sgd:foo=1", r"unknown option\(s\) foo"),
    ("sgd:de", r"'de' is not key=value"),
    ("xsid:de,en", r"'en' is not key=value"),
    ("sgd:max_dialogues=abc", r"max_dialogues must be an integer"),
    ("sgd:valid_share=0.5,test_share=0.5", r"must leave dialogues for training"),
    ("banking77:valid_share=x", r"valid_share must be a number"),
    ("xsid:de,seed=1.5", r"seed must be an integer"),
])
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(BundleError, match=message):
        parse_spec(spec)


def test_cache_builds_once_and_keys_on_options_and_data(tmp_path: Path) -> None:
    data = tmp_path / "datasets"
    shutil.copytree(FIXTURES / "xsid", data / "xsid")
    first = cached_bundle("xsid:en,n_train=5,n_unlabeled=5", data, tmp_path / "cache")
    stamp = (first / "bundle.yaml").stat().st_mtime_ns
    assert resolve_bundle("xsid:en,n_train=5,n_unlabeled=5", tmp_path / "cache", data) == first
    assert (first / "bundle.yaml").stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert first.parent.name == "bundles" and first.name.startswith("xsid-en-v")
    assert cached_bundle("xsid:en,n_train=6,n_unlabeled=5", data, tmp_path / "cache") != first
    with (data / "xsid" / "en.test.conll").open("a", encoding="utf-8") as handle:
        handle.write("# text = play some blues\n# intent = PlayMusic\n1\tplay\tPlayMusic\tO\n\n")
    rebuilt = cached_bundle("xsid:en,n_train=5,n_unlabeled=5", data, tmp_path / "cache")
    assert rebuilt != first and len(read_bundle(rebuilt).sessions["test"]) == len(read_bundle(first).sessions["test"]) + 1
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]  # no staging leftovers


def test_missing_datasets_dir_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=rf"sgd data not found: {tmp_path}/nowhere/sgd does not exist"):
        resolve_bundle("sgd:", tmp_path / "cache", tmp_path / "nowhere")


def test_cli_prepare_and_friendly_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "b77"
    assert main(["data", "prepare", "banking77", "--src", str(FIXTURES / "banking77"), "--out", str(out),
                 "--seed", "3", "--set", "n_train=5", "--set", "n_unlabeled=4"]) == 0
    bundle = read_bundle(out)
    assert bundle.meta.extra["seed"] == 3 and len(bundle.sessions["train"]) == 5
    assert "wrote the banking77 bundle" in capsys.readouterr().out
    bad = tmp_path / "bad"
    shutil.copytree(FIXTURES / "sgd", bad)
    (bad / "dev" / "schema.json").write_text('[{"service_name": "Weather_1",\n  "intents": 3}]')
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "prepare", "sgd", "--src", str(bad), "--out", str(tmp_path / "sgd")])
    assert exit_info.value.code == 2
    assert "dev/schema.json:1: each service needs 'service_name' and a list of 'intents'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "prepare", "banking77", "--src", str(FIXTURES / "banking77"), "--out", str(out)])
    assert "already exists; pass --overwrite" in capsys.readouterr().err


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize("market", sorted(MARKETS))
def test_market_configs(market: str) -> None:
    cfg = _compose("+experiment=baseline_single", f"market={market}")
    validate_config(cfg)
    assert cfg.market.name == market and cfg.market.bundle == MARKETS[market]
    assert cfg.market.encoder == ("e5-small" if market.startswith("xsid") else "minilm-l6")
    assert parse_spec(cfg.market.bundle)[0] == market.split("_")[0]


def test_tiny_run_on_a_fixture_market_reaches_results(tmp_path: Path) -> None:
    from mtic.pipelines import run

    cfg = _compose(
        "+experiment=baseline_single", "market=sgd_small", f"paths.datasets_dir={FIXTURES}",
        f"paths.cache_dir={tmp_path / 'cache'}", f"paths.run_dir={tmp_path / 'run'}", "market.encoder=tiny-bert",
        "logger=none", "callbacks=none", "trainer.max_epochs=1", "trainer.enable_checkpointing=false",
        "trainer.enable_progress_bar=false", "model.tree_height=2", "data.batch_size=8",
    )
    metrics = run(cfg)
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert "test/acc" in metrics and record["market"] == "sgd_small" and record["test_size"] >= 1
    assert next((tmp_path / "cache" / "bundles").glob("sgd-1500-v*/sessions/unlabeled.gold.jsonl"))
