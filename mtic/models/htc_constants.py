"""The HTC's value lists, importable without torch (config validation reads them); mtic.models.htc re-exports
them."""
from __future__ import annotations

LEAF, CONSISTENT = "leaf", "consistent"
LEVEL_DECODINGS = (LEAF, CONSISTENT)  # how the per-level probabilities become one intent (`model.level_decoding`)
