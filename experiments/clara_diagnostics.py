"""Where CLARA's pseudo-labels go wrong: candidate recall and pseudo-label precision by outcome.

    python experiments/clara_diagnostics.py RUN_DIR [RUN_DIR ...] [--out experiments/reports/clara_diagnostics.md]

RUN_DIR is a finished `+experiment=clara` or `lara_pl` run (its results.json names the pseudo-label records and
holds the config). For every pseudo-labelled session whose gold label is known (the bundle's
`unlabeled.gold.jsonl`) it reports:

- candidate recall: is the gold intent among the intents the prompt offered (the demos' intents) - with the
  run's own retrieval (M_c on or off), and for retrieval alone and M_c alone when M_c was on;
- pseudo-label precision overall, on the kept sessions, on the dropped ones, and when the gold intent was / was
  not among the candidates (the LLM cannot pick an intent it is not shown in score mode).

The run's config, M_c checkpoint (cached) and embedder are reused; nothing is trained.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from omegaconf import OmegaConf


def _share(num: int, den: int) -> str:
    return "–" if den == 0 else f"{100.0 * num / den:.1f} ({num}/{den})"


def diagnose(run_dir: Path) -> dict[str, Any]:
    from mtic.clara.retrieval import build_retriever
    from mtic.data.bundle import read_bundle, read_unlabeled_gold
    from mtic.data.sources import resolve_bundle
    from mtic.data.taxonomy import Taxonomy
    from mtic.hub.registry import load_sentence_embedder
    from mtic.pipelines.candidate_model import plan_candidates

    record = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    cfg = OmegaConf.create(record["config"])
    pseudo = record["pseudo_labels"]
    records = [json.loads(line) for line in Path(pseudo["files"]["records"]).read_text().splitlines() if line]
    bundle_dir = resolve_bundle(cfg.paths.get("data_dir") or cfg.market.bundle, cfg.paths.cache_dir,
                                cfg.paths.get("datasets_dir"))
    bundle = read_bundle(bundle_dir)
    taxonomy = Taxonomy.from_intents(bundle.intents)
    gold = {s.id: s.target for s in (read_unlabeled_gold(bundle_dir, set(taxonomy.ids)) or [])}
    retrieval = OmegaConf.to_container(cfg.pipeline.retrieval, resolve=True)
    candidates = retrieval.pop("candidates", None) or {}
    retrieval = {k: v for k, v in retrieval.items() if k not in ("_target_", "embedder")}
    embedder = load_sentence_embedder(cfg.pipeline.retrieval.embedder, cfg.paths.cache_dir)
    planned, _ = plan_candidates(cfg, {"candidates": candidates}, bundle_dir)
    mc = planned.get("candidates") or {}
    with_mc = bool(mc.get("checkpoint")) and Path(mc["checkpoint"]).is_file()
    variants = {"retrieval only": build_retriever(bundle, taxonomy, embedder, **retrieval)}
    if with_mc:
        variants["retrieval + M_c"] = build_retriever(bundle, taxonomy, embedder, candidates=mc, **retrieval)
    rows = [r for r in records if r["id"] in gold]
    queries = [[t["text"] for t in r["turns"]] for r in rows]
    offered = {name: [{d.intent for d in demos} for demos in retriever.retrieve(queries)]
               for name, retriever in variants.items()}
    own = "retrieval + M_c" if with_mc else "retrieval only"
    out: dict[str, Any] = {"run": str(run_dir), "method": record["method"], "market": record["market"],
                           "sessions": len(rows), "m_c": with_mc}
    for name, sets in offered.items():
        out[f"recall: {name}"] = _share(sum(gold[r["id"]] in s for r, s in zip(rows, sets)), len(rows))
        out[f"candidates per session: {name}"] = f"{sum(map(len, sets)) / max(1, len(sets)):.1f}"
    right = [r["intent"] == gold[r["id"]] if r["status"] == "kept" else r["base"] == gold[r["id"]] for r in rows]
    kept = [r["status"] == "kept" for r in rows]
    shown = [gold[r["id"]] in s for r, s in zip(rows, offered[own])]
    first = [r["base"] == gold[r["id"]] for r in rows]
    out["precision, first ordering, all sessions"] = _share(sum(first), len(rows))
    out["precision, kept sessions (the training labels)"] = _share(sum(c for c, k in zip(right, kept) if k), sum(kept))
    out["precision, first ordering, dropped sessions"] = _share(
        sum(f for f, k in zip(first, kept) if not k), len(rows) - sum(kept))
    out["precision, first ordering, gold among candidates"] = _share(
        sum(f for f, s in zip(first, shown) if s), sum(shown))
    out["precision, first ordering, gold not offered"] = _share(
        sum(f for f, s in zip(first, shown) if not s), len(rows) - sum(shown))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown table here")
    args = parser.parse_args(argv)
    results = [diagnose(run) for run in args.runs]
    keys = list(dict.fromkeys(k for r in results for k in r if k not in ("run",)))
    lines = ["| " + " | ".join(["figure (%)", *[f"{r['method']} {r['market']}" for r in results]]) + " |",
             "|---|" + "---:|" * len(results)]
    lines += ["| " + " | ".join([key, *[str(r.get(key, "–")) for r in results]]) + " |" for key in keys]
    markdown = "\n".join(lines)
    print(markdown)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(markdown + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
