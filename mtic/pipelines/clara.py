"""`pipeline=lara | lara_pl | clara`: LLM in-context classification of sessions, and pseudo-labels -> HTC.

lara      the LLM labels the test sessions directly -> intent metrics -> results.json, predictions.jsonl
lara_pl   the LLM pseudo-labels unlabelled sessions (one ordering, no vote) -> train_test with those sessions
clara     the same with self-consistency (n orderings, agreement rule) -> train_test with the kept sessions

Stage artifacts are reused: LLM answers live in the answer cache; the pseudo-label records file lives under
`<cache_dir>/clara/<market>-<key>/` where the key hashes everything that determines the labels (bundle, split
and cap, llm, prompt, labels, retrieval, self-consistency), and it is resumable. A finished file is reused
without loading any model.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from mtic.clara.labeler import SCORE_METHOD, SYMBOL_METHOD, SessionLabeler
from mtic.clara.llm import LLMBackend, build_llm
from mtic.clara.prompts import load_prompt
from mtic.clara.pseudo_label import Outputs, pseudo_label, recover
from mtic.clara.retrieval import DemoIndex, Retriever
from mtic.clara.self_consistency import RULES
from mtic.config_schema import ConfigError
from mtic.data.bundle import Bundle, read_bundle
from mtic.data.craft import read_unlabeled_gold
from mtic.data.schema import Session
from mtic.data.taxonomy import Taxonomy
from mtic.eval.metrics import IntentMetrics
from mtic.eval.results import update_results, write_results
from mtic.pipelines.train_test import PREDICTIONS_FILE, bundle_dir_of
from mtic.pipelines.train_test import run as train_test_run

log = logging.getLogger("mtic")
NO_SC = "none"
ARTIFACT_DIR = "clara"
RECORDS_FILE = "pseudo_labels.jsonl"
LARA_RECORDS_FILE = "lara_records.jsonl"
EXACT_METHODS = ("exact", SCORE_METHOD, SYMBOL_METHOD)
PSEUDO_LABEL_REPORT = ("sessions", "kept", "kept_share", "precision", "session_statuses", "answer_statuses", "files",
                       "llm_stats")


def llm_summary(cfg: DictConfig) -> dict[str, Any]:
    """The LLM settings reported in summaries and results (no secrets: credentials in a URL are dropped)."""
    from mtic.clara.llm.openai_backend import public_url

    llm = _require(cfg, "llm")
    out = {k: llm.get(k) for k in ("backend", "model", "mode") if k in llm}
    if llm.get("base_url"):
        out["base_url"] = public_url(llm["base_url"])
    return out


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _require(cfg: DictConfig, group: str) -> dict[str, Any]:
    node = cfg.get(group)
    if not node:
        raise ConfigError(f"this pipeline needs the '{group}' config group: add {group}=... (see conf/{group}/)")
    return _plain(node)


def _sc(self_consistency: str, sc_orders: int) -> tuple[int, str]:
    """(number of orderings, agreement rule) from the pipeline settings."""
    if self_consistency == NO_SC:
        return 1, RULES[0]
    if self_consistency not in RULES:
        raise ConfigError(f"'pipeline.self_consistency' is {self_consistency!r}; "
                          f"allowed values: {NO_SC}, {', '.join(RULES)}")
    if sc_orders < 2:
        raise ConfigError("self-consistency needs 'pipeline.sc_orders' >= 2 (or self_consistency=none)")
    return int(sc_orders), self_consistency


# --------------------------------------------------------------------------- building blocks
def _labels(cfg: DictConfig, taxonomy: Taxonomy) -> Any:
    return instantiate(cfg.labels, taxonomy=taxonomy)


def build_retriever(bundle: Bundle, taxonomy: Taxonomy, retrieval: Mapping[str, Any], embedder: Any,
                    cache_dir: str) -> Retriever:
    """The demo index over the labelled single-turn queries and the session retriever (`pipeline.retrieval`)."""
    queries = bundle.require_single_turn(retrieval.get("single_turn_split") or None)
    index = DemoIndex.from_queries(queries, embedder.encode, doc_kind=retrieval.get("doc_kind", "query"))
    candidates = retrieval.get("candidates") or None
    proposer = None
    if candidates and candidates.get("checkpoint"):
        from mtic.clara.candidates import htc_candidates

        proposer = htc_candidates(candidates["checkpoint"], taxonomy, cache_dir, top_k=int(candidates.get("n", 3)))
    return Retriever(
        index, embedder.encode, k=int(retrieval.get("k", 5)), max_demos=int(retrieval.get("max_demos", 10)),
        history_weight=float(retrieval.get("history_weight", 1.0)), candidates=proposer,
        n_candidates=int((candidates or {}).get("n", 3)),
        demos_per_candidate=int((candidates or {}).get("demos_each", 2)),
    )


def build_labeler(cfg: DictConfig, bundle: Bundle, taxonomy: Taxonomy, retrieval: Mapping[str, Any],
                  matcher: Mapping[str, Any] | None, n_orders: int, rule: str, seed: int,
                  llm: LLMBackend | None = None, embedder: Any = None) -> SessionLabeler:
    """Embedder + demo index + retriever, prompt template, labels and matcher, LLM backend (cached).

    `llm` / `embedder` replace the configured ones (experiments/render_prompts.py renders without an LLM)."""
    from mtic.models.backbones import load_sentence_embedder

    labels = _labels(cfg, taxonomy)
    if embedder is None:
        embedder = load_sentence_embedder(retrieval["embedder"], cfg.paths.cache_dir)
    retriever = build_retriever(bundle, taxonomy, retrieval, embedder, cfg.paths.cache_dir)
    llm = llm if llm is not None else build_llm(**_require(cfg, "llm"))
    options = dict(matcher or {})
    embed = embedder if options.pop("embedding", False) else None  # the embedding step of the output matcher
    return SessionLabeler(retriever, load_prompt(cfg.prompt), labels.as_dict(), llm,
                          matcher=labels.matcher(embed=embed, **options), n_orders=n_orders, rule=rule, seed=seed)


class LazyLabeler:
    """Builds the labeller (models, embedder) on first use: a finished artifact never loads a model."""

    def __init__(self, build: Any) -> None:
        self._build, self.labeler = build, None

    def __call__(self, sessions: Sequence[Session]) -> list[dict[str, Any]]:
        if self.labeler is None:
            self.labeler = self._build()
        return self.labeler.label(sessions)

    def llm_stats(self) -> dict[str, int] | None:
        stats = getattr(getattr(self.labeler, "llm", None), "stats", None)
        return stats.snapshot() if stats is not None else None


LLM_RUNTIME_KEYS = ("cache", "cache_file", "cache_dir", "batch_size", "num_threads", "max_concurrency", "timeout_s",
                    "connect_timeout_s", "max_retries", "backoff_base_s", "backoff_max_s")


def artifact_key(cfg: DictConfig, bundle_dir: Path, parts: Mapping[str, Any]) -> str:
    """Hash of everything that determines the pseudo-labels: the bundle's files, the LLM settings (not the
    runtime ones such as batch size or retries), prompt, labels and `parts` (split, cap, retrieval, SC)."""
    llm = {k: v for k, v in _require(cfg, "llm").items() if k not in LLM_RUNTIME_KEYS}
    payload = {"bundle_files": _fingerprint(bundle_dir), "llm": llm, "prompt": _require(cfg, "prompt"),
               "labels": _plain(cfg.labels), **parts}
    blob = json.dumps(payload, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _fingerprint(bundle_dir: Path) -> str:
    """Hash of the bundle's files (intents, single-turn queries, sessions): edited data never reuses old labels."""
    digest = hashlib.sha256()
    for path in sorted(p for p in bundle_dir.rglob("*.jsonl") if p.is_file()):
        digest.update(str(path.relative_to(bundle_dir)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _gold(bundle: Bundle, sessions: Sequence[Session], taxonomy: Taxonomy) -> dict[str, str]:
    """Gold intents of the last turns: the sessions' own labels, else the bundle's unlabelled gold side file."""
    gold = {s.id: s.target for s in sessions if s.target is not None}
    if gold or bundle.root is None:
        return gold
    side = read_unlabeled_gold(bundle.root, set(taxonomy.ids)) or []
    wanted = {s.id for s in sessions}
    return {s.id: s.target for s in side if s.id in wanted and s.target is not None}


# --------------------------------------------------------------------------- pseudo-labelling stage
def pseudo_label_stage(cfg: DictConfig, self_consistency: str, sc_orders: int, sc_seed: int,
                       retrieval: Mapping[str, Any], unlabeled: Mapping[str, Any], batch_size: int,
                       matcher: Mapping[str, Any] | None, pseudo_labels: str | None, progress: bool,
                       artifact_dir: str) -> dict[str, Any]:
    """Pseudo-label (or resume, or reuse) and return the summary; its `files.sessions` is the training file."""
    n_orders, rule = _sc(self_consistency, sc_orders)
    bundle_dir = bundle_dir_of(cfg)
    bundle = read_bundle(bundle_dir)
    taxonomy = Taxonomy.from_intents(bundle.intents)
    sessions = bundle.require_sessions(unlabeled.get("split", "unlabeled"))
    cap = unlabeled.get("max_sessions")
    sessions = sessions[: int(cap)] if cap else sessions
    if pseudo_labels:
        out = Path(pseudo_labels)
    else:
        key = artifact_key(cfg, bundle_dir, {"split": unlabeled.get("split"), "max_sessions": cap, "n_orders": n_orders,
                                             "rule": rule, "sc_seed": sc_seed, "retrieval": dict(retrieval)})
        out = Path(artifact_dir).expanduser() / f"{cfg.market.name}-{key}" / RECORDS_FILE
    have = recover(out)
    log.info("pseudo-labels: %s (%d of %d sessions already labelled)", out, sum(s.id in have for s in sessions),
             len(sessions))
    labeler = LazyLabeler(lambda: build_labeler(cfg, bundle, taxonomy, retrieval, matcher, n_orders, rule, sc_seed))
    settings = {"prompt": cfg.prompt.name, "rule": rule if n_orders > 1 else NO_SC, "n_orders": n_orders,
                "llm": llm_summary(cfg), "retrieval": dict(retrieval), "bundle": str(bundle_dir),
                "split": unlabeled.get("split"), "max_sessions": cap}
    summary = pseudo_label(sessions, labeler, out, batch_size=batch_size, gold=_gold(bundle, sessions, taxonomy),
                           settings=settings, progress=progress)
    summary["llm_stats"] = labeler.llm_stats()
    return summary


def _default_artifact_dir(cfg: DictConfig) -> str:
    return str(Path(cfg.paths.cache_dir).expanduser() / ARTIFACT_DIR)


def _copy_summary(summary: dict[str, Any], run_dir: Path) -> None:
    """Copy the summary files next to the run's results (the records stay in the cache)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = Outputs.of(summary["files"]["records"])
    for src in (paths.summary_json, paths.summary_md):
        if src.is_file():
            shutil.copyfile(src, run_dir / src.name)


def pseudo_label_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The pseudo-label figures as metrics (`pseudo/...`), so `compare.py --metric` tables them (Table 4)."""
    metrics = {"pseudo/kept_share": summary.get("kept_share")}
    precision = summary.get("precision") or {}
    metrics["pseudo/precision_without_sc"] = precision.get("without_sc")
    metrics["pseudo/precision_with_sc"] = precision.get("with_sc")
    return {k: float(v) for k, v in metrics.items() if v is not None}


def _pseudo_then_train(cfg: DictConfig, fit: bool, test: bool, **stage: Any) -> dict[str, float]:
    """Pseudo-labels, then train_test on them; with fit=false and test=false only the pseudo-labels are made."""
    started = time.time()
    summary = pseudo_label_stage(cfg, **stage)
    run_dir = Path(cfg.paths.run_dir)
    _copy_summary(summary, run_dir)
    sessions_file = summary["files"]["sessions"]
    print(f"[mtic] pseudo-labels: kept {summary['kept']} of {summary['sessions']} sessions -> {sessions_file}")
    report = {"llm": llm_summary(cfg), "pseudo_labels": {k: summary.get(k) for k in PSEUDO_LABEL_REPORT}}
    if not (fit or test):
        write_results(run_dir, cfg, pseudo_label_metrics(summary), 0, started, extra=report)
        return {}
    if summary["kept"] == 0:
        raise RuntimeError("no session was pseudo-labelled (see the summary): nothing to train on")
    train_cfg = copy.deepcopy(cfg)
    with open_dict(train_cfg):
        train_cfg.data.train_sessions = sessions_file
    metrics = train_test_run(train_cfg, fit=fit, test=test)
    report["wall_time_s"] = round(time.time() - started, 2)  # pseudo-labelling included
    update_results(run_dir, report, pseudo_label_metrics(summary))
    return metrics


def lara_pl(cfg: DictConfig, self_consistency: str = NO_SC, sc_orders: int = 1, sc_seed: int = 0,
            retrieval: Mapping[str, Any] | None = None, unlabeled: Mapping[str, Any] | None = None,
            batch_size: int = 8, matcher: Mapping[str, Any] | None = None, pseudo_labels: str | None = None,
            artifact_dir: str | None = None, progress: bool = True, fit: bool = True,
            test: bool = True) -> dict[str, float]:
    """Pseudo-labels without self-consistency -> train and test the configured model."""
    return _pseudo_then_train(cfg, fit, test, self_consistency=self_consistency, sc_orders=sc_orders, sc_seed=sc_seed,
                              retrieval=_plain(retrieval) or {}, unlabeled=_plain(unlabeled) or {},
                              batch_size=batch_size, matcher=_plain(matcher), pseudo_labels=pseudo_labels,
                              progress=progress, artifact_dir=artifact_dir or _default_artifact_dir(cfg))


def clara(cfg: DictConfig, self_consistency: str = "unanimous", sc_orders: int = 3, sc_seed: int = 0,
          retrieval: Mapping[str, Any] | None = None, unlabeled: Mapping[str, Any] | None = None,
          batch_size: int = 8, matcher: Mapping[str, Any] | None = None, pseudo_labels: str | None = None,
          artifact_dir: str | None = None, progress: bool = True, fit: bool = True,
          test: bool = True) -> dict[str, float]:
    """Pseudo-labels with self-consistency -> train and test the configured model (the HTC)."""
    if self_consistency == NO_SC:
        raise ConfigError("pipeline=clara needs self-consistency (unanimous | majority); use pipeline=lara_pl without")
    return _pseudo_then_train(cfg, fit, test, self_consistency=self_consistency, sc_orders=sc_orders, sc_seed=sc_seed,
                              retrieval=_plain(retrieval) or {}, unlabeled=_plain(unlabeled) or {},
                              batch_size=batch_size, matcher=_plain(matcher), pseudo_labels=pseudo_labels,
                              progress=progress, artifact_dir=artifact_dir or _default_artifact_dir(cfg))


# --------------------------------------------------------------------------- LARA on the test sessions
def lara(cfg: DictConfig, self_consistency: str = NO_SC, sc_orders: int = 1, sc_seed: int = 0,
         retrieval: Mapping[str, Any] | None = None, split: str = "test", max_sessions: int | None = None,
         batch_size: int = 8, matcher: Mapping[str, Any] | None = None, progress: bool = True) -> dict[str, float]:
    """The LLM classifies the evaluation sessions; accuracy etc. go to results.json (resumable in the run dir)."""
    started = time.time()
    n_orders, rule = _sc(self_consistency, sc_orders)
    bundle_dir = bundle_dir_of(cfg)
    bundle = read_bundle(bundle_dir)
    taxonomy = Taxonomy.from_intents(bundle.intents)
    sessions = bundle.require_sessions(split)
    sessions = sessions[: int(max_sessions)] if max_sessions else sessions
    run_dir = Path(cfg.paths.run_dir)
    retrieval = _plain(retrieval) or {}
    labeler = LazyLabeler(
        lambda: build_labeler(cfg, bundle, taxonomy, retrieval, _plain(matcher), n_orders, rule, sc_seed))
    gold = {s.id: s.target for s in sessions if s.target is not None}
    settings = {"prompt": cfg.prompt.name, "rule": rule if n_orders > 1 else NO_SC, "n_orders": n_orders}
    summary = pseudo_label(sessions, labeler, run_dir / LARA_RECORDS_FILE, batch_size=batch_size, gold=gold,
                           settings=settings, progress=progress, desc="LARA")
    records = [json.loads(line) for line in (run_dir / LARA_RECORDS_FILE).read_text(encoding="utf-8").splitlines()]
    metrics_state = IntentMetrics(taxonomy)
    predictions, rows = [], []
    for record, session in zip(records, sessions):
        chosen = (record["intent"] or record["base"]) if n_orders > 1 else record["base"]  # no agreement: first order
        first = record["answers"][0]
        predictions.append(chosen)
        rows.append({"session_id": session.id, "target": session.target, "output": first.get("text"),
                     "intent": chosen, "method": first.get("method") or first.get("status"),
                     "status": record["status"]})
    exact = [r["method"] in EXACT_METHODS for r in rows]
    metrics_state.update(predictions, [s.target for s in sessions], exact)
    metrics = metrics_state.compute("test")
    with (run_dir / PREDICTIONS_FILE).open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    extra = {"decode": cfg.llm.get("mode"), "view": "retrieval_prompt", "history": None, "llm": llm_summary(cfg),
             "llm_answers": {"answer_statuses": summary["answer_statuses"],
                             "session_statuses": summary["session_statuses"],
                             "llm_stats": labeler.llm_stats(), "answered": sum(r["intent"] is not None for r in rows)}}
    path = write_results(run_dir, cfg, metrics, len(sessions), started, extra=extra)
    shown = ", ".join(f"{k.split('/', 1)[1]}={v:.4f}" for k, v in sorted(metrics.items()))
    print(f"[mtic] {cfg.experiment} market={cfg.market.name} n_test={len(sessions)}: {shown}\n[mtic] results: {path}")
    return metrics
