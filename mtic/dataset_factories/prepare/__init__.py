"""Public benchmarks (SGD, xSID, Banking77) in their original layouts -> data bundles.

One module per source (`sgd`, `xsid`, `banking77`), each with an options dataclass, `source_files(src, opts)`
and `build(src, opts) -> (Bundle, unlabelled gold sessions)`. Entry points:
- `prepare(name, src, out, **options)`: write a bundle (+ `sessions/unlabeled.gold.jsonl`) anywhere
  (`mtic data prepare sgd --src DIR --out DIR`);
- `cached_bundle(spec, datasets_dir, cache_dir)`: the bundle of a spec such as `sgd:`, `sgd:max_dialogues=1500`,
  `xsid:de` or `banking77:seed=1`, built on first use into `<cache>/bundles/<name>-v<version>` and reused.
  The version hashes the converter name and options, the converter code and the bytes of every source file,
  so changed data, options or code never reuse a stale bundle.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from mtic.data import bundle as bundle_module
from mtic.data import jsonl as jsonl_module
from mtic.data.bundle import BUNDLE_FILE, write_bundle, write_unlabeled_gold
from mtic.data.bundle_cache import build_once
from mtic.data.errors import BundleError
from mtic.dataset_factories import craft
from mtic.dataset_factories.prepare import banking77, common, sgd, transitions, xsid
from mtic.dataset_factories.prepare.common import options_from

log = logging.getLogger("mtic")
CACHE_SUBDIR = "bundles"
REPO_ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Converter:
    """A source: its module, options class and the option a bare spec argument sets (`xsid:de` -> lang)."""

    module: ModuleType
    options: type
    positional: str | None = None

    @property
    def folder(self) -> str:
        return self.module.FOLDER


CONVERTERS: dict[str, Converter] = {
    "sgd": Converter(sgd, sgd.SGDOptions),
    "xsid": Converter(xsid, xsid.XSIDOptions, positional="lang"),
    "banking77": Converter(banking77, banking77.Banking77Options),
}


def is_spec(spec: str) -> bool:
    """Whether `spec` names a converter (`<source>:...`)."""
    return str(spec).split(":", 1)[0] in CONVERTERS and ":" in str(spec)


def option_value(name: str, key: str, text: str, where: str) -> Any:
    """A converter option from text: kept as is for string options (`lang=no`), else a YAML scalar (1500, null)."""
    if isinstance(getattr(CONVERTERS[name].options(), key, None), str):
        return text.strip()
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise BundleError(where, f"option {key}: cannot read the value {text!r}") from None


def parse_spec(spec: str) -> tuple[str, Any]:
    """`xsid:de,seed=1` -> ("xsid", XSIDOptions(lang="de", seed=1)); a bare value sets the source's positional
    option (xsid: lang)."""
    name, _, rest = str(spec).partition(":")
    if name not in CONVERTERS:
        raise BundleError(spec, f"unknown source '{name}' (known: {', '.join(CONVERTERS)})")
    converter = CONVERTERS[name]
    raw: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            if converter.positional is None or converter.positional in raw:
                raise BundleError(spec, f"'{item}' is not key=value (the {name} source takes key=value options only)")
            raw[converter.positional] = item
            continue
        raw[key.strip()] = option_value(name, key.strip(), value, str(spec))
    return name, options_from(converter.options, raw, str(spec))


def source_dir(name: str, datasets_dir: str | Path | None) -> Path:
    """`<datasets_dir>/<folder>` (a relative datasets_dir is tried from the working directory, then the repo)."""
    if datasets_dir is None or str(datasets_dir).strip() == "":
        raise FileNotFoundError(f"no datasets directory configured for '{name}': set paths.datasets_dir or MTIC_DATASETS")
    base = Path(datasets_dir).expanduser()
    tried = [base] if base.is_absolute() else [Path.cwd() / base, REPO_ROOT / base]
    for root in tried:
        if (root / CONVERTERS[name].folder).is_dir():
            return root / CONVERTERS[name].folder
    where = " or ".join(str((root / CONVERTERS[name].folder).resolve()) for root in tried)
    raise FileNotFoundError(
        f"{name} data not found: {where} does not exist (set paths.datasets_dir or MTIC_DATASETS to the folder "
        f"holding {CONVERTERS[name].folder}/ in its original layout)"
    )


def build(name: str, src: str | Path, options: Any) -> tuple[bundle_module.Bundle, list]:
    """(bundle, unlabelled gold sessions) of a source folder in its original layout."""
    src = Path(src).expanduser()
    if not src.is_dir():
        raise FileNotFoundError(f"{name} source folder not found: {src}")
    return CONVERTERS[name].module.build(src, options)


def prepare(name: str, src: str | Path, out: str | Path, overwrite: bool = False, **options: Any) -> Path:
    """Convert `src` (original layout) into the bundle directory `out` (atomic), gold side file included."""
    if name not in CONVERTERS:
        raise BundleError(name, f"unknown source (known: {', '.join(CONVERTERS)})")
    opts = options_from(CONVERTERS[name].options, options, name)
    bundle, gold = build(name, src, opts)
    root = write_bundle(bundle, out, overwrite=overwrite)
    if gold:
        write_unlabeled_gold(root, gold)
    return root


def version(name: str, src: Path, options: Any) -> str:
    """Hash of the converter name, options and code and of every source file's bytes."""
    converter = CONVERTERS[name]
    digest = hashlib.sha256(json.dumps({"name": name, "options": asdict(options)}, sort_keys=True).encode())
    code = (converter.module, common, transitions, craft, bundle_module, jsonl_module)  # jsonl: write_jsonl
    for module in code:
        digest.update(Path(module.__file__).read_bytes())
    for path in converter.module.source_files(src, options):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def cached_bundle(spec: str, datasets_dir: str | Path | None, cache_dir: str | Path) -> Path:
    """The bundle directory of `spec`, built into `<cache>/bundles/` on first use (temp dir + atomic rename)."""
    name, options = parse_spec(spec)
    src = source_dir(name, datasets_dir)
    target = Path(cache_dir).expanduser() / CACHE_SUBDIR / f"{CONVERTERS[name].module.cache_name(options)}-v{version(name, src, options)}"
    if (target / BUNDLE_FILE).is_file():
        return target
    log.info("building the %s bundle from %s into %s (first use)", spec, src, target)

    def build_into(staging: Path) -> Path:
        bundle, gold = build(name, src, options)
        built = write_bundle(bundle, staging / "bundle")
        if gold:
            write_unlabeled_gold(built, gold)
        return built

    return build_once(target, build_into)
