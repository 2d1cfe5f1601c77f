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


def _wrappers() -> tuple[type[BaseException], ...]:
    """Exceptions that only wrap another one (`raise Wrapper(...) from err`): Hydra's `instantiate` wraps whatever
    a constructor raises, e.g. the BundleError of a data module reading a bad bundle."""
    try:
        from hydra.errors import InstantiationException
    except ImportError:  # pragma: no cover - hydra is a dependency; the mtic tools do not need it
        return ()
    return (InstantiationException,)


def user_error(err: BaseException) -> BaseException | None:
    """The user error behind `err`: `err` itself, or the one a wrapper was raised from (explicit `__cause__`
    only, through wrappers only: an implicit `__context__` may be an unrelated, handled error); None otherwise."""
    wrappers, seen = _wrappers(), set()
    while err is not None and id(err) not in seen:
        if isinstance(err, USER_ERRORS):
            return err
        if not isinstance(err, wrappers):
            return None
        seen.add(id(err))
        err = err.__cause__
    return None


@contextlib.contextmanager
def friendly_errors() -> Iterator[None]:
    """Print `error: <message>` for user errors and exit with status 2; other errors propagate."""
    try:
        yield
    except Exception as err:
        found = user_error(err)
        if found is None:
            raise
        print(f"error: {found}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None
