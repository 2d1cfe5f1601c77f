"""st_distill's teacher: a symbol-tuned LM that reads no gold multi-turn label, trained once and cached, or given.

The teacher's config is the run's config with the groups of its `teacher` node (backbone, labels, data, model,
placed there by experiment/st_distill.yaml, which points their interpolations at the teacher's own groups:
`${teacher.backbone.name}`, `${teacher.labels}`), resolved, in place of the classifier's, and `teacher.trainer`
merged over the run's trainer; a model or labels node naming another backbone than the teacher's is a ConfigError.
Its data trains on the single-turn queries and sessions crafted from them
(`data.train_sessions=crafted`) and selects on the single-turn valid queries: a label-free run stays label-free.

The teacher is trained (and, with `teacher_test`, tested) once per (bundle files, training settings, budget, seed)
into `<artifact_dir>/teacher-<market>-<key>/` (mtic/pipelines/cached_model.py); `pipeline.teacher_checkpoint`
gives a trained one instead (the LoRA weights of `teacher.model`; a checkpoint whose keys do not fit that model is
an error). Either way its checkpoint is named by the SHA-256 of its bytes, which keys the labels it gives.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from mtic.config_schema import ConfigError, validate_config
from mtic.data.sources import bundle_fingerprint
from mtic.eval.results import RESULTS_FILE
from mtic.eval.supervision import Supervision
from mtic.inputs.datamodule import config_supervision
from mtic.models.checkpoint_io import existing_file, read_checkpoint
from mtic.models.rollout_constants import SCORE
from mtic.pipelines.cached_model import settings_key, train_once
from mtic.pipelines.train_eval import build_datamodule, build_model, bundle_dir_of
from mtic.pipelines.train_eval import run as train_eval_run

TEACHER_NODE = "teacher"
TEACHER_GROUPS = ("backbone", "labels", "data", "model")
INFERENCE_KEYS = ("decode", "history", "max_new_tokens", "label_probs", "match_embedder", "matcher")
"""Model keys that only decoding reads: they key the teacher's labels, not its training."""
TRAINER_RUNTIME_KEYS = ("default_root_dir", "enable_progress_bar", "enable_model_summary", "log_every_n_steps")
TEST_DIR = "test"


