"""`pipeline=st_distill` (beyond the paper): symbol tuning distilled into the hierarchical classifier.

A label-free symbol-tuned teacher (mtic/pipelines/teacher.py: single-turn queries + sessions crafted from them,
selected on the single-turn valid queries; or `teacher_checkpoint`) labels the unlabelled chat logs by exact
scoring with a probability per intent (mtic/pipelines/teacher_labels.py); the sessions it is sure of
(the `keep_share` most confident, at least `min_confidence`, optionally only where CLARA's pseudo-label
agrees: `agree_with`) go through CLARA's stage
(mtic/pipelines/pseudo_training.py): split into pseudo_train / pseudo_valid, and the configured classifier (the
HTC, with the one HTC budget of experiment/_htc.yaml) trains, selects and tests on them. The aim is the teacher's
accuracy at the classifier's serving cost; results.json records both (`teacher.metrics`, metric `teacher/acc`).

Guarantee: no gold multi-turn label is read for training or selection (the run's label sources are checked
before any model loads; the teacher's are the single-turn labels and `crafted`). The gold side file of the
unlabelled sessions only scores the pseudo-labels (Table 4: precision of all answers, `without_sc`, and of the
kept ones, `with_sc`; kept share).

Artifacts: the teacher's answers are cached per (bundle files, teacher checkpoint SHA-256, decoding settings,
split, cap) under `<artifact_dir>/labels-<market>-<key>/teacher_labels.jsonl`, resumable (a killed run continues
where it stopped) and reused without loading the teacher; the selection is redone in every run, into the run
directory (`pseudo_labels.jsonl`, `.sessions.jsonl`, `.summary.json/.md`).
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mtic.clara.pseudo_label import Outputs, pseudo_label, read_records, write_outputs
from mtic.data.bundle import read_bundle
from mtic.data.schema import Session
from mtic.data.sources import bundle_fingerprint
from mtic.data.taxonomy import Taxonomy
from mtic.eval.results import update_results
from mtic.eval.supervision import PSEUDO_LABELS
from mtic.inputs.data_plan import require_data, require_split, require_test
from mtic.inputs.datamodule import config_supervision
from mtic.pipelines.cached_model import settings_key
from mtic.pipelines.pseudo_training import pseudo_label_gold, require_pseudo_sources, train_on_pseudo_labels
from mtic.pipelines.teacher import (
    TEACHER_NODE,
    Teacher,
    ensure_teacher,
    inference_settings,
    load_teacher,
    teacher_config,
    teacher_supervision,
)
from mtic.pipelines.teacher_labels import (
    TeacherLabeler,
    check_keep_share,
    check_min_confidence,
    read_agreement,
    select,
)
from mtic.pipelines.train_eval import bundle_dir_of

ANSWERS_FILE = "teacher_labels.jsonl"
RECORDS_FILE = "pseudo_labels.jsonl"
TEACHER_METRIC_PREFIX = "teacher/"


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def label_with_teacher(cfg: DictConfig, teacher: Teacher, sessions: Sequence[Session], gold: Mapping[str, str],
                       settings: Mapping[str, Any], artifacts: Path, batch_size: int, progress: bool) -> Path:
    """The teacher's answer records for `sessions` (cached per bundle files, checkpoint, decoding settings, split and
    cap; resumed or reused as is, in which case the teacher is never loaded); returns the answers file."""
    run_dir = Path(cfg.paths.run_dir)
    probe = teacher_config(cfg, run_dir / TEACHER_NODE)
    key = settings_key({"bundle_files": bundle_fingerprint(bundle_dir_of(cfg)), "teacher_sha256": teacher.sha256,
                        "teacher": inference_settings(probe), "split": settings["split"],
                        "max_sessions": settings["max_sessions"]})
    answers = artifacts / f"labels-{cfg.market.name}-{key}" / ANSWERS_FILE
    labeler = TeacherLabeler(lambda: load_teacher(probe, teacher.checkpoint))
    pseudo_label(sessions, labeler, answers, batch_size=batch_size, gold=gold, settings=settings, progress=progress,
                 desc="teacher labelling")
    labeler.close()
    return answers


def st_distill(cfg: DictConfig, teacher_checkpoint: str | None = None, teacher_test: bool = True,
               unlabeled: Mapping[str, Any] | None = None, min_confidence: float = 0.0,
               keep_share: float | None = 0.5, agree_with: str | None = None,
               batch_size: int = 8, pseudo_valid: Mapping[str, Any] | None = None, artifact_dir: str | None = None,
               progress: bool = True, fit: bool = True, test: bool = True) -> dict[str, float]:
    """Teacher (trained or given) -> its sure pseudo-labels -> train, select and test the configured model."""
    started = time.time()
    require_pseudo_sources(cfg, "st_distill")
    threshold = check_min_confidence(min_confidence)
    share = check_keep_share(keep_share)
    unlabeled = _plain(unlabeled) or {}
    split, cap = unlabeled.get("split", "unlabeled"), unlabeled.get("max_sessions")
    where = f"experiment '{cfg.experiment}'"
    bundle_dir = bundle_dir_of(cfg)
    bundle = read_bundle(bundle_dir)
    require_split(bundle, split, f"{where} has its teacher label the chat logs of this file, but it is missing: add "
                                 "it (e.g. mtic data import ... --logs chats.jsonl), or pipeline.unlabeled.split=<a "
                                 "sessions split the bundle has>")
    if test or teacher_test:
        require_test(bundle, where, "pipeline.test=false pipeline.teacher_test=false to train only")
    run_dir = Path(cfg.paths.run_dir)
    probe = teacher_config(cfg, run_dir / TEACHER_NODE)
    if not teacher_checkpoint:  # the teacher's training data (single-turn queries), before any model loads
        require_data(bundle, probe.data, f"{where}'s teacher", fit=True, test=False, test_without=None)
    used = teacher_supervision(probe, teacher_checkpoint)
    if agree_with:
        used.add(train=[PSEUDO_LABELS])  # CLARA's
    used.merged(config_supervision(cfg.data)).enforce(bool(cfg.get("label_free", False)), where=where)
    artifacts = Path(artifact_dir or Path(cfg.paths.cache_dir) / "st_distill").expanduser()
    teacher = ensure_teacher(cfg, teacher_checkpoint, teacher_test, artifacts)

    taxonomy = Taxonomy.from_intents(bundle.intents)
    sessions = bundle.require_sessions(split)
    sessions = sessions[: int(cap)] if cap else sessions
    gold, scored_by = pseudo_label_gold(bundle, sessions, split, taxonomy)
    agreement = read_agreement(agree_with, [s.id for s in sessions]) if agree_with else None
    settings = {"prompt": f"st teacher ({probe.backbone.name})", "rule": None, "n_orders": 1,
                "teacher_sha256": teacher.sha256, "bundle": str(bundle_dir), "split": split, "max_sessions": cap}
    answers = label_with_teacher(cfg, teacher, sessions, gold, settings, artifacts, batch_size, progress)
    rule = " and ".join([f"confidence >= {threshold:g}"] + ([f"the {share:g} most confident"] if share else [])
                        + ([f"CLARA agrees ({agree_with})"] if agree_with else []))
    selected = select(read_records(answers), threshold, agreement, share)
    summary = write_outputs(Outputs.of(run_dir / RECORDS_FILE), selected, gold, {**settings, "rule": rule},
                            filtered=True)
    used.add(evaluation=scored_by)  # scoring the pseudo-labels (Table 4), never training on them
    report = {"teacher": teacher.record(), "min_confidence": threshold, "keep_share": share, "agree_with": agree_with,
              "teacher_answers": str(answers)}
    metrics = train_on_pseudo_labels(cfg, summary, used, report, fit, test, _plain(pseudo_valid) or {}, started)
    update_results(run_dir, {}, {TEACHER_METRIC_PREFIX + k.split("/", 1)[1]: v for k, v in teacher.metrics().items()})
    return metrics
