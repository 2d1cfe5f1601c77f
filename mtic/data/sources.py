"""Resolve a bundle spec from the config (`demo:sg`, `sgd:`, `xsid:de`, a directory) to a bundle directory."""
from __future__ import annotations

from pathlib import Path

from mtic.data.bundle import require_bundle_dir

DEMO_PREFIX = "demo:"


def resolve_bundle(spec: str, cache_dir: str | Path, datasets_dir: str | Path | None = None) -> Path:
    """A bundle directory for `spec`.

    `demo:<market>` builds the embedded demo bundle into the cache on first use; `sgd:[key=value,...]`,
    `xsid:<lang>[,key=value,...]` and `banking77:[key=value,...]` convert the public dataset found under
    `datasets_dir` (original layout) into the cache on first use (see `mtic.dataset_factories.prepare`); any
    other value is a path to a bundle directory. The factories are imported here only when a spec needs one.
    """
    spec = str(spec)
    if spec.startswith(DEMO_PREFIX):
        from mtic.dataset_factories.demo.build import demo_bundle_dir

        return demo_bundle_dir(spec[len(DEMO_PREFIX) :], cache_dir)
    from mtic.dataset_factories.prepare import cached_bundle, is_spec

    if is_spec(spec):
        return cached_bundle(spec, datasets_dir, cache_dir)
    return require_bundle_dir(spec, absent="bundle directory not found (set market.bundle or paths.data_dir)")


def bundle_fingerprint(bundle_dir: str | Path) -> str:
    """Hash of a bundle's data files (intents, single-turn queries, sessions): derived artifacts keyed by it are
    never reused after the data changes."""
    import hashlib

    root = Path(bundle_dir)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*.jsonl") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
