"""Cost curves of the framework at 10 k - 1 M synthetic sessions: time and peak RSS of each stage, the growth
(slope on log-log) and the largest bundle whose stage still fits in a memory budget (24 GiB by default).

    nice -n 19 env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python experiments/bench_scale.py --sizes 10000 100000 \
        --out experiments/reports/bench_scale

For each size a synthetic bundle is written (mtic/dataset_factories/synthetic.py: n sessions, n/2 single-turn
queries, `--intents` intents), then every stage of experiments/bench_scale_stages.py runs in a fresh process of its
own: wall time from the parent, peak RSS from the kernel (`os.wait4`'s ru_maxrss of that process) and the RSS after
imports (the child's own reading), so peak RSS is per stage. A stage whose RSS passes `--max-rss-gb` (polled from
/proc every 0.2 s) is stopped and recorded as such: the machine may be shared. Results accumulate in <out>.json
(a (size, stage) already measured is kept: the bench resumes), <out>.md and <out>.png are rewritten each time.

Growth: for each stage the slope b of log(y) = a + b log(n) over the measured sizes (1 = linear, 2 = quadratic);
the memory extrapolation fits peak RSS = c + m n (affine, the import baseline c included) and solves for the
budget; times are extrapolated with the power law. Wall times are not quiet timings when others share the machine.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.bench_scale_stages import STAGE_IMPORTS, STAGE_OPTIONS, STAGES, rss_mb
from mtic.dataset_factories.synthetic import write_synthetic_bundle

DEFAULT_STAGES = ("load", "retrieval", "retrieval_ann", "label", "train")
POLL_S = 0.2
GIB = 1024.0  # MiB


# --------------------------------------------------------------------------- one stage in its own process
def child(stage: str, bundle: Path, work: Path, result: Path, options: dict[str, Any]) -> None:
    """Run `stage` here (a fresh process) and write its metrics and the RSS after imports to `result`."""
    work.mkdir(parents=True, exist_ok=True)
    options = {**STAGE_OPTIONS.get(stage, {}), **options}
    for module in STAGE_IMPORTS[stage]:
        importlib.import_module(module)
    baseline, started = rss_mb(), time.perf_counter()
    metrics = STAGES[stage](bundle, work, options)
    result.write_text(json.dumps({"rss_start_mb": round(baseline, 1), "work_s": round(time.perf_counter() - started, 2),
                                  **metrics}), encoding="utf-8")


def _tree_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def measure(stage: str, bundle: Path, work: Path, options: dict[str, Any], max_rss_mb: float) -> dict[str, Any]:
    """Wall time and peak RSS of `stage` in a child process; stopped (status 'over memory cap') past max_rss_mb."""
    result = work / f"{stage}.result.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", stage, "--bundle", str(bundle),
           "--work", str(work), "--result", str(result), "--options", json.dumps(options)]
    started = time.perf_counter()
    env = {**os.environ, "MTIC_CACHE": str(work.parent / "mtic-cache")}  # the stages of one size share it
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    status, over = "ok", False
    while True:
        pid, code, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if _tree_rss_mb(proc.pid) > max_rss_mb and not over:
            over = True
            os.kill(proc.pid, signal.SIGKILL)
        time.sleep(POLL_S)
    proc.returncode = code  # reaped by wait4
    wall = time.perf_counter() - started
    if over:
        status = f"over memory cap ({max_rss_mb:.0f} MiB)"
    elif code != 0 or not result.is_file():
        status = f"failed (exit {os.waitstatus_to_exitcode(code)})"
    row = {"stage": stage, "status": status, "wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}
    if status == "ok":
        row.update(json.loads(result.read_text(encoding="utf-8")))
    return row


# --------------------------------------------------------------------------- growth and extrapolation
def growth(rows: list[dict[str, Any]], key: str) -> float | None:
    """Slope of log(key) on log(size) over the measured sizes (None with fewer than two)."""
    points = [(r["size"], r[key]) for r in rows if (r.get(key) or 0) > 0]
    if len({n for n, _ in points}) < 2:
        return None
    x, y = np.log([n for n, _ in points]), np.log([v for _, v in points])
    return float(np.polyfit(x, y, 1)[0])


def largest_fitting(rows: list[dict[str, Any]], budget_mb: float) -> float | None:
    """Size at which the affine fit peak_rss = c + m * size reaches `budget_mb` (None: not growing / < 2 sizes)."""
    points = [(r["size"], r["peak_rss_mb"]) for r in rows]
    if len({n for n, _ in points}) < 2:
        return None
    slope, intercept = np.polyfit([n for n, _ in points], [v for _, v in points], 1)
    return None if slope <= 0 else float((budget_mb - intercept) / slope)


def fits(runs: list[dict[str, Any]], budget_gb: float) -> dict[str, Any]:
    out = {}
    for stage in dict.fromkeys(r["stage"] for r in runs):
        rows = sorted((r for r in runs if r["stage"] == stage and r["status"] == "ok"), key=lambda r: r["size"])
        time_slope, n_max = growth(rows, "work_s"), largest_fitting(rows, budget_gb * GIB)
        seconds_at_max = None
        if time_slope is not None and n_max is not None and rows:
            seconds_at_max = rows[-1]["work_s"] * (n_max / rows[-1]["size"]) ** time_slope
        extra = [{"size": r["size"], "value": r["peak_rss_mb"] - r.get("rss_start_mb", 0.0)} for r in rows]
        out[stage] = {"time_slope": _round(time_slope), "rss_growth_slope": _round(growth(extra, "value")),
                      "largest_size_in_budget": None if n_max is None else int(n_max),
                      "work_s_at_that_size": _round(seconds_at_max, 0)}
    return out


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def verdict(slope: float | None) -> str:
    if slope is None:
        return "–"
    kind = "linear" if 0.85 <= slope <= 1.15 else ("sub-linear" if slope < 0.85 else "super-linear")
    return f"{slope:.2f} ({kind})"


# --------------------------------------------------------------------------- report
STAGE_DETAIL = {  # what each stage's own numbers are, for the table
    "load": lambda r: (f"{r['sessions']} sessions, {r['single_turn']} single-turn; cold read {r['cold_s']} s, warm "
                       f"{r['warm_s']} s ({r['reader']})"),
    "retrieval": lambda r: (f"{r['index']} index of {r['demos_indexed']} demos: build {r['index_build_s']} s (embed "
                            f"{r['index_embed_s']} s); {r['sessions']} sessions in {r['retrieve_s']} s (embed "
                            f"{r['retrieve_embed_s']} s), {r['sessions_per_s']}/s"
                            + ("" if r["recall_at_k"] is None else f"; recall@k {r['recall_at_k']}")),
    "label": lambda r: (f"{r['labelled_sessions']} sessions, {r['llm_prompts']} prompts in {r['label_s']} s "
                        f"(embed {r['embed_s']} s), {r['sessions_per_s']}/s"),
    "train": lambda r: (f"{r['train_examples']} examples encoded in {r['encode_s']} s; {r['examples_per_s']} "
                        f"examples/s ({r['backbone']}, batch {r['batch_size']}, {r['timed_batches']} timed batches)"),
}
STAGE_DETAIL["retrieval_ann"] = STAGE_DETAIL["retrieval"]


def markdown(report: dict[str, Any]) -> str:
    lines = ["# Cost curves on synthetic bundles (experiments/bench_scale.py)", "",
             f"Machine: {report['machine']}. {report['note']}",
             (f"Code measured: {', '.join(report['code'])}. Bundles: {report['generator']}, n sessions and n/2 single-turn queries. "
              "Stand-ins: a hashing embedder (384 dims), an instant LLM, tiny-bert (experiments/bench_scale_stages.py)."),
             "",
             "| sessions | stage | wall s | work s | peak RSS MiB | RSS after imports MiB | detail |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(report["runs"], key=lambda r: (r["size"], DEFAULT_STAGES.index(r["stage"]))):
        detail = STAGE_DETAIL[r["stage"]](r) if r["status"] == "ok" else r["status"]
        lines.append(f"| {r['size']:,} | {r['stage']} | {r['wall_s']} | {r.get('work_s', '–')} | {r['peak_rss_mb']} | "
                     f"{r.get('rss_start_mb', '–')} | {detail} |")
    lines += ["", ("Wall s: the whole process (interpreter and imports included); work s: the stage after its "
                   "imports. Growth: slope on log-log of work s over the measured sizes; the largest bundle whose "
                   f"stage fits in {report['budget_gb']} GiB comes from an affine fit of peak RSS, its time from the "
                   "power law:"), "",
              "| stage | time slope | RSS slope (above imports) | largest size in budget | work s at that size |",
              "|---|---|---|---|---|"]
    for stage, fit in report["fits"].items():
        n_max = fit["largest_size_in_budget"]
        lines.append(f"| {stage} | {verdict(fit['time_slope'])} | {verdict(fit['rss_growth_slope'])} | "
                     f"{'–' if n_max is None else f'{n_max:,}'} | {fit['work_s_at_that_size'] or '–'} |")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for stage in DEFAULT_STAGES:
        rows = sorted((r for r in report["runs"] if r["stage"] == stage and r["status"] == "ok"),
                      key=lambda r: r["size"])
        if rows:
            sizes = [r["size"] for r in rows]
            left.plot(sizes, [r["wall_s"] for r in rows], marker="o", label=stage)
            right.plot(sizes, [r["peak_rss_mb"] / GIB for r in rows], marker="o", label=stage)
    right.axhline(report["budget_gb"], color="grey", linestyle="--", label=f"{report['budget_gb']} GiB")
    for ax, title in ((left, "wall time (s)"), (right, "peak RSS (GiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("sessions in the bundle")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# --------------------------------------------------------------------------- main
def code_version() -> str:
    """The checkout measured: its commit, and whether the working tree had uncommitted changes."""
    described = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
                               check=False,
                               timeout=30)
    return f"commit {described.stdout.strip() or 'unknown'}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--stages", nargs="+", default=list(DEFAULT_STAGES), choices=list(DEFAULT_STAGES))
    parser.add_argument("--intents", type=int, default=100)
    parser.add_argument("--train-batches", type=int, default=60, help="the epoch slice of the train stage")
    parser.add_argument("--budget-gb", type=float, default=24.0, help="memory budget of the extrapolation")
    parser.add_argument("--max-rss-gb", type=float, default=6.0, help="a stage past this RSS is stopped")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mtic-bench-scale"))
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "reports" / "bench_scale")
    parser.add_argument("--note", default="Wall times are not quiet timings: the machine was shared with other jobs.")
    parser.add_argument("--child", choices=list(STAGES), help=argparse.SUPPRESS)  # the rest: a stage's process
    parser.add_argument("--bundle", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.child:
        child(args.child, args.bundle, args.work, args.result, json.loads(args.options))
        return
    out_json = args.out.with_suffix(".json")
    report = json.loads(out_json.read_text(encoding="utf-8")) if out_json.is_file() else {"runs": []}
    done = {(r["size"], r["stage"]) for r in report["runs"] if r["status"] == "ok"}
    for size in args.sizes:
        bundle = args.workdir / f"bundle-{size}"
        if not (bundle / "sessions" / "unlabeled.jsonl").is_file():
            started = time.perf_counter()
            write_synthetic_bundle(bundle, n_sessions=size, n_queries=size // 2, n_intents=args.intents, seed=0)
            print(f"[bench] wrote {bundle} in {time.perf_counter() - started:.1f} s", flush=True)
        for stage in args.stages:
            if (size, stage) in done:
                continue
            if stage == "retrieval_ann" and any(r["size"] == size and r.get("index") == "hnsw" for r in report["runs"]):
                print(f"[bench] {size} retrieval_ann: skipped, the configured retrieval is HNSW at this size")
                continue
            work = args.workdir / f"work-{size}" / stage
            row = {"size": size, "code": code_version(),
                   **measure(stage, bundle, work, {"train_batches": args.train_batches}, args.max_rss_gb * GIB)}
            print(f"[bench] {size} {stage}: {row['status']}, {row['wall_s']} s, peak {row['peak_rss_mb']} MiB",
                  flush=True)
            report["runs"] = [r for r in report["runs"] if (r["size"], r["stage"]) != (size, stage)] + [row]
            write_report(report, args)
    write_report(report, args)


def write_report(report: dict[str, Any], args: argparse.Namespace) -> None:
    """<out>.json, .md and .png from every run measured so far."""
    report.update(machine=f"{platform.node()}: {os.cpu_count()} CPUs, {platform.python_version()}, "
                          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
                  note=args.note, budget_gb=args.budget_gb, fits=fits(report["runs"], args.budget_gb),
                  generator=f"{write_synthetic_bundle.__module__}.write_synthetic_bundle",
                  code=sorted({r.get("code", "unrecorded") for r in report["runs"]}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    args.out.with_suffix(".md").write_text(markdown(report), encoding="utf-8")
    plot(report, args.out.with_suffix(".png"))

if __name__ == "__main__":
    main()
