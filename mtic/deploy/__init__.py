"""Deployment: ONNX export (+int8) of the HTC, a torch-free predictor, and the HTTP intent service.

export.py (checkpoint -> export directory, parity), artifact.py (the directory format), predictor.py
(`IntentClassifier`), runtime.py (onnxruntime / PyTorch runtimes), service.py + batching.py (FastAPI app,
micro-batching), pipeline.py (`pipeline=export`), cli.py (`mtic export`, `mtic serve`).
"""
from __future__ import annotations

from typing import Any

_EXPORTS = {"IntentClassifier": "predictor", "Prediction": "predictor", "export_checkpoint": "export",
            "export_model": "export", "create_app": "service", "serve": "service", "ServiceSettings": "settings"}
__all__ = ["IntentClassifier", "Prediction", "ServiceSettings", "create_app", "export_checkpoint", "export_model", "serve"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:  # lazy: the predictor must not pull in torch through the export code
        import importlib

        return getattr(importlib.import_module(f"mtic.deploy.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'mtic.deploy' has no attribute {name!r}")
