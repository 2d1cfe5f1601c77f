"""Errors raised for bad input data: they name the file and, where there is one, the line."""
from __future__ import annotations

from pathlib import Path


class BundleError(ValueError):
    """A data bundle is malformed. The message names the file and the 1-based line number."""

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.reason = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class MissingBundleFileError(BundleError):
    """A file that the chosen pipeline needs is absent from the bundle."""


class CorpusError(BundleError):
    """A general chat corpus (`pipeline=pretrain corpus=jsonl | hub`) is malformed: the message names the file and
    line (a JSONL) or the dataset and row (`datasets.load_dataset`)."""
