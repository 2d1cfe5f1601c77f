"""Symbol-tuning speed and memory on 2 CPU cores.

1. Training tokens/s: mtic (dynamic padding + length grouping + LM head only on answer positions) vs a
   FastChat-style baseline (every sequence padded to max length, logits over the full sequence).
2. Test-time decoding of rolled-out sessions (the model's own answer to every history turn), seconds per
   session: the textbook rollout (a fresh prompt with the whole transcript at every turn, batched across
   sessions: HF `generate`, or scoring every label) vs mtic's cached rollout (`SessionRollout`: one KV cache per
   session, only each turn's new tokens run) with greedy decoding or exact label scoring (branch and bound;
   with / without probabilities for every label at the final turn). Pass a trained checkpoint
   (`--checkpoint <run dir>/checkpoints/best.ckpt` of `python run.py +experiment=st_sg`): how far the label
   search prunes depends on how sure the model is.

3. `--vs-trl`: mtic's training step against TRL's SFTTrainer on the st_sg experiment (same model, data, loss mask,
   batches, max length; experiments/st_training_peer.py says how), tokens/s side by side, written to
   experiments/reports/bench_symbol_tuning.{md,json} (needs the `bench` extra: pip install -e ".[bench]").

    python experiments/bench_symbol_tuning.py --backbone smollm2-135m --bundle demo:sg --steps 8 \
        --checkpoint CKPT --sessions 48 --batch-size-eval 16
    python experiments/bench_symbol_tuning.py --vs-trl --steps 12 --warmup 2 --batch-size 8 --threads 2 \
        --conditions "nothing else running"
Prints Markdown tables; peak RSS is read from the OS at the end.
"""
from __future__ import annotations

import argparse
import resource
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.st_training_peer import bench_vs_trl
from mtic.data.sources import resolve_bundle
from mtic.hub.registry import cache_root
from mtic.inputs.datamodule import MTICDataModule
from mtic.inputs.encoding import IGNORE_INDEX, PadCollator
from mtic.inputs.views import ChatView
from mtic.labels.targets import LabelSet
from mtic.models.label_scoring import left_pad, score_prompts
from mtic.models.symbol_tuning import SymbolTuningLM


