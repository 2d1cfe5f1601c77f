"""HTC -> ONNX (dynamic batch and sequence axes) + optional int8 dynamic quantisation + everything to serve it.

The graph's outputs are the per-level probabilities softmax(local + global [+ attention]) exactly as the HTC
defines them, so the predictor needs no torch. Export uses the TorchScript exporter (`dynamo=False`), which
traces transformers' BERT-style encoders with dynamic axes reliably; the dummy batch is padded so the traced
attention mask path is the general one. A parity check against PyTorch on the bundle's valid split (argmax
agreement, max |diff| of probabilities, accuracy of both) is printed and stored in model_card.json.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtic.data.schema import Session, Turn
from mtic.deploy.artifact import (
    CARD_FILE,
    DEPLOY_FILE,
    FORMAT_VERSION,
    INPUT_NAMES,
    INTENTS_FILE,
    MODEL_FILES,
    SELECTOR_DIR,
    TOKENIZER_DIR,
    DeploySpec,
    ExportError,
    SelectorSpec,
    ViewSpec,
    file_sha256,
    level_output_names,
    write_intents,
    write_json,
)
from mtic.deploy.parity import parity_report
from mtic.deploy.run_context import RunContext, bundle_path, load_for_serving

log = logging.getLogger("mtic")
DEFAULT_OPSET = 17


class LevelProbabilities(nn.Module):
    """HTC (input_ids, attention_mask) -> per-level probabilities (the graph that is exported)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(x.float().softmax(-1) for x in self.model(input_ids, attention_mask))


class PairProbability(nn.Module):
    """Selector PairScorer (input_ids, attention_mask) -> P(same intent) per pair."""

    def __init__(self, scorer: nn.Module) -> None:
        super().__init__()
        self.scorer = scorer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.scorer(input_ids, attention_mask).float())


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Tracer/deprecation warnings and onnxruntime's pre-processing advice are noise for users of the export."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def export_onnx(module: nn.Module, path: Path, output_names: Sequence[str], vocab_size: int, pad_id: int,
                opset: int = DEFAULT_OPSET) -> Path:
    """Trace `module(input_ids, attention_mask)` into `path` with dynamic batch and sequence axes."""
    import onnx

    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(min(5, vocab_size - 1), vocab_size, (2, 8), generator=generator)
    mask = torch.ones_like(ids)
    ids[1, 5:], mask[1, 5:] = pad_id, 0  # a padded row: the traced mask handling is the general one
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    axes.update({name: {0: "batch"} for name in output_names})
    module.eval()
    with _quiet(), torch.no_grad():
        torch.onnx.export(module, (ids, mask), str(path), input_names=list(INPUT_NAMES),
                          output_names=list(output_names), dynamic_axes=axes, opset_version=opset,
                          do_constant_folding=True, dynamo=False)
    module.eval()
    onnx.checker.check_model(str(path))
    return path


