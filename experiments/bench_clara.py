"""Sessions/s of the local LLM backend on real CLARA prompts: batched vs one prompt at a time.

    python experiments/bench_clara.py --market sg --sessions 32 --batch-sizes 1 8 --modes score generate

Prompts are rendered exactly as the pipelines render them (retrieved demos, prompt template, labels of the demo
bundle); the answer cache is off, so every prompt really runs. Each (mode, batch size) runs the same sessions
after one warm-up batch; results go to stdout as a Markdown table and, with --out, to a JSON file.
Mode `score-naive` is the textbook reference for score mode: one forward pass per (prompt, candidate) pair,
one pair at a time, no shared prompt computation.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from mtic.clara.llm.local import LocalLLM
from mtic.clara.prompts import load_prompt
from mtic.clara.retrieval import DemoIndex, Retriever
from mtic.data.bundle import read_bundle
from mtic.data.sources import resolve_bundle
from mtic.data.taxonomy import Taxonomy
from mtic.hub.registry import cache_root, load_sentence_embedder
from mtic.labels.targets import LabelSet

ROOT = Path(__file__).resolve().parents[1]


def render_prompts(args: argparse.Namespace) -> list:
    bundle = read_bundle(resolve_bundle(args.bundle or f"demo:{args.market}", cache_root(args.cache_dir)))
    taxonomy = Taxonomy.from_intents(bundle.intents)
    labels = LabelSet.from_taxonomy(taxonomy).as_dict()
    embedder = load_sentence_embedder(args.embedder, args.cache_dir)
    index = DemoIndex.from_queries(bundle.require_single_turn("train"), embedder.encode)
    retriever = Retriever(index, embedder.encode, k=args.k, max_demos=args.max_demos)
    sessions = bundle.require_sessions(args.split)[: args.sessions]
    template = load_prompt(ROOT / "conf" / "prompt" / f"{args.prompt}.yaml")
    demos = retriever.retrieve([s.queries for s in sessions])
    return [template.render(sorted(d, key=lambda x: x.score), s.queries, labels).request for s, d in zip(sessions, demos)]


@torch.no_grad()
def naive_scores(llm: LocalLLM, requests: list) -> list:
    """Score mode without any sharing: every candidate re-runs its whole prompt."""
    from mtic.clara.llm.base import LLMResponse

    out = []
    for request in requests:
        prompt = llm.prompt_ids(request)
        values = []
        for cont in llm.choice_ids(request):
            ids = torch.tensor([prompt + cont])
            logp = llm.model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float().log_softmax(-1)
            total = float(logp.gather(-1, torch.tensor(cont)[:, None]).sum())
            values.append(total if llm.length_norm == "sum" else total / len(cont))
        best = max(range(len(values)), key=lambda k: (round(values[k], 5), -k))
        out.append(LLMResponse(request.choices[best], choice=best))
    return out


def bench(llm: LocalLLM, requests: list, batch_size: int, repeats: int, naive: bool = False) -> dict:
    llm.batch_size = batch_size
    run = (lambda rs: naive_scores(llm, rs)) if naive else llm.complete
    run(requests[:batch_size])  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        answers = run(requests)
        times.append(time.perf_counter() - started)
    best = min(times)
    return {"batch_size": batch_size, "seconds": round(best, 3), "median_s": round(statistics.median(times), 3),
            "sessions_per_s": round(len(requests) / best, 3), "answers": [a.text for a in answers]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--market", default="sg")
    parser.add_argument("--bundle", default=None, help="a bundle directory instead of the demo market")
    parser.add_argument("--split", default="unlabeled")
    parser.add_argument("--sessions", type=int, default=32)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--embedder", default="minilm-l6")
    parser.add_argument("--prompt", default="p")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--max-demos", type=int, default=10)
    parser.add_argument("--modes", nargs="+", default=["score", "score-naive", "generate"],
                        help="score | score-naive | generate (speed-ups are relative to the first batch size of "
                             "the mode; score-naive relative to score at the first batch size)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16 (fast on CPUs with avx512_bf16 / AMX)")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    requests = render_prompts(args)
    llm = LocalLLM(args.model, batch_size=1, max_new_tokens=args.max_new_tokens, cache_dir=args.cache_dir,
                   dtype=args.dtype)
    lengths = [len(llm.prompt_ids(r)) for r in requests]
    rows = []
    reference = None
    for mode in args.modes:
        naive = mode == "score-naive"
        llm.mode = "score" if naive else mode
        results = [bench(llm, requests, b, args.repeats, naive) for b in ([1] if naive else args.batch_sizes)]
        reference = reference if reference is not None and naive else results[0]
        for r in results:
            same = r["answers"] == reference["answers"]
            rows.append({"mode": mode, **{k: v for k, v in r.items() if k != "answers"},
                         "speedup": round(r["sessions_per_s"] / reference["sessions_per_s"], 2),
                         "same_answers_as_first": same})
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"model {args.model} ({args.dtype}), {len(requests)} sessions of {args.market}/{args.split}, prompt {args.prompt}, "
          f"prompt tokens mean {statistics.mean(lengths):.0f} (max {max(lengths)}), torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs, load average at the end {load:.2f}")
    print("| mode | batch size | seconds | sessions/s | speed-up | same answers |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['batch_size']} | {r['seconds']} | {r['sessions_per_s']} | {r['speedup']}x | "
              f"{r['same_answers_as_first']} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "prompt_tokens_mean": statistics.mean(lengths),
                                              "host": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                                       "threads": torch.get_num_threads()},
                                              "args": vars(args)}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
