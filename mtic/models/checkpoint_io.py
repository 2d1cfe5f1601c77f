"""Reading checkpoints and export files that may be missing, empty, truncated or not what they claim to be.

Every failure is an `ArtifactError` whose message is one line, `<file>: <reason>`, so the command-line tools print
`error: <file>: <reason>` and exit 2 (mtic/cli_errors.py) instead of a torch / onnxruntime traceback.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any


class ArtifactError(ValueError):
    """A checkpoint or an export file cannot be used; the message names the file and says why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path, self.reason = str(path), one_line(reason)
        super().__init__(f"{self.path}: {self.reason}")


def one_line(text: object, limit: int = 240) -> str:
    """The first non-empty line of `text`, at most `limit` characters."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    line = lines[0] if lines else type(text).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def existing_file(path: str | Path, what: str = "checkpoint") -> Path:
    """`path` as a Path, after checking that it is a non-empty regular file."""
    path = Path(path)
    a = "an" if what[:1].lower() in "aeiou" else "a"
    if not path.exists():
        raise ArtifactError(path, f"no such {what} file")
    if path.is_dir():
        raise ArtifactError(path, f"is a directory, not {a} {what} file")
    if path.stat().st_size == 0:
        raise ArtifactError(path, f"empty file (0 bytes), not {a} {what}; was it cut off while being written?")
    return path


def read_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """A Lightning checkpoint loaded with `weights_only` (no arbitrary pickled code), or an ArtifactError."""
    import pickle
    import zipfile

    import torch

    path = existing_file(path)
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise on top of the one-line error
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        detail = text.split("WeightsUnpickler error:", 1)[-1]  # torch wraps the real reason in a long notice
        if "Unsupported global" in detail:
            raise ArtifactError(path, "not a plain checkpoint: it holds Python objects that weights-only loading "
                                      f"refuses, never load untrusted pickles ({one_line(detail)})") from None
        raise ArtifactError(path, f"not a PyTorch checkpoint, or a corrupt one ({one_line(detail)})") from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError, KeyError, IndexError,
            UnicodeDecodeError) as err:
        raise ArtifactError(path, f"truncated or corrupt checkpoint ({type(err).__name__}: {one_line(err)})") from None
    if not isinstance(state, dict):
        raise ArtifactError(path, f"not a Lightning checkpoint (holds a {type(state).__name__}, not a dict)")
    return state


def read_json_file(path: str | Path, what: str = "JSON file") -> Any:
    """A JSON file of an export (deploy.json, model_card.json), or an ArtifactError naming what is wrong."""
    path = existing_file(path, what)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ArtifactError(path, f"not UTF-8 text (byte {err.start}); the export is damaged: export again") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ArtifactError(path, f"line {err.lineno}: not valid JSON ({err.msg}); the export is damaged: export "
                                  "again") from None
    except (RecursionError, ValueError) as err:
        raise ArtifactError(path, f"not readable JSON ({one_line(err)}); the export is damaged: export again") from None
