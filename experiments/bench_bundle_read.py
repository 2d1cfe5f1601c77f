"""Time and peak RSS of validating + loading a bundle with `read_bundle`, then one pass over every row.

    python experiments/bench_bundle_read.py BUNDLE [--reader-file OLD_BUNDLE_PY] [--arrow-above BYTES]

One process per measurement (run it once per reader and size): `validate_load_s` is `read_bundle` (parse,
validate, and hand back the sequences), `pass_s` one iteration building every query and session object (what a
consumer that touches everything pays on top); `load_peak_rss_mb` is the process's ru_maxrss right after
`read_bundle`, `peak_rss_mb` after the pass (both include the imports and the pages of memory-mapped Arrow files
that were touched) and `import_rss_mb` the RSS after imports.
`--reader-file` loads `read_bundle` from another copy of mtic/data/bundle.py (e.g. the list reader of an older
commit: `git show <rev>:mtic/data/bundle.py > /tmp/old_bundle.py`); `--arrow-above` sets MTIC_BUNDLE_ARROW_ABOVE.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import sys
import time
from typing import Any


def rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reader(reader_file: str | None) -> Any:
    if reader_file is None:
        from mtic.data.bundle import read_bundle

        return read_bundle
    spec = importlib.util.spec_from_file_location("bench_reader", reader_file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.read_bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle")
    parser.add_argument("--reader-file", default=None)
    parser.add_argument("--arrow-above", type=int, default=None)
    args = parser.parse_args()
    if args.arrow_above is not None:
        os.environ["MTIC_BUNDLE_ARROW_ABOVE"] = str(args.arrow_above)
    read_bundle = reader(args.reader_file)
    import datasets  # noqa: F401  (both readers pay the same imports: the old one's callers import it too)

    imported = rss_mb()
    started = time.perf_counter()
    bundle = read_bundle(args.bundle)
    loaded = time.perf_counter()
    load_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    turns = sum(len(q.text) > 0 for q in bundle.single_turn)
    for sessions in bundle.sessions.values():
        turns += sum(len(s.turns) for s in sessions)
    done = time.perf_counter()
    print(json.dumps({
        "bundle": args.bundle, "reader": args.reader_file or "mtic.data.bundle", "arrow_above": args.arrow_above,
        "sessions": sum(map(len, bundle.sessions.values())), "single_turn": len(bundle.single_turn),
        "rows_touched": turns, "kind": type(next(iter(bundle.sessions.values()))).__name__,
        "validate_load_s": round(loaded - started, 2), "pass_s": round(done - loaded, 2),
        "import_rss_mb": round(imported), "load_peak_rss_mb": round(load_peak),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
