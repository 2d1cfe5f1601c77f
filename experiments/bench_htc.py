"""HTC speed and memory on CPU: training throughput, per-session eval latency, peak RSS.

For each head configuration (local heads only, + HiTIN global head (default), + label attention):
- training: sessions (examples) per second over `--steps` optimizer steps of `--batch-size` (one warm-up step
  first), dynamic padding and length grouping as in a real run;
- evaluation: latency of one session at a time (batch 1, what a CPU service sees): mean and p95 ms, and batched
  throughput (`--eval-batch-size`).

    python experiments/bench_htc.py --backbone minilm-l6 --bundle demo:sg --threads 2
Prints a Markdown table; peak RSS (whole process, all configurations) is read from the OS at the end.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtic.data.sources import resolve_bundle
from mtic.hub.registry import cache_root
from mtic.inputs.datamodule import MTICDataModule
from mtic.inputs.views import LastQueryView, NaiveConcatView
from mtic.models.htc import HTC

VARIANTS = {
    "local heads only": {"global_head": False},
    "local + global (default)": {},
    "local + global + label attention": {"label_attention": True},
}


def bench(args: argparse.Namespace, name: str, switches: dict) -> str:
    torch.manual_seed(0)
    view = NaiveConcatView() if args.view == "naive" else LastQueryView()
    dm = MTICDataModule(args.bundle_dir, view=view, batch_size=args.batch_size, eval_batch_size=args.eval_batch_size,
                        train_sessions=args.train_sessions)
    model = HTC(args.backbone, dm.taxonomy, max_length=args.max_length, freeze_embeddings=args.freeze_embeddings,
                **switches)
    dm.set_encoder(model.build_encoder(), model.pad_token_id)
    dm.setup("fit")
    dm.setup("test")
    params = sum(p.numel() for p in model.parameters())
    head = params - sum(p.numel() for p in model.encoder.parameters())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    batches = iter(dm.train_dataloader())
    model.train()
    seen, elapsed = 0, 0.0
    for step in range(args.steps + 1):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(dm.train_dataloader())
            batch = next(batches)
        start = time.perf_counter()
        loss = model.loss(model(batch["input_ids"], batch["attention_mask"]), batch["level_labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step:  # step 0 warms up
            elapsed += time.perf_counter() - start
            seen += batch["input_ids"].shape[0]
    model.eval()
    rows = dm.datasets["test"].rows[: args.sessions]
    latencies = []
    with torch.no_grad():
        for row in rows:
            batch = dm.collator([row])
            start = time.perf_counter()
            model.decode(model(batch["input_ids"], batch["attention_mask"]))
            latencies.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        for k in range(0, len(rows), args.eval_batch_size):
            batch = dm.collator(rows[k : k + args.eval_batch_size])
            model.decode(model(batch["input_ids"], batch["attention_mask"]))
        batched = len(rows) / (time.perf_counter() - start)
    p95 = sorted(latencies)[max(0, int(len(latencies) * 0.95) - 1)]
    return (f"| {name} | {params / 1e6:.1f}M ({head / 1e6:.2f}M head) | {seen / elapsed:.1f} | "
            f"{statistics.mean(latencies):.1f} | {p95:.1f} | {batched:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="minilm-l6")
    parser.add_argument("--bundle", default="demo:sg")
    parser.add_argument("--view", choices=["naive", "last"], default="naive")
    parser.add_argument("--train-sessions", default="train", help="'train' (gold sessions) or 'none' (single-turn only)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--sessions", type=int, default=100, help="test sessions timed at evaluation")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--freeze-embeddings", action="store_true", help="as model.freeze_embeddings=true")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of the rows")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.bundle_dir = resolve_bundle(args.bundle, cache_root())
    print(f"backbone={args.backbone} bundle={args.bundle} view={args.view} threads={args.threads} "
          f"batch={args.batch_size} steps={args.steps} freeze_embeddings={args.freeze_embeddings}\n")
    print("| heads | parameters | train sessions/s | eval ms/session (batch 1) | p95 ms | eval sessions/s (batched) |")
    print("|---|---|---|---|---|---|")
    for name in args.variants.split(","):
        print(bench(args, name, VARIANTS[name]), flush=True)
    print(f"\npeak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
