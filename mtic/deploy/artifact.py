"""The export directory: everything a server needs, nothing from the training config (torch-free).

```
<export>/
  deploy.json          view, max length, text prefix, decoding, level names, leaf -> intent map, model files
  model_card.json      version, market, intents count, parity figures, created time, source checkpoint hash
  intents.jsonl        the taxonomy (bundle format)
  model.onnx           input_ids, attention_mask (batch, seq) -> probs_level1..probs_levelD (batch, classes)
  model.int8.onnx      the same, int8 dynamic quantisation (optional)
  tokenizer/           tokenizer.json (+ HF files)
  selector/            selected-concat only: selector.onnx (+ .int8), tokenizer/, its settings in deploy.json
```
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mtic.data.bundle import read_intents
from mtic.data.schema import Intent
from mtic.data.taxonomy import Taxonomy
from mtic.inputs.views import (
    VIEW_NAMES,
    LastQueryView,
    NaiveConcatView,
    SelectedConcatView,
    Selector,
    View,
    view_target,
)

FORMAT_VERSION = 1
DEPLOY_FILE = "deploy.json"
CARD_FILE = "model_card.json"
INTENTS_FILE = "intents.jsonl"
TOKENIZER_DIR = "tokenizer"
SELECTOR_DIR = "selector"  # the export's selector folder (this format), not mtic.models.selector's <run dir>/selector
MODEL_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
INPUT_NAMES = ("input_ids", "attention_mask")
PRECISIONS = ("auto", "fp32", "int8")

SERVABLE_VIEWS = (LastQueryView, NaiveConcatView, SelectedConcatView)
# the servable view classes' `_target_` by their short name (mtic.inputs.views.VIEW_NAMES), stored in deploy.json
VIEW_KINDS = {VIEW_NAMES[c]: view_target(c) for c in SERVABLE_VIEWS}
# runs configured before the views moved from mtic.data to mtic.inputs (issue 21) name the old module
LEGACY_VIEW_MODULE = "mtic.data.views."


class ExportError(ValueError):
    """An export cannot be made or read; the message says what to do."""


@dataclass(frozen=True)
class ViewSpec:
    """How a session becomes model input: `kind` in VIEW_KINDS, `separator` between joined queries."""

    kind: str
    separator: str = " | "

    def __post_init__(self) -> None:
        if self.kind not in VIEW_KINDS:
            raise ExportError(f"view {self.kind!r} cannot be served; supported views: {', '.join(VIEW_KINDS)}")

    @classmethod
    def from_target(cls, target: str, separator: str | None = None) -> ViewSpec:
        """From a view config's `_target_` (e.g. mtic.inputs.views.NaiveConcatView)."""
        if target.startswith(LEGACY_VIEW_MODULE):
            target = f"{LastQueryView.__module__}.{target[len(LEGACY_VIEW_MODULE):]}"
        by_target = {v: k for k, v in VIEW_KINDS.items()}
        if target not in by_target:
            raise ExportError(f"view {target} cannot be served by an encoder export; "
                              f"supported: {', '.join(VIEW_KINDS.values())}")
        return cls(by_target[target], " | " if separator is None else separator)

    @property
    def needs_selector(self) -> bool:
        """The selected-concat view: a trained selector picks the history query."""
        return self.kind == VIEW_NAMES[SelectedConcatView]

    def build(self, selector: Selector | None = None) -> View:
        """The mtic.inputs.views object (the same code the model was trained and tested with)."""
        if self.kind == VIEW_NAMES[LastQueryView]:
            return LastQueryView()
        if self.kind == VIEW_NAMES[NaiveConcatView]:
            return NaiveConcatView(separator=self.separator)
        if selector is None:
            raise ExportError(f"the {self.kind} view needs its trained selector (<run dir>/selector)")
        return SelectedConcatView(selector=selector, separator=self.separator)


@dataclass
class SelectorSpec:
    """The selective-concat selector: a pair cross-encoder exported beside the classifier."""

    threshold: float
    max_length: int
    text_prefix: str
    pad_token_id: int
    models: dict[str, str] = field(default_factory=dict)
    tokenizer: str = f"{SELECTOR_DIR}/{TOKENIZER_DIR}/tokenizer.json"


@dataclass
class DeploySpec:
    """Contents of deploy.json."""

    view: ViewSpec
    max_length: int
    text_prefix: str
    pad_token_id: int
    decoding: str
    levels: list[list[str]]
    leaf_intents: list[str]
    leaf_paths: list[list[int]]
    models: dict[str, str]
    outputs: list[str]
    tokenizer: str = f"{TOKENIZER_DIR}/tokenizer.json"
    selector: SelectorSpec | None = None
    format: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> DeploySpec:
        if int(row.get("format", 0)) > FORMAT_VERSION:
            raise ExportError(f"export format {row.get('format')} is newer than this mtic ({FORMAT_VERSION}); upgrade")
        row = dict(row)
        row["view"] = ViewSpec(**row["view"])
        row["selector"] = SelectorSpec(**row["selector"]) if row.get("selector") else None
        return cls(**row)


def level_output_names(depth: int) -> list[str]:
    return [f"probs_level{level + 1}" for level in range(depth)]


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def write_intents(path: Path, intents: list[Intent]) -> None:
    path.write_text("".join(json.dumps(i.to_json(), ensure_ascii=False) + "\n" for i in intents), encoding="utf-8")


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def is_export_dir(path: str | Path) -> bool:
    return (Path(path) / DEPLOY_FILE).is_file()


@dataclass
class Artifact:
    """A read export directory."""

    root: Path
    spec: DeploySpec
    taxonomy: Taxonomy
    card: dict[str, Any]

    def model_path(self, precision: str = "auto", selector: bool = False) -> tuple[Path, str]:
        """(ONNX file, precision used); `auto` prefers int8 when the export has it."""
        if precision not in PRECISIONS:
            raise ExportError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        models = self.spec.selector.models if selector and self.spec.selector else self.spec.models
        if precision == "auto":
            precision = "int8" if "int8" in models else "fp32"
        if precision not in models:
            raise ExportError(f"{self.root}: no {precision} model in this export (has {', '.join(models)}); "
                              f"re-export with int8 enabled or pick another precision")
        return self.root / models[precision], precision


def read_artifact(path: str | Path) -> Artifact:
    """Read deploy.json, intents.jsonl and model_card.json of an export directory."""
    root = Path(path)
    if not is_export_dir(root):
        raise ExportError(f"{root}: not an mtic export ({DEPLOY_FILE} missing); make one with: mtic export CKPT {root}")
    from mtic.models.checkpoint_io import ArtifactError, one_line, read_json_file

    deploy = read_json_file(root / DEPLOY_FILE, DEPLOY_FILE)
    try:
        if not isinstance(deploy, dict):
            raise TypeError(f"a JSON {type(deploy).__name__}, not an object")
        spec = DeploySpec.from_json(deploy)
    except ExportError:
        raise
    except (KeyError, TypeError, ValueError) as err:
        raise ArtifactError(root / DEPLOY_FILE, f"not an mtic deploy spec ({type(err).__name__}: {one_line(err)}); "
                                                "the export is damaged: export again") from None
    taxonomy = Taxonomy.from_intents(read_intents(root / INTENTS_FILE))
    card_path = root / CARD_FILE
    card = read_json_file(card_path, CARD_FILE) if card_path.is_file() else {}
    if not isinstance(card, dict):
        raise ArtifactError(card_path, "not a JSON object; the export is damaged: export again")
    return Artifact(root, spec, taxonomy, card)
