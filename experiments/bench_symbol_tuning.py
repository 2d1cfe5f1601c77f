"""Symbol-tuning speed and memory on 2 CPU cores.

1. Training tokens/s: mtic (dynamic padding + length grouping + LM head only on answer positions) vs a
   FastChat-style baseline (every sequence padded to max length, logits over the full sequence).
2. Test-time decoding: greedy generation + mapping vs exact label scoring (decode=score), seconds per session.

    python experiments/bench_symbol_tuning.py --backbone smollm2-135m --bundle demo:sg --steps 8
Prints a Markdown table; peak RSS is read from the OS at the end.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtic.data.datamodule import MTICDataModule
from mtic.data.encoding import IGNORE_INDEX, PadCollator
from mtic.data.sources import resolve_bundle
from mtic.data.views import ChatView
from mtic.labels.targets import LabelSet
from mtic.models.backbones import cache_root
from mtic.models.symbol_tuning import SymbolTuningLM


def fastchat_loss(model: SymbolTuningLM, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The baseline: full-sequence logits, shifted cross-entropy with ignore_index."""
    logits = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), batch["labels"][:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
    )


def time_training(model: SymbolTuningLM, batches: list[dict], loss_fn) -> tuple[float, int]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    real_tokens, start = 0, time.perf_counter()
    for batch in batches:
        loss = loss_fn(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        real_tokens += int(batch["attention_mask"].sum())
    return time.perf_counter() - start, real_tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--bundle", default="demo:sg")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--sessions", type=int, default=24, help="test sessions for the decoding comparison")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    bundle = resolve_bundle(args.bundle, cache_root())
    dm = MTICDataModule(bundle, view=ChatView(), eval_view=ChatView(history_labels="none"), batch_size=args.batch_size)
    labels = LabelSet.from_taxonomy(dm.taxonomy, target="compressed")
    model = SymbolTuningLM(args.backbone, dm.taxonomy, labels)
    dm.set_encoder(model.build_encoder(), model.pad_token_id)
    dm.setup("fit")
    ours = list(dm.train_dataloader())[: args.steps]
    rows = [dm.datasets["train"][i] for i in range(args.steps * args.batch_size)]
    width = max(len(r["input_ids"]) for r in dm.datasets["train"].rows)
    padded = []
    for k in range(0, len(rows), args.batch_size):
        batch = PadCollator(model.pad_token_id)(rows[k : k + args.batch_size])
        extra = width - batch["input_ids"].shape[1]
        batch["input_ids"] = F.pad(batch["input_ids"], (0, extra), value=model.pad_token_id)
        batch["attention_mask"] = F.pad(batch["attention_mask"], (0, extra), value=0)
        batch["labels"] = F.pad(batch["labels"], (0, extra), value=IGNORE_INDEX)
        padded.append(batch)
    model.train()
    t_base, n_base = time_training(model, padded, lambda b: fastchat_loss(model, b))
    t_ours, n_ours = time_training(model, ours, model.lm_loss)
    print("| training | real tokens | seconds | tokens/s |\n|---|---|---|---|")
    print(f"| FastChat-style (pad to {width}, full logits) | {n_base} | {t_base:.1f} | {n_base / t_base:.0f} |")
    print(f"| mtic (dynamic pad, grouped, answer logits) | {n_ours} | {t_ours:.1f} | {n_ours / t_ours:.0f} |")
    print(f"speed-up: {(n_ours / t_ours) / (n_base / t_base):.2f}x")

    model.eval()
    dm.setup("test")
    sessions = [r["turns"] for r in dm.datasets["test"].rows[: args.sessions]]
    targets = [r["target"] for r in dm.datasets["test"].rows[: args.sessions]]
    print("\n| decode | s/session | accuracy (untrained LoRA) | unmatched |\n|---|---|---|---|")
    for decode in ("greedy", "score"):
        model.hparams.decode = decode
        start = time.perf_counter()
        out = model.predict_sessions(sessions)
        per = (time.perf_counter() - start) / len(sessions)
        acc = sum(o["intent"] == t for o, t in zip(out, targets)) / len(out)
        unmatched = sum(o["method"] != "exact" for o in out) / len(out)
        print(f"| {decode} | {per:.3f} | {acc:.3f} | {unmatched:.3f} |")
    print(f"\npeak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
