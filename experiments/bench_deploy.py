"""Deployment benchmark: PyTorch eager fp32 vs ONNX fp32 vs ONNX int8 on CPU, per encoder.

For every backbone (default e5-small and minilm-l6) a naive-concat HTC of the demo market (`+experiment=
baseline_naive`) is trained (or `--checkpoint NAME=PATH` reused), exported with `mtic export` defaults, and:
- latency per 4-turn session at batch 1 (p50/p95/p99 ms, the whole `IntentClassifier.predict` call: view,
  tokenisation, model, formatting), over the test sessions made 4 turns long (last 4 turns; shorter sessions get
  earlier queries of other sessions prepended);
- throughput at batch 32 (sessions/s, `predict_batch`), its analytic GFLOP/s and share of the machine's fp32
  matmul peak (best torch sgemm GFLOP/s on the same threads);
- accuracy on the test split (natural sessions) of each runtime;
- the service (`mtic serve`, int8, its own process, direct and micro-batching) under a load test of
  `--load-requests` requests, `--load-concurrency` at a time (single 4-turn sessions, batches of 8, and batches of
  8 sessions long enough to hit the max length): peak RSS (sampled every 20 ms), requests/s, 5xx count.

    python experiments/bench_deploy.py --threads 2            # full run (minutes; run it on a quiet machine)
    python experiments/bench_deploy.py --quick                # smoke test: tiny training, few timings
    python experiments/bench_deploy.py --quick --device cuda  # + the eager PyTorch row on the GPU (trains there too)
Writes experiments/reports/bench_deploy.{md,json} (`--quick`: bench_deploy_quick.*; `--device cuda`: *_cuda.*).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbones", nargs="+", default=["e5-small", "minilm-l6"])
    p.add_argument("--market", default="sg")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--checkpoint", action="append", default=[], help="NAME=PATH: reuse a trained HTC checkpoint")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the experiment's)")
    p.add_argument("--work-dir", default=str(ROOT / "outputs" / "bench_deploy"), help="runs and exports")
    p.add_argument("--sessions", type=int, default=200, help="4-turn sessions timed at batch 1")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--throughput-rounds", type=int, default=3, help="passes over the sessions at batch 32")
    p.add_argument("--load-requests", type=int, default=1000, help="requests of the service load test")
    p.add_argument("--load-concurrency", type=int, default=200)
    p.add_argument("--quick", action="store_true", help="smoke settings: 1 short epoch, few timings")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cuda: train with trainer=gpu and add the eager fp32 row on the GPU (eager-fp32-cuda)")
    p.add_argument("--out", default=str(ROOT / "experiments" / "reports"))
    args = p.parse_args()
    if args.quick:
        args.sessions, args.throughput_rounds, args.load_requests = min(args.sessions, 20), 1, 200
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            p.error(f"--device cuda: no CUDA device (torch {torch.__version__}, torch.cuda.is_available() is False)")
    return args


# --------------------------------------------------------------------------- data and models
def four_turn_sessions(sessions: list[Any], n: int) -> list[list[str]]:
    """Test sessions made exactly 4 queries long (the target query stays last)."""
    pool = [q for s in sessions for q in s.queries[:-1]] or ["hello"]
    out, k = [], 0
    for s in sessions[:n]:
        queries = list(s.queries[-4:])
        while len(queries) < 4:
            queries.insert(0, pool[k % len(pool)])
            k += 1
        out.append(queries)
    return out


def train(args: argparse.Namespace, backbone: str) -> Path:
    run_dir = Path(args.work_dir) / f"run-{args.market}-{backbone}{'-quick' if args.quick else ''}{_suffix(args)}"
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    if ckpt.is_file():
        print(f"[bench] reusing {ckpt}", flush=True)
        return ckpt
    cmd = [sys.executable, str(ROOT / "run.py"), "+experiment=baseline_naive", f"market={args.market}",
           f"market.encoder={backbone}", "logger=none", "callbacks.progress=null", f"hydra.run.dir={run_dir}"]
    if args.epochs:
        cmd.append(f"trainer.max_epochs={args.epochs}")
    if args.device == "cuda":
        cmd.append("trainer=gpu")
    if args.quick:
        cmd += ["trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
                "trainer.limit_test_batches=1"]
    print(f"[bench] training: {' '.join(cmd[1:])}", flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
    return ckpt


def _suffix(args: argparse.Namespace) -> str:
    return "_cuda" if args.device == "cuda" else ""


def runtimes_to_time(args: argparse.Namespace, export: Path, ckpt: Path) -> list[tuple[str, Path, str, str]]:
    """(row name, what to load, precision, device) of every runtime timed: ONNX int8 / fp32 and eager PyTorch on
    the CPU, and with `--device cuda` eager PyTorch on the GPU."""
    rows = [("onnx-int8", export, "int8", "cpu"), ("onnx-fp32", export, "fp32", "cpu"), ("eager-fp32", ckpt, "auto", "cpu")]
    if args.device == "cuda":
        rows.append(("eager-fp32-cuda", ckpt, "auto", "cuda"))
    return rows


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def encoder_flops(config: Any, batch: int, length: int) -> float:
    """Multiply-adds x 2 of a BERT encoder on (batch, length): projections, FFN, attention scores and mixing."""
    h, ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    return 2.0 * batch * length * layers * (4 * h * h + 2 * h * ff + 2 * length * h)


def matmul_peak(threads: int, seconds: float = 2.0) -> dict[str, float]:
    """Best fp32 GEMM GFLOP/s of torch (oneDNN/MKL sgemm) on `threads` threads over a few square sizes."""
    import torch

    torch.set_num_threads(threads)
    best: dict[str, float] = {}
    for n in (512, 1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            torch.mm(a, b)
            reps += 1
        best[str(n)] = round(2 * n**3 * reps / (time.perf_counter() - start) / 1e9, 1)
    return {"gflops": max(best.values()), "by_size": best}


# --------------------------------------------------------------------------- runtimes
def time_runtime(clf: Any, sessions4: list[list[str]], test: list[Any], args: argparse.Namespace,
                 config: Any) -> dict[str, Any]:
    """Latency at batch 1, throughput at batch `args.batch_size`, analytic GFLOP/s, accuracy on `test`."""
    for queries in sessions4[:10]:
        clf.predict(queries)
    latencies = []
    for queries in sessions4:
        start = time.perf_counter()
        clf.predict(queries)
        latencies.append((time.perf_counter() - start) * 1000)
    bs = args.batch_size
    rows = clf.runtime.encode(clf.texts(sessions4))  # each batch of `bs` sessions is padded to its longest
    lengths = [len(r) for r in rows]
    flops = sum(encoder_flops(config, len(rows[i : i + bs]), max(lengths[i : i + bs])) for i in range(0, len(rows), bs))
    clf.batch_size = bs
    clf.predict_batch(sessions4[:bs])
    start = time.perf_counter()
    for _ in range(args.throughput_rounds):
        for i in range(0, len(sessions4), bs):
            clf.predict_batch(sessions4[i : i + bs])
    elapsed = time.perf_counter() - start
    predictions = clf.predict_batch([s.queries for s in test])
    labelled = [(p.intent, s.target) for p, s in zip(predictions, test) if s.target is not None]
    return {
        "p50_ms": round(percentile(latencies, 50), 2), "p95_ms": round(percentile(latencies, 95), 2),
        "p99_ms": round(percentile(latencies, 99), 2), "mean_ms": round(sum(latencies) / len(latencies), 2),
        "throughput_sps": round(args.throughput_rounds * len(sessions4) / elapsed, 1),
        "gflops": round(args.throughput_rounds * flops / elapsed / 1e9, 2),
        "accuracy": round(sum(p == t for p, t in labelled) / max(1, len(labelled)), 4),
        "mean_tokens": round(sum(lengths) / len(lengths), 1),
    }


# --------------------------------------------------------------------------- service under load
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def load(url: str, bodies: list[dict], concurrency: int) -> tuple[list[int], float]:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def one(body: dict) -> int:
            async with semaphore:
                return (await client.post("/v1/intents", json=body)).status_code

        start = time.perf_counter()
        codes = await asyncio.gather(*(one(b) for b in bodies))
        return list(codes), time.perf_counter() - start


def service_under_load(export: Path, sessions4: list[list[str]], args: argparse.Namespace,
                       batching: bool) -> dict[str, Any]:
    import httpx
    import psutil

    port = free_port()
    cmd = [sys.executable, "-m", "mtic.cli", "serve", str(export), "--port", str(port), "--threads", str(args.threads),
           "--precision", "int8", "--log-level", "warning", "--max-batch", "64"] + (["--batching"] if batching else [])
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
    url, peak, stop = f"http://127.0.0.1:{port}", [0], threading.Event()
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        process = psutil.Process(proc.pid)
        idle = process.memory_info().rss

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], process.memory_info().rss)
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        n, long_session = len(sessions4), [q for s in sessions4[:3] for q in s]  # 12 turns: cut at max length
        bodies = [{"sessions": [{"queries": long_session}] * 8} if k % 10 == 9 else
                  {"sessions": [{"queries": q} for q in (sessions4 * 2)[k % n : k % n + 8]]} if k % 10 == 4 else
                  {"queries": sessions4[k % n]} for k in range(args.load_requests)]
        codes, elapsed = asyncio.run(load(url, bodies, args.load_concurrency))
        stop.set()
        sampler.join()
        return {"batching": batching, "requests": len(codes), "ok": codes.count(200),
                "5xx": sum(c >= 500 for c in codes), "requests_per_s": round(len(codes) / elapsed, 1),
                "rss_idle_mb": round(idle / 2**20), "rss_peak_mb": round(max(peak[0], idle) / 2**20)}
    finally:
        stop.set()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


# --------------------------------------------------------------------------- report
def report_markdown(result: dict[str, Any]) -> str:
    peak = result["matmul_peak_gflops"]
    title = f"# Deployment benchmark ({result['market']}, {result['threads']} threads{', QUICK' if result['quick'] else ''})"
    setup = (f"Host: {result['host']}. fp32 matmul peak (torch sgemm): {peak} GFLOP/s. Latency: 4-turn sessions at "
             f"batch 1 (whole predict call). Throughput at batch {result['batch_size']}; GFLOP/s = analytic encoder "
             f"FLOPs (padded batches) / time, int8 included, against the fp32 peak. Accuracy on the test split "
             f"({result['test_sessions']} sessions).")
    lines = [title, "", setup, "",
             "| backbone | runtime | p50 ms | p95 ms | p99 ms | sessions/s @32 | GFLOP/s @32 | % of peak | accuracy |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, b in result["backbones"].items():
        for runtime, r in b["runtimes"].items():
            share = "n/a (GPU)" if runtime.endswith("-cuda") else f"{100 * r['gflops'] / peak:.1f}"  # CPU peak
            lines.append(f"| {name} | {runtime} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | {r['throughput_sps']} | "
                         f"{r['gflops']} | {share} | {r['accuracy']:.4f} |")
    header = ("| backbone | int8 p50 <= 20 ms | int8 speed-up vs eager (p50) | int8 - fp32 accuracy (pt) | "
              "export parity fp32 / int8 (argmax agreement) |")
    lines += ["", header, "|---|---|---:|---:|---|"]
    for name, b in result["backbones"].items():
        r = b["runtimes"]
        parity = b["parity"]
        lines.append(f"| {name} | {'yes' if r['onnx-int8']['p50_ms'] <= 20 else 'no'} | "
                     f"{r['eager-fp32']['p50_ms'] / r['onnx-int8']['p50_ms']:.1f}x | "
                     f"{100 * (r['onnx-int8']['accuracy'] - r['onnx-fp32']['accuracy']):+.1f} | "
                     f"{parity['fp32']['argmax_agreement']} / {parity.get('int8', {}).get('argmax_agreement')} |")
    lines += ["", "| backbone | service | requests | 5xx | requests/s | RSS idle MB | RSS peak MB |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for name, b in result["backbones"].items():
        for s in b["service"]:
            lines.append(f"| {name} | int8, {'micro-batching' if s['batching'] else 'direct'} | {s['requests']} | "
                         f"{s['5xx']} | {s['requests_per_s']} | {s['rss_idle_mb']} | {s['rss_peak_mb']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import psutil  # noqa: F401 - fail early when missing
    import torch

    from mtic.data.bundle import read_bundle
    from mtic.deploy.export import export_checkpoint
    from mtic.deploy.predictor import IntentClassifier
    from mtic.deploy.run_context import bundle_path

    torch.set_num_threads(args.threads)
    given = dict(item.split("=", 1) for item in args.checkpoint)
    bundle = read_bundle(bundle_path(f"demo:{args.market}"))
    test = bundle.sessions["test"]
    sessions4 = four_turn_sessions(test, args.sessions)
    result: dict[str, Any] = {
        "market": args.market, "threads": args.threads, "quick": args.quick, "batch_size": args.batch_size,
        "test_sessions": len(test), "latency_sessions": len(sessions4),
        "host": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
                + (f", GPU {torch.cuda.get_device_name(0)}" if args.device == "cuda" else ""),
        "matmul_peak": matmul_peak(args.threads), "backbones": {},
    }
    result["matmul_peak_gflops"] = result["matmul_peak"]["gflops"]
    print(f"[bench] matmul peak {result['matmul_peak_gflops']} GFLOP/s", flush=True)
    for backbone in args.backbones:
        ckpt = Path(given[backbone]) if backbone in given else train(args, backbone)
        export = Path(args.work_dir) / f"export-{args.market}-{backbone}{'-quick' if args.quick else ''}{_suffix(args)}"
        card = export_checkpoint(ckpt, export)
        runtimes: dict[str, Any] = {}
        for name, source, precision, device in runtimes_to_time(args, export, ckpt):
            clf = IntentClassifier.load(source, precision, args.threads)
            if device != "cpu":
                clf.runtime.model.to(device)  # TorchClassifier feeds each batch to its model's device
            config = clf.runtime.model.encoder.config if name.startswith("eager") else _encoder_config(card)
            runtimes[name] = time_runtime(clf, sessions4, test, args, config)
            print(f"[bench] {backbone} {name}: {runtimes[name]}", flush=True)
            del clf
            time.sleep(1.0)  # idle thread pools stop spinning before the next runtime is timed
        service = [service_under_load(export, sessions4, args, batching) for batching in (False, True)]
        print(f"[bench] {backbone} service: {service}", flush=True)
        result["backbones"][backbone] = {"checkpoint": str(ckpt), "export": str(export), "parity": card["parity"],
                                         "files": card["files"], "runtimes": runtimes, "service": service}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = ("bench_deploy_quick" if args.quick else "bench_deploy") + _suffix(args)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    markdown = report_markdown(result)
    (out / f"{stem}.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    print(f"[bench] wrote {out / stem}.md and .json")


def _encoder_config(card: dict[str, Any]) -> Any:
    """The encoder's HF config (sizes for the FLOP count) without loading the model."""
    from transformers import AutoConfig

    from mtic.hub.registry import resolve_model

    return AutoConfig.from_pretrained(resolve_model(card["backbone"]), trust_remote_code=False)


if __name__ == "__main__":
    main()
