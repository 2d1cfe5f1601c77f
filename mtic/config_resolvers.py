"""OmegaConf resolvers of mtic's configs, registered when `mtic` is imported (run.py, tests, the `mtic` command).

- `${mtic.bundle_field:KEY,DATA_DIR,BUNDLE,FALLBACK}`: KEY (`market` or `languages`) of the `bundle.yaml` of the
  bundle this run reads (`paths.data_dir` when set, else `market.bundle`) when that is a bundle directory; FALLBACK
  for a spec such as `demo:sg` or `xsid:zh`, a directory without a readable `bundle.yaml`, or a bad value (the
  bundle reader reports those with file and line when the data is read). Cheap and never raises: Hydra
  resolves it for the run directory's name before anything else runs.
- `${mtic.encoder_for:LANGUAGES}`: the market's default encoder (`mtic.data.languages.encoder_for`).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from omegaconf import ListConfig, OmegaConf

BUNDLE_META_FILE = "bundle.yaml"  # mtic.data.bundle.BUNDLE_FILE, not imported: resolving stays import-light
FIELDS = ("market", "languages")


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if isinstance(value, ListConfig) else value


def bundle_yaml(data_dir: Any, bundle: Any) -> Path | None:
    """The bundle.yaml of the run's bundle (`paths.data_dir` when set, else `market.bundle`) when that is a bundle
    directory holding one; None for a spec such as demo:sg."""
    spec = data_dir or bundle
    if not spec:
        return None
    try:
        path = Path(str(spec)).expanduser() / BUNDLE_META_FILE
        return path if path.is_file() else None
    except OSError:
        return None


@functools.lru_cache(maxsize=32)
def _parsed(path: Path, mtime_ns: int) -> dict | None:
    """bundle.yaml parsed once per version of the file (every access to market.name resolves again)."""
    try:
        meta = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return meta if isinstance(meta, dict) else None


def bundle_meta(data_dir: Any, bundle: Any) -> dict | None:
    """The parsed bundle.yaml of the run's bundle directory, or None (a spec, no such file, unreadable)."""
    path = bundle_yaml(data_dir, bundle)
    if path is None:
        return None
    try:
        return _parsed(path, path.stat().st_mtime_ns)
    except OSError:
        return None


def bundle_field(key: str, data_dir: Any, bundle: Any, fallback: Any) -> Any:
    if key not in FIELDS:
        raise ValueError(f"mtic.bundle_field reads one of {FIELDS}, not {key!r}")
    value = (bundle_meta(data_dir, bundle) or {}).get(key)
    if key == "market" and isinstance(value, str) and value.strip():
        return value.strip()
    if key == "languages" and isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return ListConfig(value)  # a config node: OmegaConf.resolve (Hydra's --resolve) cannot store a plain list
    return fallback


def encoder_for(languages: Any) -> str:
    from mtic.data.languages import encoder_for as choose

    return choose(_plain(languages) or [])


def register() -> None:
    """Register the resolvers once (idempotent)."""
    for name, function in (("mtic.bundle_field", bundle_field), ("mtic.encoder_for", encoder_for)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)


def market_choice(cfg: Any) -> dict[str, Any]:
    """What the run's market resolved to and why: name, languages, encoder, where they came from (the
    bundle.yaml read, or the market config) and the reason for the encoder. Recorded in results.json, logged
    at start."""
    from mtic.data.languages import encoder_for as choose
    from mtic.data.languages import encoder_reason

    market = cfg.market
    data_dir = OmegaConf.select(cfg, "paths.data_dir", default=None)
    read = bundle_meta(data_dir, market.get("bundle")) is not None
    source = bundle_yaml(data_dir, market.get("bundle")) if read else None
    languages = list(market.languages)
    encoder = market.get("encoder")
    reason = encoder_reason(languages) if encoder == choose(languages) else "set in the config"
    return {"name": market.name, "languages": languages, "encoder": encoder, "encoder_reason": reason,
            "from": str(source) if source is not None else "market config"}


def market_line(choice: dict[str, Any]) -> str:
    return (f"[mtic] market {choice['name']} (from {choice['from']}), languages {', '.join(choice['languages'])}, "
            f"encoder {choice['encoder']} ({choice['encoder_reason']})")
