"""The `mtic` command: data, label, merge, export and serve tools beside the Hydra entry point (`python run.py`)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mtic.cli_errors import friendly_errors


def _cmd_validate(args: argparse.Namespace) -> int:
    from mtic.data.bundle import read_bundle

    bundle = read_bundle(args.bundle)
    sizes = ", ".join(f"{split} {len(rows)}" for split, rows in bundle.sessions.items()) or "no sessions"
    print(f"OK {args.bundle}: {len(bundle.intents)} intents, {len(bundle.single_turn)} single-turn queries, {sizes}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from mtic.data.bundle import BUNDLE_FILE
    from mtic.data.errors import BundleError
    from mtic.dataset_factories.demo.build import MARKETS, write_demo_bundle

    if args.market not in MARKETS:
        raise BundleError(args.market, f"no demo bundle for this market; known: {' '.join(MARKETS)}")
    out = Path(args.out).expanduser()
    if out.is_file():
        raise BundleError(out, "is a file; give a new directory for the bundle")
    overwrite = out.is_dir() and not any(out.iterdir())  # an empty directory: nothing to lose
    if out.is_dir() and not overwrite:
        if not args.overwrite:
            raise BundleError(out, "already exists; pass --overwrite to replace the bundle in it")
        if not (out / BUNDLE_FILE).is_file():
            raise BundleError(out, f"exists and holds no bundle ({BUNDLE_FILE}): --overwrite only replaces a bundle")
        overwrite = True
    path = write_demo_bundle(args.market, out, overwrite=overwrite, seed=args.seed)
    print(f"wrote the {args.market} demo bundle to {path}")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from mtic.data.errors import BundleError
    from mtic.data.stats import stats_report
    from mtic.dataset_factories.prepare import option_value, prepare

    options = {}
    for item in args.set or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise BundleError(item, "--set needs KEY=VALUE (e.g. --set valid_share=0.2)")
        options[key.strip()] = option_value(args.source, key.strip(), value, item)
    for key in ("seed", "lang", "max_dialogues"):
        if getattr(args, key, None) is not None:
            options[key] = getattr(args, key)
    if Path(args.out).exists() and not args.overwrite:
        raise BundleError(args.out, "already exists; pass --overwrite to replace it")
    path = prepare(args.source, Path(args.src), Path(args.out), overwrite=args.overwrite, **options)
    print(stats_report([path]), end="")
    print(f"wrote the {args.source} bundle to {path} (gold labels of unlabeled.jsonl: sessions/unlabeled.gold.jsonl)")
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from mtic.data.stats import stats_report

    print(stats_report(args.bundles), end="")
    return 0


def _cmd_compress(args: argparse.Namespace) -> int:
    """The objective's labels (the same `LabelChooser` a run uses) written as a reviewable file."""
    from mtic.data.bundle import read_bundle
    from mtic.data.taxonomy import Taxonomy
    from mtic.labels.chooser import LLM, LabelChooser
    from mtic.labels.compress import save_compression

    taxonomy = Taxonomy.from_intents(read_bundle(args.bundle).intents)
    proposers = [p.strip() for p in args.proposers.split(",") if p.strip()]
    llm = None
    if args.llm:
        from mtic.clara.llm import build_llm

        llm = build_llm("local", decode="greedy", cache=False, model=args.llm, max_new_tokens=12)
        proposers = [*proposers, LLM] if LLM not in proposers else proposers
    chooser = LabelChooser(proposers, alpha=args.alpha, normalise=not args.literal, encoder=args.embedder,
                           tokenizer=args.tokenizer or None, compress_llm=llm)
    choices = chooser.choose(taxonomy, english=args.english)
    path = save_compression(args.out, choices)
    for choice in list(choices.values())[: args.show]:
        print(f"{choice.title[:60]!r:64} -> {choice.label!r} ({choice.source}, cos {choice.similarity:.2f},"
              f" {choice.tokens} tokens)")
    won = {s: sum(c.source == s for c in choices.values()) for s in sorted({c.source for c in choices.values()})}
    print(f"wrote {len(choices)} labels to {path} (won by: {won}); review/edit it, then: python run.py ..."
          f" labels.compression_file={path}")
    return 0


