"""The backbone registry's value lists and its cache root, importable without torch (config validation and the
bundle reader's Arrow cache read them); mtic.hub.registry re-exports them."""
from __future__ import annotations

import os
from pathlib import Path

BACKBONE_KINDS = ("causal_lm", "encoder")  # conf/backbone `kind`: loaded by load_causal_lm | load_encoder


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache root: `cache_dir`, else `$MTIC_CACHE`, else `~/.cache/mtic`."""
    root = cache_dir or os.environ.get("MTIC_CACHE") or Path.home() / ".cache" / "mtic"
    return Path(root).expanduser()
