"""mtic: multi-turn intent classification. `from mtic import IntentClassifier` loads a served model (lazily)."""
from __future__ import annotations

from typing import Any

__all__ = ["IntentClassifier", "Prediction"]


def __getattr__(name: str) -> Any:
    if name in __all__:  # imported on first use: `import mtic` stays light (no torch, no onnxruntime)
        from mtic.deploy import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'mtic' has no attribute {name!r}")