def teacher_config(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """The teacher's run config (see the module doc), writing into `run_dir`; a ConfigError names a missing part
    and a teacher that cannot give per-intent probabilities."""
    node = cfg.get(TEACHER_NODE)
    missing = [g for g in TEACHER_GROUPS if not (node or {}).get(g)]
    if missing:
        raise ConfigError(f"experiment '{cfg.experiment}' needs a teacher: '{TEACHER_NODE}.{missing[0]}' is missing "
                          "(see conf/experiment/st_distill.yaml)")
    out = copy.deepcopy(cfg)
    with open_dict(out):
        for group in TEACHER_GROUPS:
            out[group] = OmegaConf.to_container(cfg[TEACHER_NODE][group], resolve=True)
        out.trainer = OmegaConf.merge(out.trainer, out[TEACHER_NODE].get("trainer") or {})
        del out[TEACHER_NODE]
        out.pipeline = {"_target_": "mtic.pipelines.train_eval.run"}  # no pseudo-label settings in its results
        out.paths.run_dir = str(run_dir)
        out.paths.data_dir = str(bundle_dir_of(cfg))
        out.experiment = f"{cfg.experiment}-{TEACHER_NODE}"
        out.method = "symbol_tuning"
        out.logger = None  # a stage of this run, not a run of its own in W&B
    validate_config(out)
    named = {f"{TEACHER_NODE}.{g}.{key}": out[g].get(key) for g, key in (("model", "backbone"), ("labels", "tokenizer"))}
    for key, value in named.items():
        if value is not None and value != out.backbone.name:
            raise ConfigError(f"'{key}' is {value!r}, not the teacher's backbone {out.backbone.name!r}: set "
                              f"{key}='${{{TEACHER_NODE}.backbone.name}}'")
    model = out.model
    if model.get("decode") != SCORE or not model.get("label_probs"):
        raise ConfigError(f"the teacher labels by its probability per intent: set {TEACHER_NODE}.model.decode=score "
                          f"and {TEACHER_NODE}.model.label_probs=true (now {model.get('decode')}, "
                          f"{model.get('label_probs')})")
    return out


def _resolved(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def training_settings(teacher_cfg: DictConfig) -> dict[str, Any]:
    """Everything that determines the trained teacher (hashed into its cache key)."""
    model = {k: v for k, v in _resolved(teacher_cfg.model).items() if k not in INFERENCE_KEYS}
    trainer = {k: v for k, v in _resolved(teacher_cfg.trainer).items() if k not in TRAINER_RUNTIME_KEYS}
    return {"model": model, "data": _resolved(teacher_cfg.data), "trainer": trainer, "seed": teacher_cfg.seed}


def inference_settings(teacher_cfg: DictConfig) -> dict[str, Any]:
    """What determines the teacher's answers besides its weights: the model node (labels, decoding, format)."""
    return {"backbone": teacher_cfg.backbone.name, "model": _resolved(teacher_cfg.model)}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Teacher:
    """A teacher checkpoint, its content hash, and where its own results (test metrics) are, if it was tested."""

    checkpoint: Path
    sha256: str
    trained_here: bool
    results_dir: Path | None
    supervision: Supervision

    def metrics(self) -> dict[str, float]:
        """The teacher's test metrics (`test/acc`, ...), empty when it was not tested."""
        path = self.results_dir / RESULTS_FILE if self.results_dir else None
        if path is None or not path.is_file():
            return {}
        found = json.loads(path.read_text(encoding="utf-8")).get("metrics", {})
        return {k: float(v) for k, v in found.items() if k.startswith("test/")}

    def record(self) -> dict[str, Any]:
        """The `teacher` entry of results.json."""
        return {"checkpoint": str(self.checkpoint), "sha256": self.sha256, "trained_here": self.trained_here,
                "results": str(self.results_dir / RESULTS_FILE) if self.results_dir else None,
                "metrics": self.metrics(), "supervision": self.supervision.as_record()}


def teacher_supervision(teacher_cfg: DictConfig, checkpoint: str | None) -> Supervision:
    """The label sources the teacher read: its data config's when trained here (single-turn queries, crafted
    sessions, single-turn valid queries), the checkpoint's name when given."""
    if checkpoint:
        return Supervision(train=[f"checkpoint:{Path(checkpoint).name}"])
    planned = config_supervision(teacher_cfg.data)
    return Supervision(train=planned.train, selection=planned.selection)


def ensure_teacher(cfg: DictConfig, checkpoint: str | None, test: bool, artifact_dir: Path) -> Teacher:
    """The given teacher checkpoint (tested into `<run dir>/teacher/` when `test`), or the cached teacher, trained
    (and tested) now if needed; a cached teacher trained without a test is tested once into its `test/`."""
    if checkpoint:
        path = existing_file(Path(checkpoint).expanduser())
        tested = Path(cfg.paths.run_dir) / TEACHER_NODE
        if test:
            train_eval_run(teacher_config(cfg, tested), fit=False, test=True, checkpoint=str(path))
        return Teacher(path, file_sha256(path), False, tested if test else None,
                       teacher_supervision(teacher_config(cfg, tested), checkpoint))
    probe = teacher_config(cfg, Path(cfg.paths.run_dir) / TEACHER_NODE)
    settings = training_settings(probe)
    key = settings_key({"bundle_files": bundle_fingerprint(bundle_dir_of(cfg)), **settings})
    out_dir = Path(artifact_dir).expanduser() / f"{TEACHER_NODE}-{cfg.market.name}-{key}"
    teacher_cfg = teacher_config(cfg, out_dir)
    path = train_once(teacher_cfg, out_dir, settings, "the st_distill teacher (symbol tuning, label-free)", test=test)
    teacher = Teacher(path, file_sha256(path), True, out_dir if test else None, teacher_supervision(teacher_cfg, None))
    if test and not teacher.metrics():
        train_eval_run(teacher_config(cfg, out_dir / TEST_DIR), fit=False, test=True, checkpoint=str(path))
        teacher = Teacher(path, teacher.sha256, True, out_dir / TEST_DIR, teacher.supervision)
    return teacher


def load_teacher(teacher_cfg: DictConfig, checkpoint: Path) -> Any:
    """The teacher model with its checkpoint's (LoRA) weights, in eval mode."""
    model = build_model(teacher_cfg, build_datamodule(teacher_cfg))
    model.load_state_dict(read_checkpoint(checkpoint)["state_dict"])
    return model.eval()
