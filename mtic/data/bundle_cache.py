"""Bundles built once into the cache: build into a staging directory, then one atomic rename."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from mtic.data.bundle import BUNDLE_FILE


def build_once(target: Path, build: Callable[[Path], Path]) -> Path:
    """`target` if it holds a finished bundle; else `build(staging_dir)` and rename its result to `target`.

    `build` gets an empty directory inside the cache and returns the bundle directory it wrote there. A crash
    leaves no half-written `target`; two processes racing to build the same bundle both end with it.
    """
    if (target / BUNDLE_FILE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        built = build(staging)
        if target.exists() and not (target / BUNDLE_FILE).is_file():
            shutil.rmtree(target)  # a foreign, incomplete directory under our name
        try:
            os.replace(built, target)
        except OSError:
            if not (target / BUNDLE_FILE).is_file():  # not a concurrent builder that won the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