def _cmd_merge(args: argparse.Namespace) -> int:
    from mtic.models.merge import merge_checkpoint

    path = merge_checkpoint(args.checkpoint, args.out)
    print(f"merged model written to {path} (serve it with vLLM / LMDeploy, or backbone.name={path})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtic", description="mtic tools (training runs: python run.py ...)")
    groups = parser.add_subparsers(dest="group", required=True)
    data = groups.add_parser("data", help="data bundles").add_subparsers(dest="command", required=True)

    validate = data.add_parser("validate", help="check a bundle; errors name the file and line")
    validate.add_argument("bundle")
    validate.set_defaults(func=_cmd_validate)

    demo = data.add_parser("demo", help="write an embedded demo bundle to a directory")
    demo.add_argument("market", help="br id my ph sg th tw vn")
    demo.add_argument("--out", required=True, help="output bundle directory")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--overwrite", action="store_true", help="replace an existing bundle in --out")
    demo.set_defaults(func=_cmd_demo)

    prepare = data.add_parser("prepare", help="convert a public benchmark (original layout) into a bundle")
    prepare.add_argument("source", choices=["sgd", "xsid", "banking77"])
    prepare.add_argument("--src", required=True, help="the dataset folder in its original layout")
    prepare.add_argument("--out", required=True, help="output bundle directory")
    prepare.add_argument("--lang", default=None, help="xsid: language code (en, id, zh, ja, de, ...)")
    prepare.add_argument("--seed", type=int, default=None, help="seed of every sampled choice (default 0)")
    prepare.add_argument("--max-dialogues", type=int, default=None, help="sgd: seeded subset of the dialogues")
    prepare.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other converter option, repeatable")
    prepare.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    prepare.set_defaults(func=_cmd_prepare)

    stats = data.add_parser("stats", help="Table-1 style statistics of bundles, leaked valid/test turns included")
    stats.add_argument("bundles", nargs="+")
    stats.set_defaults(func=_cmd_stats)
    from mtic.dataset_factories.importer.cli import add_import_command

    add_import_command(data)  # mtic data import
    labels = groups.add_parser("labels", help="label targets").add_subparsers(dest="command", required=True)
    compress = labels.add_parser("compress", help="compress verbose titles to ~2-word labels (reviewable file)")
    compress.add_argument("bundle")
    compress.add_argument("--out", required=True, help="JSONL file to write (edit it to override labels)")
    compress.add_argument("--embedder", default="minilm-l6", help="sentence embedder for E(L', L)")
    compress.add_argument("--tokenizer", default="smollm2-135m", help="LM whose tokens C(L') counts ('' = words)")
    compress.add_argument("--proposers", default="curated,extractive", help="comma-separated: curated,extractive,llm")
    compress.add_argument("--llm", default=None, help="local LM proposing a candidate per title, e.g. smollm2-135m")
    compress.add_argument("--english", action="store_true", help="compress English titles (cross-lingual labels)")
    compress.add_argument("--alpha", type=float, default=1.0, help="weight of the length term")
    compress.add_argument("--literal", action="store_true", help="C(L') unnormalised: the paper's literal C + E")
    compress.add_argument("--show", type=int, default=10, help="print this many choices")
    compress.set_defaults(func=_cmd_compress)
    merge = groups.add_parser("merge", help="merge a LoRA checkpoint into its base model (plain HF directory)")
    merge.add_argument("checkpoint")
    merge.add_argument("out")
    merge.set_defaults(func=_cmd_merge)
    from mtic.deploy.cli import add_commands as add_deploy_commands

    add_deploy_commands(groups)  # mtic export / mtic serve
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with friendly_errors():
        return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
