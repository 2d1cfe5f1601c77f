"""Paper-style comparison tables from `results.json` files: rows = settings, columns = markets + weighted mean."""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtic.eval.results import RESULTS_FILE
from mtic.eval.supervision import Supervision

DEFAULT_ROW_KEYS = ("method", "backbone", "target", "cross_lingual", "decode", "view", "prompt", "self_consistency",
                    "candidates", "pseudo_selection", "global_head", "local_chain", "label_attention")
SUPERVISION = "supervision"   # a row key: the gold label sources the run read (training + model selection)
AVERAGE = "avg"
METHOD_ORDER = ("tfidf", "single_turn", "naive_concat", "last_two", "selective_concat", "selective_concat_gold",
                "symbol_tuning", "lara", "lara_pl", "clara", "st_distill", "htc_supervised")  # Table 3's order
MISSING = "–"
FLOOR_METHOD = "tfidf"        # TF-IDF + logistic regression: the floor every row is read against
BELOW_FLOOR = "↓"
FLOOR_NOTE = (f"{BELOW_FLOOR} = below the TF-IDF + LR floor of the same market (the TF-IDF row of the same view "
              "when there is one, else the best TF-IDF row)")


@dataclass
class Table:
    """A metric per (row, market); `average` is weighted by test size over the markets a row has."""

    metric: str
    row_keys: tuple[str, ...]
    markets: list[str]
    cells: dict[tuple, dict[str, tuple[float, int]]] = field(default_factory=dict)

    def rows(self) -> list[tuple]:
        """Rows in the paper's order of methods (baselines, LLM methods, upper bound), then by their values."""
        def key(row: tuple) -> tuple:
            rank = dict(zip(self.row_keys, row)).get("method")
            return (METHOD_ORDER.index(rank) if rank in METHOD_ORDER else len(METHOD_ORDER), *map(str, row))

        return sorted(self.cells, key=key)

    def average(self, row: tuple) -> float | None:
        """Mean of the row's values weighted by each market's test size; None unless the row has every market of
        the table (an average over fewer markets would not be comparable with the others)."""
        values = self.cells.get(row, {})
        total = sum(n for _, n in values.values())
        if not values or total == 0 or set(values) != set(self.markets):
            return None
        return sum(v * n for v, n in values.values()) / total

    def value(self, row: tuple, market: str) -> float | None:
        cell = self.cells.get(row, {}).get(market)
        return None if cell is None else cell[0]


RECORDS_FILE = "records.jsonl"


