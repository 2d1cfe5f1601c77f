"""The report of experiments/gpu_check.sh: one markdown file with every step's status and wall time, the test
metrics of the GPU runs, the label scorer's CUDA-vs-CPU parity, and the deploy bench's eager rows.

Parity of exact label scoring (model.decode=score): the same checkpoint and test sessions scored on CUDA (fp32)
and on the CPU; reported are the share of sessions whose predicted intent agrees and the largest difference of
the winning label's mean token log-probability (fp32 kernels differ in summation order: expect ~1e-4, and a
disagreement only where two labels nearly tie).

    python experiments/gpu_check_report.py outputs/gpu_check --precision bf16-mixed --out experiments/reports/gpu_check.md
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any


def read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def steps_table(out: Path) -> list[str]:
    lines = ["| step | status | wall s |", "|---|---|---:|"]
    with (out / "steps.tsv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            status = "ok" if row["status"] == "0" else f"FAILED (exit {row['status']})"
            lines.append(f"| {row['step']} | {status} | {row['wall_s']} |")
    return lines


def run_line(name: str, record: dict[str, Any] | None) -> str:
    if record is None:
        return f"| {name} | no results.json | | | |"
    metrics = record.get("metrics", {})
    shown = ", ".join(f"{k.split('/', 1)[1]} {v:.4f}" for k, v in sorted(metrics.items()) if k.startswith("test/"))
    precision = record.get("config", {}).get("trainer", {}).get("precision")
    return f"| {name} | {record.get('test_size')} | {shown} | {precision} | {record.get('wall_time_s')} |"


def score_parity(out: Path) -> list[str]:
    cuda, cpu = read_rows(out / "score_cuda" / "predictions.jsonl"), read_rows(out / "score_cpu" / "predictions.jsonl")
    if not cuda or len(cuda) != len(cpu):
        return [f"Label scorer parity: not measured (CUDA rows {len(cuda)}, CPU rows {len(cpu)})."]
    same = sum(a["intent"] == b["intent"] for a, b in zip(cuda, cpu))
    gap = max(abs(float(a["score"]) - float(b["score"])) for a, b in zip(cuda, cpu))
    return [f"Label scorer (decode=score) on CUDA fp32 vs CPU, {len(cuda)} test sessions, same checkpoint: intent "
            f"agreement {same}/{len(cuda)}, max |difference of the winning label's mean log-prob| {gap:.2e}."]


def bench_lines(out: Path) -> list[str]:
    bench = read_json(out / "bench" / "bench_deploy_quick_cuda.json")
    if bench is None:
        return ["Deploy bench: no bench_deploy_quick_cuda.json."]
    lines = [f"Deploy bench (--quick, {bench['host']}): 4-turn sessions at batch 1 and throughput at batch "
             f"{bench['batch_size']}.", "", "| backbone | runtime | p50 ms | p95 ms | sessions/s | accuracy |",
             "|---|---|---:|---:|---:|---:|"]
    for backbone, result in bench["backbones"].items():
        for runtime, r in result["runtimes"].items():
            lines.append(f"| {backbone} | {runtime} | {r['p50_ms']} | {r['p95_ms']} | {r['throughput_sps']} | "
                         f"{r['accuracy']:.4f} |")
    return lines


def report(out: Path, precision: str) -> str:
    lines = ["# GPU check (experiments/gpu_check.sh)", "", f"Training precision: {precision}. Runs under `{out}`.", ""]
    lines += steps_table(out)
    lines += ["", "| run | test sessions | test metrics | precision | wall s |", "|---|---:|---|---|---:|"]
    for name in ("st_sg", "score_cuda", "score_cpu", "baseline_naive"):
        lines.append(run_line(name, read_json(out / name / "results.json")))
    lines += ["", *score_parity(out), "", *bench_lines(out)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="the gpu_check output directory (steps.tsv and the runs)")
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--out", dest="report", type=Path, default=Path("experiments/reports/gpu_check.md"))
    args = parser.parse_args()
    text = report(args.out, args.precision)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(text, encoding="utf-8")
    print(text)
    print(f"[gpu_check] report: {args.report}")


if __name__ == "__main__":
    main()
