"""A Hydra callback (conf/config.yaml `hydra.callbacks`): the run or sweep directory must be creatable, checked
before Hydra makes it, so an unwritable `hydra.run.dir` (or MTIC_OUTPUT) is one line and exit 2, not a traceback."""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mtic.cli_errors import EXIT_USER_ERROR


def unwritable_reason(directory: str | Path) -> str | None:
    """Why `directory` cannot be created (or written, when it exists), or None when it can. Nothing is left
    behind: a probe directory is made in the deepest existing ancestor and removed."""
    path = Path(directory).expanduser().absolute()
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor} is a file, not a directory"
    try:
        probe = tempfile.mkdtemp(prefix=".mtic-write-check-", dir=ancestor)
    except OSError as err:
        return f"cannot create a directory in {ancestor} ({err.strerror or err})"
    shutil.rmtree(probe, ignore_errors=True)
    return None


def _refuse(directory: str, key: str) -> None:
    reason = unwritable_reason(directory)
    if reason:
        print(f"error: {directory}: the run directory cannot be created: {reason}; set {key} (or MTIC_OUTPUT) "
              "to a writable directory", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR)


class RunDirCheck(Callback):
    """Check `hydra.run.dir` (single run) or `hydra.sweep.dir` (multirun) before any job starts."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _refuse(str(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _refuse(str(config.hydra.sweep.dir), "hydra.sweep.dir")


__all__ = ["RunDirCheck", "unwritable_reason"]