def quantize_int8(src: Path, dst: Path, per_channel: bool = True, reduce_range: bool = True) -> Path:
    """int8 dynamic quantisation (weights int8, activations quantised on the fly) with onnxruntime."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel,
                         reduce_range=reduce_range, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return dst


def save_tokenizer(tokenizer: Any, out: Path) -> str:
    """Save an HF tokenizer; the export needs its tokenizer.json (fast tokenizers only)."""
    tokenizer.save_pretrained(str(out))
    if not (out / "tokenizer.json").is_file():
        raise ExportError(f"{type(tokenizer).__name__} is not a fast tokenizer (no tokenizer.json); export needs one")
    return "tokenizer.json"


def _pad_id(tokenizer: Any) -> int:
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id):
        if value is not None:
            return int(value)
    return 0


def _mtic_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mtic")
    except PackageNotFoundError:
        return "0+unknown"


def _export_selector(selector: Any, out: Path, int8: bool, per_channel: bool, reduce_range: bool,
                     opset: int) -> SelectorSpec:
    root = out / SELECTOR_DIR
    (root / TOKENIZER_DIR).mkdir(parents=True, exist_ok=True)
    pad = _pad_id(selector.tokenizer)
    fp32 = export_onnx(PairProbability(selector.scorer), root / "selector.onnx", ["probability"],
                       int(selector.scorer.encoder.config.vocab_size), pad, opset)
    models = {"fp32": f"{SELECTOR_DIR}/{fp32.name}"}
    if int8:
        q = quantize_int8(fp32, root / "selector.int8.onnx", per_channel, reduce_range)
        models["int8"] = f"{SELECTOR_DIR}/{q.name}"
    save_tokenizer(selector.tokenizer, root / TOKENIZER_DIR)
    return SelectorSpec(float(selector.threshold), int(selector.max_length), selector.text_prefix, pad, models)


def export_model(
    model: Any,
    out_dir: str | Path,
    view: ViewSpec,
    sessions: Sequence[Session] | None = None,
    selector: Any = None,
    int8: bool = True,
    per_channel: bool = True,
    reduce_range: bool = True,
    opset: int = DEFAULT_OPSET,
    parity_limit: int | None = 500,
    parity_split: str = "valid",
    source_checkpoint: str | Path | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export a (trained) HTC to `out_dir`; returns the model card (also written to model_card.json).

    `sessions` (labelled valid sessions) feed the parity check; without them the intent titles are used.
    `selector` (a trained mtic.models.selector.Selector) is required for, and exported with, selected_concat.
    """
    from mtic.models.htc import leaf_paths, level_decoding_of

    if view.needs_selector and selector is None:
        raise ExportError(f"the {view.kind} view needs its trained selector: export from the run directory of "
                          "pipeline=selective (it holds <run dir>/selector) or pass selector=load_selector(path)")
    out = Path(out_dir)
    started = time.time()
    for stale in [*MODEL_FILES.values(), SELECTOR_DIR, TOKENIZER_DIR]:
        target = out / stale
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    (out / TOKENIZER_DIR).mkdir(parents=True, exist_ok=True)
    model = model.eval()
    taxonomy = model.taxonomy
    outputs = level_output_names(taxonomy.depth)
    pad = int(model.pad_token_id)
    fp32 = export_onnx(LevelProbabilities(model), out / MODEL_FILES["fp32"], outputs,
                       int(model.encoder.config.vocab_size), pad, opset)
    models = {"fp32": fp32.name}
    if int8:
        models["int8"] = quantize_int8(fp32, out / MODEL_FILES["int8"], per_channel, reduce_range).name
    save_tokenizer(model.tokenizer, out / TOKENIZER_DIR)
    selector_spec = _export_selector(selector, out, int8, per_channel, reduce_range, opset) if selector else None
    hp = model.hparams
    spec = DeploySpec(view=view, max_length=int(hp.max_length), text_prefix=hp.text_prefix or "", pad_token_id=pad,
                      decoding=level_decoding_of(hp), levels=[list(x) for x in taxonomy.levels],
                      leaf_intents=list(model.leaf_intents), leaf_paths=leaf_paths(taxonomy).tolist(),
                      models=models, outputs=outputs, selector=selector_spec)
    write_json(out / DEPLOY_FILE, spec.to_json())
    write_intents(out / INTENTS_FILE, taxonomy.intents)

    if not sessions:  # no bundle, or an empty split: the intent titles still exercise the whole graph
        sessions = [Session(id=i.id, turns=(Turn(i.title, i.id),)) for i in taxonomy.intents]
        parity_split = "intent_titles"
    if parity_limit:
        sessions = list(sessions)[:parity_limit]
    parity = {"split": parity_split, "sessions": len(sessions)}
    for precision in models:
        parity[precision] = parity_report(model, view.build(selector), out, precision, sessions)

    meta = dict(meta or {})
    files = {name: {"bytes": (out / rel).stat().st_size} for name, rel in models.items()}
    card = {
        "name": f"mtic-htc-{meta.get('market') or 'custom'}",
        "version": file_sha256(fp32)[:12],
        "format": FORMAT_VERSION,
        "mtic_version": _mtic_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "market": meta.get("market"),
        "markets": [meta["market"]] if meta.get("market") else [],
        "languages": meta.get("languages") or [],
        "experiment": meta.get("experiment"),
        "backbone": hp.backbone,
        "view": asdict(view),
        "max_length": spec.max_length,
        "text_prefix": spec.text_prefix,
        "decoding": spec.decoding,
        "intents": len(taxonomy),
        "levels": list(taxonomy.num_classes),
        "selector": selector_spec is not None,
        "quantization": {"int8": int8, "method": "onnxruntime dynamic", "per_channel": per_channel,
                         "reduce_range": reduce_range} if int8 else None,
        "source_checkpoint": ({"path": str(source_checkpoint), "sha256": file_sha256(source_checkpoint)}
                              if source_checkpoint else None),
        "files": files,
        "parity": parity,
        "export_seconds": round(time.time() - started, 2),
    }
    write_json(out / CARD_FILE, card)
    return card


