"""A user's bundle is filed under its own market, with its own languages, and gets a multilingual encoder when a
language is not English; `mtic data stats` counts texts by language (script) and names the encoder."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import write_tiny_bundle
from hydra import compose, initialize_config_dir

from mtic.data.languages import encoder_for, language_counts, language_mismatch, script_of
from mtic.data.stats import bundle_dir_stats, stats_report

ROOT = Path(__file__).resolve().parents[1]
CHINESE = [("我的订单在哪里", "track"), ("包裹还没到", "track"), ("我要取消订单", "cancel"), ("请帮我取消", "cancel"),
           ("取消进度怎么样", "cancel_status"), ("取消成功了吗", "cancel_status"), ("退款还没到账", "refund"),
           ("什么时候退款", "refund")]


def write_chinese_bundle(root: Path, languages: list[str] | None = None) -> Path:
    write_tiny_bundle(root)
    meta = {"name": "shop", "market": "shop_cn", "languages": languages or ["zh"]}
    (root / "bundle.yaml").write_text(yaml.safe_dump(meta, allow_unicode=True), encoding="utf-8")
    (root / "single_turn.jsonl").write_text(
        "".join(json.dumps({"text": t, "intent": i}, ensure_ascii=False) + "\n" for t, i in CHINESE), encoding="utf-8")
    return root


def _market(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+experiment=baseline_naive", *overrides])
    return {"name": cfg.market.name, "languages": list(cfg.market.languages), "encoder": cfg.market.encoder,
            "backbone": cfg.model.backbone}


def test_scripts_languages_and_encoder() -> None:
    assert [script_of(t) for t in ("我的包裹", "พัสดุของฉัน", "Gói hàng của tôi", "東京へ行きます", "123 :)")] == \
        ["Han", "Thai", "Latin", "Japanese", "other"]
    assert encoder_for(["en"]) == encoder_for(["EN-us"]) == "minilm-l6"
    assert encoder_for(["en", "zh"]) == encoder_for(["id"]) == "e5-small"
    counts = language_counts(["我的包裹", "where is it", "still nothing", "東京へ行きます", "42"], ["en", "zh"])
    assert counts == {"en": 2, "zh": 1, "(Japanese)": 1}  # digits only: no language
    assert language_mismatch(counts) is None  # 1 of 4 in an undeclared script
    warning = language_mismatch(language_counts(["我的包裹", "包裹还没到", "ok"], ["en"]))
    assert warning is not None and warning.startswith("Han 67% of the texts")


def test_market_follows_the_bundle_directory(tmp_path: Path) -> None:
    bundle = write_chinese_bundle(tmp_path / "shop")
    own = {"name": "shop_cn", "languages": ["zh"], "encoder": "e5-small", "backbone": "e5-small"}
    assert _market(f"market.bundle={bundle}") == own
    assert _market(f"paths.data_dir={bundle}", "market=id") == own
    assert _market(f"market.bundle={bundle}", "market.name=mine")["name"] == "mine"  # an explicit value wins
    assert _market(f"market.bundle={bundle}", "market.encoder=minilm-l6")["backbone"] == "minilm-l6"
    english = write_chinese_bundle(tmp_path / "en", languages=["en"])
    assert _market(f"market.bundle={english}")["encoder"] == "minilm-l6"
    # built-in specs keep the market file's own name and languages; a missing directory is the reader's error later
    assert _market() == {"name": "sg", "languages": ["en"], "encoder": "minilm-l6", "backbone": "minilm-l6"}
    assert _market("market=tw")["languages"] == ["zh-TW"] and _market("market=tw")["encoder"] == "e5-small"
    assert _market("market=xsid_en")["encoder"] == "e5-small"  # xSID pins e5 for every language
    assert _market(f"market.bundle={tmp_path / 'nowhere'}")["name"] == "sg"


def test_a_run_is_filed_and_recorded_under_the_bundles_market(tmp_path: Path) -> None:
    bundle = write_chinese_bundle(tmp_path / "shop")
    output = tmp_path / "outputs"
    done = subprocess.run([sys.executable, "run.py", "+experiment=baseline_tfidf", f"market.bundle={bundle}",
                           f"paths.output_dir={output}"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    [results_file] = list((output / "runs" / "baseline_tfidf" / "shop_cn").glob("*/results.json"))
    results = json.loads(results_file.read_text(encoding="utf-8"))
    assert results["market"] == "shop_cn" and results["languages"] == ["zh"]
    assert results["market_choice"] == {"name": "shop_cn", "languages": ["zh"], "encoder": "e5-small",
                                        "encoder_reason": "multilingual: zh not English",
                                        "from": str(bundle / "bundle.yaml")}
    assert f"market shop_cn (from {bundle / 'bundle.yaml'}), languages zh, encoder e5-small" in done.stderr + done.stdout


def test_stats_count_texts_by_language_and_name_the_encoder(tmp_path: Path) -> None:
    bundle = write_chinese_bundle(tmp_path / "shop")
    row = bundle_dir_stats(bundle)
    assert row["language_counts"] == {"(Latin)": 10, "zh": 8}  # the tiny bundle's 10 session turns are English
    assert row["encoder"] == "e5-small (multilingual: zh not English)"
    report = stats_report([bundle])
    assert "| (Latin) 10, zh 8 | e5-small (multilingual: zh not English) |" in report
    assert report.strip().splitlines()[-1].startswith(f"warning: {bundle}: Latin 56% of the texts")
    english = write_tiny_bundle(tmp_path / "tiny")
    assert "warning" not in stats_report([english])


@pytest.mark.parametrize("market", ["sg", "tw", "sgd_small", "xsid_zh", "banking77"])
def test_market_files_declare_what_their_spec_is(market: str) -> None:
    declared = yaml.safe_load((ROOT / "conf" / "market" / f"{market}.yaml").read_text(encoding="utf-8"))["declared"]
    assert _market(f"market={market}")["name"] == declared["name"] == market