def find_results(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Load every results.json under the given run or multirun directories (or files), and every record of a
    `records.jsonl` (one results.json per line, as `write_records` keeps them beside a table)."""
    records = []
    for path in map(Path, paths):
        if path.is_file() and path.suffix == ".jsonl":
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise ValueError(f"{path}:{number}: not a JSON record ({err.msg})") from None
                    records.append({**record, "_path": record.get("_path") or f"{path}:{number}"})
            continue
        files = [path] if path.is_file() else sorted(path.rglob(RESULTS_FILE))
        for file in files:
            try:
                record = json.loads(file.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ValueError(f"{file}: not a results.json record ({err})") from None
            record["_path"] = str(file)
            records.append(record)
    return records


def write_records(records: Sequence[dict[str, Any]], path: Path) -> Path:
    """The run records a table was made from, one per line (sorted by where they came from): committed beside the
    table, they let anyone regenerate it after the run directories are gone (`compare.py <dir>/records.jsonl`)."""
    lines = [json.dumps(r, sort_keys=True, ensure_ascii=False) for r in sorted(records, key=lambda r: str(r.get("_path")))]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def build_table(records: Sequence[dict[str, Any]], metric: str = "test/acc", row_keys: Sequence[str] = DEFAULT_ROW_KEYS) -> Table:
    """One table; row keys that never vary across records are dropped. Later runs override earlier ones."""
    keys = tuple(k for k in row_keys if k == SUPERVISION or len({str(row_value(r, k)) for r in records}) > 1) \
        or tuple(row_keys[:1])
    markets = sorted({r["market"] for r in records})
    table = Table(metric=metric, row_keys=keys, markets=markets)
    for record in records:
        value = record.get("metrics", {}).get(metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        row = tuple(row_value(record, k) for k in keys)
        table.cells.setdefault(row, {})[record["market"]] = (float(value), int(record.get("test_size") or 0))
    return table


def row_value(record: dict[str, Any], key: str) -> Any:
    """A record's value for a row key; `supervision` is shown as its sources (e.g. single_turn+single_turn.valid); a
    dotted key absent at the top level reads nested fields (`config.teacher.backbone.name`), None where one is missing."""
    if key == SUPERVISION:
        return Supervision.column(record.get(SUPERVISION))
    if key in record or "." not in key:
        return record.get(key)
    value: Any = record
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _fmt(value: float | None, scale: float) -> str:
    return MISSING if value is None else f"{value * scale:.2f}"


def floor_of(table: Table, row: tuple, market: str) -> float | None:
    """The TF-IDF floor a row's cell is read against: the TF-IDF row of the same view in that market when it
    ran, else the best TF-IDF row of that market; None for TF-IDF rows and tables without one."""
    keys = table.row_keys
    if "method" not in keys:
        return None
    method = keys.index("method")
    if row[method] == FLOOR_METHOD:
        return None
    floors = {r: table.value(r, market) for r in table.cells if r[method] == FLOOR_METHOD}
    floors = {r: v for r, v in floors.items() if v is not None}
    if "view" in keys:
        view = keys.index("view")
        same = [v for r, v in floors.items() if r[view] == row[view]]
        if same:
            return max(same)
    return max(floors.values()) if floors else None


def to_markdown(table: Table, scale: float = 100.0) -> str:
    """Markdown table; missing cells show as '–', never as zero; cells under the TF-IDF floor carry '↓'."""
    header = [*table.row_keys, *table.markets, f"{AVERAGE} (weighted)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    marked = False
    for row in table.rows():
        values = []
        for market in table.markets:
            value, floor = table.value(row, market), floor_of(table, row, market)
            below = value is not None and floor is not None and value < floor
            marked |= below
            values.append(_fmt(value, scale) + (f" {BELOW_FLOOR}" if below else ""))
        values.append(_fmt(table.average(row), scale))
        settings = ["" if x is None else str(x) for x in row]  # a setting that does not apply to this row
        lines.append("| " + " | ".join([*settings, *values]) + " |")
    if marked:
        lines += ["", FLOOR_NOTE]
    return "\n".join(lines)


def write_csv(table: Table, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*table.row_keys, *table.markets, AVERAGE])
        for row in table.rows():
            values = [table.value(row, m) for m in table.markets] + [table.average(row)]
            writer.writerow([*row, *("" if v is None else f"{v:.6f}" for v in values)])


def row_label(keys: Sequence[str], row: tuple) -> str:
    """A legend entry: the first key's value alone, the others as key=value (`naive_concat, global_head=False`)."""
    parts = [str(row[0])] + [f"{k}={v}" for k, v in zip(keys[1:], row[1:])]
    return ", ".join(parts)


def plot_table(table: Table, path: Path, scale: float = 100.0) -> None:
    """Grouped bar chart: one group per market (+ weighted average), one bar per row; missing bars are absent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [*table.markets, AVERAGE]
    rows = table.rows()
    width = 0.8 / max(1, len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(columns) * max(1, len(rows)) * 0.5), 4))
    for k, row in enumerate(rows):
        xs, ys = [], []
        for c, column in enumerate(columns):
            value = table.average(row) if column == AVERAGE else table.value(row, column)
            if value is not None:
                xs.append(c + k * width)
                ys.append(value * scale)
        ax.bar(xs, ys, width=width, label=row_label(table.row_keys, row))
    ax.set_xticks([c + width * (len(rows) - 1) / 2 for c in range(len(columns))], columns)
    ax.set_ylabel(table.metric + (" (%)" if scale == 100 else ""))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


TABLE4_COLUMNS = ("method", "candidates", "market", "precision w/o SC", "precision w/ SC", "kept share")


def table4_markdown(records: Sequence[dict[str, Any]]) -> str:
    """The paper's Table 4 layout from pseudo-labelling runs (LARA-PL, CLARA, st_distill): pseudo-label precision
    against the unlabelled sessions' gold labels without and with self-consistency, and the share of sessions kept
    (%). For st_distill the selection is the teacher's confidence threshold: 'w/o SC' scores all its answers, 'w/ SC'
    the kept ones, and its candidates cell names the teacher. A run without a selection (self_consistency none:
    LARA-PL) shows no 'w/ SC' cell."""
    rows = []
    for record in records:
        metrics = record.get("metrics", {})
        if "pseudo/kept_share" not in metrics:
            continue
        with_sc = metrics.get("pseudo/precision_with_sc") if record.get("self_consistency") != "none" else None
        teacher = row_value(record, "config.teacher.backbone.name")  # st_distill: its teacher in the candidates column
        cells = [record.get("method"), record.get("candidates") or (f"teacher {teacher}" if teacher else "–"),
                 record.get("market"),
                 metrics.get("pseudo/precision_without_sc"), with_sc, metrics.get("pseudo/kept_share")]
        rows.append(cells)
    order = {m: k for k, m in enumerate(METHOD_ORDER)}
    rows.sort(key=lambda r: (str(r[2]), order.get(r[0], len(order)), str(r[1])))
    lines = ["| " + " | ".join(TABLE4_COLUMNS) + " |", "|---|---|---|---:|---:|---:|"]
    for row in rows:
        shown = [str(x) for x in row[:3]] + [MISSING if v is None else f"{100.0 * v:.1f}" for v in row[3:]]
        line = "| " + " | ".join(shown) + " |"
        if line not in lines:  # runs that share one pseudo-labelling (another view or selection) are one row
            lines.append(line)
    return "\n".join(lines)