def parity_sessions(bundle_dir: str | Path, split: str = "valid") -> tuple[list[Session], dict[str, Any]]:
    """The labelled sessions of `split` read from the bundle, and its market metadata. A bundle without a valid
    sessions file gives its single-turn valid queries as one-turn sessions (what the HTC selects its model on)."""
    from mtic.data.bundle import read_bundle

    bundle = read_bundle(bundle_dir)
    if split == "valid" and split not in bundle.sessions:
        sessions = [q.as_session(f"valid-{k}") for k, q in enumerate(bundle.single_turn) if q.split == "valid"]
    else:
        sessions = bundle.require_sessions(split)
    return sessions, {"market": bundle.meta.market, "languages": list(bundle.meta.languages)}


def export_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    view: ViewSpec | str | None = None,
    bundle: str | None = None,
    cache_dir: str | None = None,
    context: RunContext | None = None,
    selector: str | Path | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Export an HTC checkpoint (`mtic export` and `pipeline=export`). The run context (view, bundle, market)
    defaults to the checkpoint's saved run config; `view`, `bundle` and `selector` (a selector directory, for
    selected_concat) override it. `options` go to `export_model`."""
    context, spec, model, trained = load_for_serving(checkpoint, view, cache_dir, context, selector)
    meta: dict[str, Any] = {"market": context.market, "languages": context.languages, "experiment": context.experiment}
    sessions = None
    bundle = bundle or context.bundle
    if bundle:
        bundle_dir = bundle_path(bundle, cache_dir or context.cache_dir, context.datasets_dir)
        sessions, bundle_meta = parity_sessions(bundle_dir, options.get("parity_split", "valid"))
        meta.update({k: v for k, v in bundle_meta.items() if not meta.get(k)})
    else:
        log.warning("export: no bundle known for %s; parity is checked on the intent titles", checkpoint)
    return export_model(model, out_dir, spec, sessions, trained, source_checkpoint=checkpoint, meta=meta, **options)


def parity_summary(card: dict[str, Any]) -> str:
    """Human-readable parity lines for the CLI and the pipeline."""
    parity = card.get("parity") or {}
    lines = [f"parity on {parity.get('split')} ({parity.get('sessions')} sessions):"]
    for precision in ("fp32", "int8"):
        row = parity.get(precision)
        if row:
            acc = "" if row.get("accuracy_onnx") is None else (
                f", accuracy onnx {row['accuracy_onnx']:.4f} vs torch {row['accuracy_torch']:.4f}")
            lines.append(f"  {precision}: argmax agreement {row['argmax_agreement']:.4f}, "
                         f"max |diff| {row['max_abs_diff']:.2e}{acc}")
    return "\n".join(lines)
