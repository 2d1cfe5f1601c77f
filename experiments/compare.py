"""Compare runs: `python experiments/compare.py outputs/multiruns/<experiment>/<time> [...] --out reports/`.

`--wandb ENTITY/PROJECT` (repeatable) reads the same records from W&B runs instead of (or beside) local
directories; the API key comes from the environment (WANDB_API_KEY), never from the command line.

Prints Markdown tables in the paper's layout (rows = settings, columns = markets + average weighted by test
size) and writes Markdown, CSV and a PNG bar chart per metric. Missing cells show as '–', never as zero.
With --out the run records read go to <out>/records.jsonl too: `compare.py <out>/records.jsonl ...` remakes the
tables from it alone.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtic.eval.compare import (
    DEFAULT_ROW_KEYS,
    RECORDS_FILE,
    build_table,
    find_results,
    plot_table,
    table4_markdown,
    to_markdown,
    write_csv,
    write_records,
)
from mtic.eval.wandb_records import records_from_wandb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="run / multirun directories, results.json files or records.jsonl files")
    parser.add_argument("--wandb", action="append", default=[], metavar="ENTITY/PROJECT",
                        help="read run records from a W&B project (runs logged with logger=wandb)")
    parser.add_argument("--group", default=None, help="with --wandb: only runs of this W&B group (= experiment)")
    parser.add_argument("--metric", action="append", help="metric key(s), default test/acc")
    parser.add_argument("--rows", default=",".join(DEFAULT_ROW_KEYS), help="comma-separated result fields for rows")
    parser.add_argument("--table4", action="store_true",
                        help="the paper's Table 4 layout instead: pseudo-label precision w/o and w/ self-consistency "
                             "and kept share of every LARA-PL / CLARA run")
    parser.add_argument("--out", default=None, help="directory for .md/.csv/.png (default: print only)")
    parser.add_argument("--readme", nargs=2, metavar=("FILE", "SECTION"), default=None,
                        help="also write the (first metric's) table into FILE between <!-- SECTION:start --> and "
                             "<!-- SECTION:end -->, e.g. --readme README.md table3")
    args = parser.parse_args(argv)
    if not args.runs and not args.wandb:
        parser.error("give run directories and/or --wandb ENTITY/PROJECT")
    try:
        records = find_results(args.runs)
    except ValueError as err:  # a file that is not a run record: one line naming it
        print(f"error: {err}", file=sys.stderr)
        return 2
    for project in args.wandb:
        records += records_from_wandb(project, filters={"group": args.group} if args.group else None)
    if not records:
        print(f"no run records in {args.runs + args.wandb}", file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
        print(f"wrote {write_records(records, out / RECORDS_FILE)} ({len(records)} run records)")
    if args.table4:
        markdown = table4_markdown(records)
        print(markdown)
        if out:
            (out / "table4.md").write_text(markdown + "\n", encoding="utf-8")
        if args.readme:
            replace_section(Path(args.readme[0]), args.readme[1], markdown)
        return 0
    for k, metric in enumerate(args.metric or ["test/acc"]):
        table = build_table(records, metric=metric, row_keys=args.rows.split(","))
        markdown = to_markdown(table)
        print(f"\n### {metric} ({len(records)} runs)\n\n{markdown}")
        if out:
            stem = metric.replace("/", "_")
            (out / f"{stem}.md").write_text(markdown + "\n", encoding="utf-8")
            write_csv(table, out / f"{stem}.csv")
            plot_table(table, out / f"{stem}.png")
            print(f"\nwrote {out / stem}.md, .csv, .png")
        if args.readme and k == 0:
            replace_section(Path(args.readme[0]), args.readme[1], markdown)
            print(f"\nwrote {args.readme[1]} into {args.readme[0]}")
    return 0


def replace_section(path: Path, section: str, markdown: str) -> None:
    """Replace the text between `<!-- SECTION:start -->` and `<!-- SECTION:end -->` of a file (both must exist)."""
    text = path.read_text(encoding="utf-8")
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise SystemExit(f"error: {path}: needs exactly one '{start}' before one '{end}'")
    head, rest = text.split(start)
    _, tail = rest.split(end)
    path.write_text(f"{head}{start}\n{markdown}\n{end}{tail}", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
