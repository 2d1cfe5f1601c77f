"""The backbone registry's value lists, importable without torch (config validation reads them);
mtic.hub.registry re-exports them."""
from __future__ import annotations

BACKBONE_KINDS = ("causal_lm", "encoder")  # conf/backbone `kind`: loaded by load_causal_lm | load_encoder
