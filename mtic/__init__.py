"""mtic: multi-turn intent classification. `from mtic import IntentClassifier` loads a served model (lazily)."""
from __future__ import annotations

from typing import Any

__all__ = ["IntentClassifier", "Prediction"]


def _register_config_resolvers() -> None:
    """Config resolvers (mtic/config_resolvers.py) exist wherever mtic is imported: run.py, tests composing configs,
    `mtic export` reading a run's saved config."""
    from mtic.config_resolvers import register

    register()


_register_config_resolvers()


def __getattr__(name: str) -> Any:
    if name in __all__:  # imported on first use: `import mtic` stays light (no torch, no onnxruntime)
        from mtic.deploy import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'mtic' has no attribute {name!r}")
