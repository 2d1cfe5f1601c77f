"""Turn expected user errors (bad data, bad config) into one clear line and a non-zero exit."""
from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from mtic.config_schema import ConfigError
from mtic.data.errors import BundleError
from mtic.deploy.artifact import ExportError
from mtic.eval.supervision import LabelFreeViolation
from mtic.models.checkpoint_io import ArtifactError

log = logging.getLogger("mtic")
USER_ERRORS = (BundleError, ConfigError, FileNotFoundError, LabelFreeViolation, ArtifactError, ExportError)
EXIT_USER_ERROR = 2


@contextlib.contextmanager
def friendly_errors() -> Iterator[None]:
    """Print `error: <message>` for user errors and exit with status 2; other errors propagate."""
    try:
        yield
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None
