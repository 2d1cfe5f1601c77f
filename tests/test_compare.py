"""Comparison tables: weighted averages by test size, missing cells shown as missing."""
from __future__ import annotations

import json
from pathlib import Path

from mtic.eval.compare import build_table, find_results, plot_table, to_markdown, write_csv


def _result(root: Path, name: str, market: str, target: str, acc: float, n: int) -> None:
    run = root / name
    run.mkdir(parents=True)
    record = {"experiment": "st", "market": market, "method": "symbol_tuning", "target": target, "test_size": n,
              "metrics": {"test/acc": acc}}
    (run / "results.json").write_text(json.dumps(record), encoding="utf-8")


def test_weighted_average_and_missing_cells(tmp_path: Path) -> None:
    _result(tmp_path, "a", "sg", "compressed", 0.80, 100)
    _result(tmp_path, "b", "id", "compressed", 0.50, 300)
    _result(tmp_path, "c", "sg", "original", 0.70, 100)
    table = build_table(find_results([tmp_path]))
    assert table.row_keys == ("target",)
    assert table.markets == ["id", "sg"]
    assert abs(table.average(("compressed",)) - (0.8 * 100 + 0.5 * 300) / 400) < 1e-9
    assert table.value(("original",), "id") is None
    markdown = to_markdown(table)
    assert "| original | – | 70.00 | – |" in markdown  # no average over a subset of the markets
    assert "| compressed | 50.00 | 80.00 | 57.50 |" in markdown
    write_csv(table, tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text().splitlines()[2].startswith("original,,0.700000")
    plot_table(table, tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 1000


def test_legend_labels_name_every_setting_but_the_first() -> None:
    from mtic.eval.compare import row_label

    assert row_label(("method", "global_head"), ("naive_concat", False)) == "naive_concat, global_head=False"
    assert row_label(("target",), ("compressed",)) == "compressed"


def test_rows_follow_the_papers_method_order(tmp_path: Path) -> None:
    for k, method in enumerate(["htc_supervised", "clara", "single_turn", "aaa_custom", "naive_concat"]):
        run = tmp_path / method
        run.mkdir()
        (run / "results.json").write_text(json.dumps({"market": "sg", "method": method, "test_size": 10,
                                                      "metrics": {"test/acc": 0.1 * k}}), encoding="utf-8")
    table = build_table(find_results([tmp_path]), row_keys=("method",))
    assert [r[0] for r in table.rows()] == ["single_turn", "naive_concat", "clara", "htc_supervised", "aaa_custom"]


def test_cells_below_the_tfidf_floor_are_marked(tmp_path: Path) -> None:
    rows = [("tfidf", "NaiveConcatView", "sg", 0.60), ("tfidf", "LastQueryView", "sg", 0.50),
            ("naive_concat", "NaiveConcatView", "sg", 0.55), ("single_turn", "LastQueryView", "sg", 0.52),
            ("clara", "NaiveConcatView", "sg", 0.61), ("naive_concat", "NaiveConcatView", "id", 0.40)]
    for k, (method, view, market, acc) in enumerate(rows):
        run = tmp_path / str(k)
        run.mkdir()
        record = {"market": market, "method": method, "view": view, "test_size": 10, "metrics": {"test/acc": acc}}
        (run / "results.json").write_text(json.dumps(record), encoding="utf-8")
    markdown = to_markdown(build_table(find_results([tmp_path]), row_keys=("method", "view")))
    assert "| naive_concat | NaiveConcatView | 40.00 | 55.00 ↓ |" in markdown  # 55 < 60 (same view); id: no floor
    assert "| single_turn | LastQueryView | – | 52.00 |" in markdown  # 52 >= 50 (its view's floor)
    assert "| clara | NaiveConcatView | – | 61.00 |" in markdown
    assert "| tfidf | LastQueryView | – | 50.00 |" in markdown and "below the TF-IDF" in markdown


def test_table4_lists_pseudo_label_precision_per_run() -> None:
    from mtic.eval.compare import table4_markdown

    records = [
        {"method": "clara", "market": "sg", "self_consistency": "unanimous", "candidates": "single_turn_htc",
         "metrics": {"pseudo/kept_share": 0.6, "pseudo/precision_without_sc": 0.5, "pseudo/precision_with_sc": 0.7}},
        {"method": "lara_pl", "market": "sg", "self_consistency": "none", "candidates": "none",
         "metrics": {"pseudo/kept_share": 1.0, "pseudo/precision_without_sc": 0.5, "pseudo/precision_with_sc": 0.5}},
        {"method": "naive_concat", "market": "sg", "metrics": {"test/acc": 0.5}},
    ]
    lines = table4_markdown(records).splitlines()
    assert lines[2:] == ["| lara_pl | none | sg | 50.0 | – | 100.0 |",
                         "| clara | single_turn_htc | sg | 50.0 | 70.0 | 60.0 |"]


def test_kept_records_remake_the_same_table_after_the_runs_are_gone(tmp_path: Path) -> None:
    import shutil

    import pytest

    from mtic.eval.compare import write_records

    runs = tmp_path / "runs"
    _result(runs, "a", "sg", "compressed", 0.80, 100)
    _result(runs, "b", "id", "compressed", 0.50, 300)
    _result(runs, "c", "sg", "original", 0.70, 100)
    before = to_markdown(build_table(find_results([runs])))
    kept = write_records(find_results([runs]), tmp_path / "records.jsonl")
    shutil.rmtree(runs)
    records = find_results([kept])
    assert len(records) == 3 and to_markdown(build_table(records)) == before
    assert records[0]["_path"].endswith("a/results.json")  # where each record came from is kept
    kept.write_text(kept.read_text() + "{not json\n")
    with pytest.raises(ValueError, match=r"records.jsonl:4: not a JSON record"):
        find_results([kept])


def test_a_broken_results_file_is_named(tmp_path: Path) -> None:
    import pytest

    broken = tmp_path / "run" / "results.json"
    broken.parent.mkdir()
    broken.write_text('{"market": "sg", ', encoding="utf-8")
    with pytest.raises(ValueError, match=r"run/results.json: not a results.json record"):
        find_results([tmp_path])


def test_a_dotted_row_key_reads_nested_fields() -> None:
    from mtic.eval.compare import row_value

    record = {"method": "st_distill", "config": {"teacher": {"backbone": {"name": "gemma3-270m"}}}, "a.b": 1}
    assert row_value(record, "config.teacher.backbone.name") == "gemma3-270m"
    assert row_value(record, "config.teacher.lr") is None and row_value({"method": "tfidf"}, "config.teacher") is None
    assert row_value(record, "a.b") == 1  # a top-level key with a dot wins
