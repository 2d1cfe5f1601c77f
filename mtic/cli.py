"""The `mtic` command: data tools beside the Hydra entry point (`python run.py`)."""
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
    from mtic.data.demo.build import write_demo_bundle

    path = write_demo_bundle(args.market, Path(args.out), seed=args.seed)
    print(f"wrote the {args.market} demo bundle to {path}")
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from mtic.data.bundle import read_bundle
    from mtic.data.stats import bundle_stats, stats_table

    print(stats_table([bundle_stats(read_bundle(path)) for path in args.bundles]))
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
    demo.set_defaults(func=_cmd_demo)

    stats = data.add_parser("stats", help="Table-1 style statistics of bundles")
    stats.add_argument("bundles", nargs="+")
    stats.set_defaults(func=_cmd_stats)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with friendly_errors():
        return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