def fastchat_loss(model: SymbolTuningLM, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The baseline: full-sequence logits, shifted cross-entropy with ignore_index."""
    logits = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), batch["labels"][:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
    )


def reencode_rollout(model: SymbolTuningLM, sessions: list) -> list[dict]:
    """The textbook rollout: at every turn a fresh left-padded prompt with the whole transcript (batched)."""
    answers: list[list[str]] = [[] for _ in sessions]
    final: list[str] = ["" for _ in sessions]
    for step in range(max(len(s) for s in sessions)):
        live = [k for k, s in enumerate(sessions) if len(s) > step]
        prompts = [model.encoder.prompt_ids([q for q, _ in sessions[k][: step + 1]], answers[k]) for k in live]
        if model.hparams.decode == "score":
            scores = score_prompts(model.model, prompts, [model.label_answers] * len(prompts), model.pad_token_id)
            texts = [model.labels.label_of(model.label_intents[int(s.argmax())]) for s in scores]
        else:
            ids, mask = left_pad(prompts, model.pad_token_id)
            out = model.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=model.hparams.max_new_tokens,
                                       do_sample=False, pad_token_id=model.pad_token_id,
                                       eos_token_id=model.tokenizer.eos_token_id)
            texts = [t.strip() for t in model.tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)]
        for k, text in zip(live, texts):
            answers[k].append(text)
            if step == len(sessions[k]) - 1:
                final[k] = text
    matches = model.matcher.match_many(final)
    return [{"output": t, "intent": m.intent_id, "method": m.method} for t, m in zip(final, matches)]


class Stopwatch:
    """Seconds spent inside the wrapped callables (the decoding step and the output mapping)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
        return timed


def timed_decoding(model: SymbolTuningLM, watch: Stopwatch) -> None:
    """Make `model.predict_sessions` count decoder and mapping time on `watch` (prompt feeds excluded)."""
    build = type(model).rollout

    def rollout():
        r = build(model)
        r.decoder = watch.wrap(r.decoder)
        return r
    model.rollout = rollout
    model.matcher.match_many = watch.wrap(type(model.matcher).match_many.__get__(model.matcher))


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


def bench_training(model: SymbolTuningLM, dm: MTICDataModule, steps: int, batch_size: int) -> None:
    """Training tokens/s: mtic's batches and loss vs FastChat-style padding to max length with full logits."""
    dm.setup("fit")
    ours = list(dm.train_dataloader())[: steps]
    rows = [dm.datasets["train"][i] for i in range(steps * batch_size)]
    width = max(len(r["input_ids"]) for r in dm.datasets["train"].rows)
    padded = []
    for k in range(0, len(rows), batch_size):
        batch = PadCollator(model.pad_token_id)(rows[k : k + batch_size])
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--bundle", default="demo:sg")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--sessions", type=int, default=48, help="test sessions for the decoding comparison")
    parser.add_argument("--batch-size-eval", type=int, default=16, help="sessions decoded together")
    parser.add_argument("--checkpoint", default=None, help="a symbol-tuning checkpoint (LoRA weights) to decode with")
    parser.add_argument("--skip-training", action="store_true", help="only the decoding comparison")
    parser.add_argument("--match-embedder", default="minilm-l6",
                        help="embedder of greedy's last mapping stage, as st_sg uses (none: exact + gestalt only)")
    parser.add_argument("--vs-trl", action="store_true", help="only the training comparison with TRL's SFTTrainer")
    parser.add_argument("--warmup", type=int, default=2, help="--vs-trl: first steps left out of the timing")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--report-dir", default=str(Path(__file__).resolve().parent / "reports"),
                        help="--vs-trl: where bench_symbol_tuning.{md,json} are written")
    parser.add_argument("--conditions", default="conditions not stated",
                        help="--vs-trl: what else ran on the machine, said in the report")
    parser.add_argument("--override", nargs="*", default=[], help="--vs-trl: more Hydra overrides of st_sg")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    if args.vs_trl:
        if not 1 <= args.warmup < args.steps:
            parser.error("--warmup must be at least 1 and below --steps")
        bench_vs_trl(args, "python experiments/bench_symbol_tuning.py " + shlex.join(sys.argv[1:]))
        print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
        return
    bundle = resolve_bundle(args.bundle, cache_root())
    dm = MTICDataModule(bundle, view=ChatView(), eval_view=ChatView(history_labels="none"), batch_size=args.batch_size)
    labels = LabelSet.from_taxonomy(dm.taxonomy, target="compressed")
    embedder = None if args.match_embedder == "none" else args.match_embedder
    model = SymbolTuningLM(args.backbone, dm.taxonomy, labels, match_embedder=embedder)
    model.matcher.match_many(["warm-up"])  # label embeddings are computed once, before any timing
    dm.set_encoder(model.build_encoder(), model.pad_token_id)
    if not args.skip_training:
        bench_training(model, dm, args.steps, args.batch_size)
    model.eval()
    if args.checkpoint:
        model.load_state_dict(torch.load(args.checkpoint, weights_only=True, map_location="cpu")["state_dict"])
    dm.setup("test")
    rows = dm.datasets["test"].rows[: args.sessions]
    targets = [r["target"] for r in rows]
    turns = sum(len(r["turns"]) for r in rows)
    print(f"\n{len(rows)} test sessions, {turns} turns, batches of {args.batch_size_eval} sessions, "
          f"{'trained' if args.checkpoint else 'untrained'} LoRA\n")
    print("| rollout | decode | s/session | decode + mapping s/session | accuracy | unmatched |\n"
          "|---|---|---|---|---|---|")
    for name, decode, label_probs, fn in [
        ("re-encode every turn", "greedy", False, reencode_rollout),
        ("cached (mtic)", "greedy", False, None),
        ("re-encode every turn", "score (all labels)", True, reencode_rollout),
        ("cached (mtic)", "score (all labels at the final turn)", True, None),
        ("cached (mtic)", "score (branch and bound only)", False, None),
    ]:
        model.hparams.decode = decode.split()[0]
        model.hparams.label_probs = label_probs
        watch = Stopwatch()
        if fn is None:
            timed_decoding(model, watch)
        start = time.perf_counter()
        out = []
        with torch.no_grad():
            for k in range(0, len(rows), args.batch_size_eval):
                batch = [r["turns"] for r in rows[k : k + args.batch_size_eval]]
                out += fn(model, batch) if fn else model.predict_sessions(batch)
        per = (time.perf_counter() - start) / len(rows)
        decode_only = "—" if fn else f"{watch.seconds / len(rows):.3f}"  # generate() mixes prompt and decoding
        acc = sum(o["intent"] == t for o, t in zip(out, targets)) / len(out)
        unmatched = sum(o["method"] != "exact" for o in out) / len(out)
        print(f"| {name} | {decode} | {per:.3f} | {decode_only} | {acc:.3f} | {unmatched:.3f} |", flush=True)
    print(f"\npeak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
